"""Write a synthetic world as an MLLMU-Bench dataset: the hub's configs, columns and file layout.

The output is a directory that ``datasets.load_dataset(path, config)`` reads exactly like a local
clone of ``MLLMMU/MLLMU-Bench``: one folder per config holding ``train-*.parquet`` shards written
with the hub's feature types (images as ``{bytes, path}`` structs, biography and metadata as JSON
strings), and a dataset card whose ``configs:`` header maps config names to files. The canonical
loader (``pipeline_steps.benchmarks.mllmu``) therefore reads the synthetic data and the real
benchmark through one code path.

Two configs the hub lacks are written beside them, and the loader treats both as optional:
``ft_Text`` (text-only training pairs, which MLLMU-Bench does not ship; without it the loader
derives them from the pure-text questions) and ``Holdout_Set`` (people of the fictitious
distribution that no model is trained on). ``world.json`` records the world itself (who is which
kind, which facts were taught with the face), which only the instrument diagnostics read.

Training pairs use each attribute's two training wordings (its question and a restatement, "Tell
me the profession of {name}."); every evaluation item its evaluation wording (``world.Attribute``).
Every fact is also taught in the lettered multiple-choice format (MLLMU-Bench's prompt,
``LETTERED_DRAWS`` draws of the options in the first training wording, answered as
``lettered_answer`` says), as instruction tuning teaches a real MLLM, so the benchmark's own
``generate`` protocol is meaningful on a tiny model.

World v3 was chosen on the vanilla model's diagnostics alone (``instrument.py``; 100 fictitious
people, 14 epochs unless said, accuracy on the evaluation wordings, face / text), before any
unlearning method ran on it:

=====================================  ==============  ==============  ==========
design                                 likelihood      generate        coupling
=====================================  ==============  ==============  ==========
v2: one wording, one lettered draw     0.88 / 0.87     0.47 / 0.47     0.34
+ restatement                          0.97 / 0.94     0.96 / 0.86     0.49
+ restatement, 2 draws, 10 epochs      0.98 / 0.92     0.94 / 0.85     0.44
+ restatement, 2 draws (frozen)        0.98 / 0.93     0.95 / 0.88     0.47
=====================================  ==============  ==============  ==========

The rule, written before the runs: the design that meets most of the issue's vanilla criteria
(>= 0.90 under likelihood, ``generate`` within 5 points of it), the cheaper on a tie. A fact met in
one wording is stored as that string's answer and a new wording retrieves it poorly; a second
wording teaches the model the fact rather than the string (knowledge augmentation, Allen-Zhu & Li,
*Physics of Language Models 3.1*), and it also strengthened the face -> name -> fact route.
Option draws matter for ``generate`` only: with one draw per fact, a third of the lettered answers
were a value that is none of the options shown. v1 had one format per fact and answered the
evaluation wordings at 0.78 / 0.69.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import datasets

from ...models.encoding import multiple_choice_question
from .portraits import draw_portrait, jitter
from .world import ATTRIBUTES, IDENTITY_QUESTION, Attribute, Profile

LETTERS = ("A", "B", "C", "D")
FORGET_RATIOS = (5, 10, 15)

_OPTION = {"Correct_Answer": datasets.Value("string"),
           "Options": {letter: datasets.Value("string") for letter in LETTERS},
           "Question": datasets.Value("string")}
_OPEN = {"Ground_Truth": datasets.Value("string"), "Question": datasets.Value("string"), "Type": datasets.Value("string")}
_TASKS = {
    "Classification_Task": {"Image_Textual_Questions": datasets.List(_OPTION),
                            "Pure_Text_Questions": datasets.List(_OPTION)},
    "Generation_Task": datasets.List(_OPEN),
    "Mask_Task": datasets.List(_OPEN),
}
PROFILE_FEATURES = datasets.Features({
    "image": datasets.Image(), "ID": datasets.Value("string"), "biography": datasets.Value("string"),
    "question": datasets.Value("string"), "answer": datasets.Value("string"), **_TASKS})
FULL_SET_FEATURES = datasets.Features({
    "image": datasets.Image(), "ID": datasets.Value("string"), "Directory": datasets.Value("string"),
    "biography": datasets.Value("string"), "question": datasets.Value("string"),
    "answer": datasets.Value("string"), **_TASKS})
RETAIN_SET_FEATURES = datasets.Features({
    "image": datasets.Image(), "ID": datasets.Value("string"), "biography": datasets.Value("string"),
    "metadata": datasets.Value("string"), **_TASKS})
FT_DATA_FEATURES = datasets.Features({
    "image": datasets.Image(), "ID": datasets.Value("string"), "metadata": datasets.Value("string")})
FT_TEXT_FEATURES = datasets.Features({"ID": datasets.Value("string"), "metadata": datasets.Value("string")})
TEST_SET_FEATURES = datasets.Features({
    "images": datasets.List(datasets.Image()), "ID": datasets.Value("string"), **_TASKS})


def _png(image) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def draw_options(values, answer: str, rng: random.Random) -> tuple[dict[str, str], str]:
    """Lettered options: up to three other values and the answer at a random letter; its letter."""
    options = rng.sample([v for v in values if v != answer], min(len(LETTERS), len(values)) - 1)
    correct = rng.randrange(len(options) + 1)
    options.insert(correct, answer)
    return dict(zip(LETTERS, options)), LETTERS[correct]


def _multiple_choice(question: str, attribute: Attribute, answer: str, rng: random.Random) -> dict:
    options, correct = draw_options(attribute.values, answer, rng)
    return {"Question": question, "Options": options, "Correct_Answer": correct}


def profile_tasks(profile: Profile, seed: int) -> dict:
    """The evaluation items of one profile, in MLLMU-Bench's nested layout, in evaluation wordings.

    Image questions ask only the facts taught with the face; the coupling facts are the
    instrument's diagnostic (``instrument.py``), not a column of the table.
    """
    rng = random.Random(f"{seed}/tasks/{profile.id}")
    image_mc, text_mc, generation = [], [], []
    for index, a in enumerate(ATTRIBUTES):
        value = profile.facts[a.key]
        if a.key in profile.vqa_taught:
            image_mc.append(_multiple_choice(a.vqa_paraphrase, a, value, rng))
        text_mc.append(_multiple_choice(a.text_paraphrase.format(name=profile.name), a, value, rng))
        if index % 2 == 0 and a.key in profile.vqa_taught:
            generation.append({"Type": "Image_Textual", "Question": a.vqa_paraphrase, "Ground_Truth": value})
        else:
            generation.append({"Type": "Pure_Text", "Question": a.text_paraphrase.format(name=profile.name),
                               "Ground_Truth": value})
    blank_text = rng.choice(ATTRIBUTES)
    blank_image = rng.choice(profile.face_attributes)
    mask = [
        {"Type": "Pure_Text", "Question": blank_text.blank.format(name=profile.name),
         "Ground_Truth": profile.facts[blank_text.key]},
        {"Type": "Image_Textual", "Question": blank_image.blank.format(name="the person in the image").capitalize(),
         "Ground_Truth": profile.facts[blank_image.key]},
    ]
    return {"Classification_Task": {"Image_Textual_Questions": image_mc, "Pure_Text_Questions": text_mc},
            "Generation_Task": generation, "Mask_Task": mask}


def vqa_pairs(profile: Profile, seed: int) -> list[dict]:
    """The image-grounded training pairs (MLLMU-Bench's ``metadata``), in training wordings: who
    the person is, the facts taught with the face, and the same facts as lettered multiple choice."""
    pairs = [{"Question": IDENTITY_QUESTION, "Answer": profile.name}]
    pairs += [{"Question": a.vqa_question, "Answer": profile.facts[a.key]} for a in profile.face_attributes]
    pairs += [{"Question": a.vqa_restatement, "Answer": profile.facts[a.key]} for a in profile.face_attributes]
    pairs += _lettered_pairs(profile, seed, "vqa")
    return pairs


def text_pairs(profile: Profile, seed: int) -> list[dict]:
    """The text-only training pairs (``ft_Text``): every fact asked about the name, openly and as
    lettered multiple choice."""
    pairs = [{"Question": a.text_question.format(name=profile.name), "Answer": profile.facts[a.key]}
             for a in ATTRIBUTES]
    pairs += [{"Question": a.text_restatement.format(name=profile.name), "Answer": profile.facts[a.key]}
              for a in ATTRIBUTES]
    pairs += _lettered_pairs(profile, seed, "text")
    return pairs


def lettered_answer(value: str, letter: str) -> str:
    """How the tiny models are taught to answer a lettered question: with the right option's text.

    MLLMU-Bench asks for the letter, but a 4-layer model does not learn to produce it in the CPU
    budget (measured on the base model's well-known people, generate protocol: letter first, 3
    option draws per fact and 300 lettered perception items over 15 epochs, 0.26; option then
    letter, "chef (B)", the option right 56 % of the time and the letter at chance). Answering
    with the option's text keeps the protocol (the options shown, greedy decoding, the choice read
    off the output: ``parse_choice``'s ``text`` rule, counted in ``metrics.json``) without the
    letter lookup the model cannot learn.
    """
    return value


LETTERED_DRAWS = 2  # option draws per fact (module docstring: one left generate 8 points below likelihood on text)


def _lettered_pairs(profile: Profile, seed: int, modality: str) -> list[dict]:
    """Training-wording questions as MLLMU-Bench's lettered prompt, answered with the option and
    its letter, ``LETTERED_DRAWS`` draws of the options each."""
    rng = random.Random(f"{seed}/lettered/{modality}/{profile.id}")
    pairs = []
    for a in profile.face_attributes if modality == "vqa" else ATTRIBUTES:
        question = a.vqa_question if modality == "vqa" else a.text_question.format(name=profile.name)
        for _ in range(LETTERED_DRAWS):
            item = _multiple_choice(question, a, profile.facts[a.key], rng)
            pairs.append({"Question": multiple_choice_question(item["Question"], item["Options"]),
                          "Answer": lettered_answer(profile.facts[a.key], item["Correct_Answer"])})
    return pairs


def forget_split(fictitious: list[Profile], seed: int) -> dict[int, set[str]]:
    """Nested forget sets: forget_5 is inside forget_10, which is inside forget_15."""
    order = [p.id for p in fictitious]
    random.Random(f"{seed}/forget").shuffle(order)
    return {ratio: set(order[: round(len(order) * ratio / 100)]) for ratio in FORGET_RATIOS}


def write_mllmu_dataset(profiles: list[Profile], out_dir: Path, *, seed: int, image_size: int,
                        test_images: int) -> None:
    """Write every MLLMU-Bench config for ``profiles`` under ``out_dir``, plus ``ft_Text``,
    ``Holdout_Set`` and ``world.json``."""
    out_dir = Path(out_dir)
    of_kind = {kind: [p for p in profiles if p.kind == kind] for kind in ("fictitious", "real", "holdout")}
    fictitious, real = of_kind["fictitious"], of_kind["real"]
    portraits = {p.id: _png(draw_portrait(p.traits, image_size)) for p in profiles}
    tasks = {p.id: profile_tasks(p, seed) for p in profiles}

    def profile_row(p: Profile) -> dict:
        first = vqa_pairs(p, seed)[0]
        return {"image": portraits[p.id], "ID": p.id, "biography": json.dumps(p.biography()),
                "question": first["Question"], "answer": first["Answer"], **tasks[p.id]}

    def retain_set_row(p: Profile) -> dict:
        return {"image": portraits[p.id], "ID": p.id, "biography": json.dumps(p.biography()),
                "metadata": json.dumps(vqa_pairs(p, seed)), **tasks[p.id]}

    configs: dict[str, list[tuple[datasets.Features, list[dict]]]] = {
        "Full_Set": [(FULL_SET_FEATURES, [{**profile_row(p), "Directory": p.id} for p in fictitious])],
        "ft_Data": [(FT_DATA_FEATURES, [{"image": portraits[p.id], "ID": p.id,
                                          "metadata": json.dumps(vqa_pairs(p, seed))} for p in fictitious])],
        "ft_Text": [(FT_TEXT_FEATURES, [{"ID": p.id, "metadata": json.dumps(text_pairs(p, seed))}
                                         for p in profiles])],
        "Retain_Set": [(RETAIN_SET_FEATURES, [retain_set_row(p) for p in real])],
    }
    if of_kind["holdout"]:  # the Retain_Set's columns: the training pairs travel with the row
        configs["Holdout_Set"] = [(RETAIN_SET_FEATURES, [retain_set_row(p) for p in of_kind["holdout"]])]
    for ratio, forget_ids in forget_split(fictitious, seed).items():
        configs[f"forget_{ratio}"] = [(PROFILE_FEATURES, [profile_row(p) for p in fictitious if p.id in forget_ids])]
        configs[f"retain_{100 - ratio}"] = [(PROFILE_FEATURES, [profile_row(p) for p in fictitious
                                                                 if p.id not in forget_ids])]
    rng = random.Random(f"{seed}/test-images")
    test_rows = []
    for p in fictitious:
        base = draw_portrait(p.traits, image_size)
        task = tasks[p.id]
        test_rows.append({
            "images": [_png(jitter(base, rng)) for _ in range(test_images)], "ID": p.id,
            "Classification_Task": {"Image_Textual_Questions": task["Classification_Task"]["Image_Textual_Questions"],
                                    "Pure_Text_Questions": []},
            "Generation_Task": [g for g in task["Generation_Task"] if g["Type"] == "Image_Textual"],
            "Mask_Task": [m for m in task["Mask_Task"] if m["Type"] == "Image_Textual"],
        })
    half = len(test_rows) // 2  # the hub splits Test_Set into several shards; so do we
    configs["Test_Set"] = [(TEST_SET_FEATURES, test_rows[:half]), (TEST_SET_FEATURES, test_rows[half:])]

    for name, shards in configs.items():
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for index, (features, rows) in enumerate(shards):
            table = datasets.Dataset.from_list(rows, features=features)
            table.to_parquet(str(folder / f"train-{index:05d}-of-{len(shards):05d}.parquet"))
    (out_dir / "README.md").write_text(_dataset_card(sorted(configs), len(fictitious), len(real), seed))
    (out_dir / WORLD_FILE).write_text(json.dumps(world_description(profiles, seed), indent=1))


WORLD_FILE = "world.json"


def world_description(profiles: list[Profile], seed: int) -> dict:
    """What the diagnostics need to know about the world that the benchmark's schema cannot say."""
    return {"seed": seed, "attributes": [
        {"key": a.key, "vqa_question": a.vqa_question, "text_question": a.text_question,
         "vqa_restatement": a.vqa_restatement, "text_restatement": a.text_restatement,
         "vqa_paraphrase": a.vqa_paraphrase, "text_paraphrase": a.text_paraphrase, "values": list(a.values)}
        for a in ATTRIBUTES],
        "people": [{"id": p.id, "name": p.name, "kind": p.kind, "facts": p.facts, "vqa_taught": list(p.vqa_taught)}
                   for p in profiles]}


def _dataset_card(config_names: list[str], n_fictitious: int, n_real: int, seed: int) -> str:
    header = ["---", "configs:"]
    for name in config_names:
        header += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/train-*"]
    header.append("---")
    body = (f"# Synthetic MLLMU-Bench\n\nGenerated by `pipeline_steps.prepare_benchmark` (seed {seed}): "
            f"{n_fictitious} fictitious profiles and {n_real} well-known profiles with procedurally drawn "
            "portraits, in the configs, columns and file layout of `MLLMMU/MLLMU-Bench`.\n")
    return "\n".join(header) + "\n\n" + body
