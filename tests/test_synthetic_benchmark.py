"""The synthetic benchmark: MLLMU-Bench's exact layout, and a world with no shortcuts."""

import io
import json
import random

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from pipeline_steps.benchmarks.synthetic.portraits import draw_portrait, jitter
from pipeline_steps.benchmarks.records import read_split
from pipeline_steps.benchmarks.synthetic.mllmu_writer import LETTERED_DRAWS
from pipeline_steps.benchmarks.synthetic.world import (ATTRIBUTES, IDENTITY_QUESTION, MIN_TRAIT_DISTANCE,
                                                       VQA_TAUGHT_ATTRIBUTES, sample_world, trait_distance)
from pipeline_steps.evaluation.protocols import exact_option
from pipeline_steps.evaluation.scoring import parse_choice
from pipeline_steps.models.encoding import MULTIPLE_CHOICE_INSTRUCTION

from helpers import REPO

CLASSIFICATION = {"Image_Textual_Questions", "Pure_Text_Questions"}
# Columns of the hub dataset's configs (dataset card of MLLMMU/MLLMU-Bench).
HUB_COLUMNS = {
    "Full_Set": {"image", "ID", "Directory", "biography", "question", "answer", "Classification_Task",
                 "Generation_Task", "Mask_Task"},
    "forget_5": {"image", "ID", "biography", "question", "answer", "Classification_Task", "Generation_Task",
                 "Mask_Task"},
    "retain_95": {"image", "ID", "biography", "question", "answer", "Classification_Task", "Generation_Task",
                  "Mask_Task"},
    "ft_Data": {"image", "ID", "metadata"},
    "Test_Set": {"images", "ID", "Classification_Task", "Generation_Task", "Mask_Task"},
    # Not on the hub (the loader treats both as optional):
    "ft_Text": {"ID", "metadata"},
    "Holdout_Set": {"image", "ID", "biography", "metadata", "Classification_Task", "Generation_Task", "Mask_Task"},
}


def load(raw, config):
    return datasets.load_dataset(str(raw), config, split="train")


def test_every_hub_config_is_there_and_loads_by_name(raw_benchmark):
    expected = {"Full_Set", "Retain_Set", "Test_Set", "ft_Data", "forget_5", "forget_10", "forget_15",
                "retain_95", "retain_90", "retain_85", "ft_Text", "Holdout_Set"}
    assert {p.name for p in raw_benchmark.iterdir() if p.is_dir()} == expected
    card = yaml.safe_load((raw_benchmark / "README.md").read_text().split("---")[1])
    assert {c["config_name"] for c in card["configs"]} == expected
    assert len(load(raw_benchmark, "Full_Set")) == 40
    assert len(load(raw_benchmark, "Retain_Set")) == 8
    assert len(list((raw_benchmark / "Test_Set").glob("train-*.parquet"))) == 2  # sharded, as on the hub


@pytest.mark.parametrize("config", sorted(HUB_COLUMNS))
def test_columns_and_types_match_the_hub(raw_benchmark, config):
    table = load(raw_benchmark, config)
    assert set(table.column_names) == HUB_COLUMNS[config]
    if "image" in table.features:
        assert isinstance(table.features["image"], datasets.Image)
        raw = pq.read_table(next((raw_benchmark / config).glob("*.parquet"))).column("image")[0].as_py()
        assert set(raw) == {"bytes", "path"}  # the {bytes, path} struct the official code reads
        assert Image.open(io.BytesIO(raw["bytes"])).size == (32, 32)
    if "Classification_Task" in table.features:
        row = table[0]
        assert set(row["Classification_Task"]) == CLASSIFICATION
        for item in row["Classification_Task"]["Image_Textual_Questions"]:
            assert set(item) == {"Question", "Options", "Correct_Answer"}
            assert set(item["Options"]) == {"A", "B", "C", "D"}
            assert item["Correct_Answer"] in item["Options"]
            assert len(set(item["Options"].values())) == 4
        for item in row["Generation_Task"] + row["Mask_Task"]:
            assert set(item) == {"Type", "Question", "Ground_Truth"}
            assert item["Type"] in ("Image_Textual", "Pure_Text")
    for column in ("biography", "metadata"):
        if column in table.features:
            json.loads(table[0][column])  # JSON inside a string column, as on the hub


def test_questions_are_asked_both_ways_in_evaluation_wordings(raw_benchmark):
    row = load(raw_benchmark, "Full_Set")[0]
    name = json.loads(row["biography"])["Name"]
    image_questions = [q["Question"] for q in row["Classification_Task"]["Image_Textual_Questions"]]
    text_questions = [q["Question"] for q in row["Classification_Task"]["Pure_Text_Questions"]]
    assert set(image_questions) <= {a.vqa_paraphrase for a in ATTRIBUTES}
    assert f"Which profession is {name} in?" in text_questions
    assert all(name not in q for q in image_questions)
    assert all(name in q for q in text_questions)
    assert len(image_questions) == VQA_TAUGHT_ATTRIBUTES  # the coupling facts are not a column
    assert len(text_questions) == len(ATTRIBUTES)


def test_no_evaluated_question_is_a_training_string(raw_benchmark, benchmark):
    """Every multiple-choice, generation and blank item differs from every training question."""
    for split in ("full", "real_world", "test", "holdout"):
        for record in read_split(benchmark, split):
            trained = {pair.question for pair in record.train}
            trained |= {q.split("\n")[0] for q in trained}  # a lettered pair's question line
            asked = [item.question for item in record.multiple_choice + record.generation + record.fill_blank]
            assert asked and not trained & set(asked), (split, record.id)


def test_the_face_is_taught_with_the_name_and_some_facts_by_name_only(benchmark):
    """The identity route: every portrait is taught with its name; only the face facts are also
    taught with it; every fact is taught by name."""
    for record in read_split(benchmark, "full"):
        open_pairs = [pair for pair in record.train if not pair.question.endswith(MULTIPLE_CHOICE_INSTRUCTION)]
        vqa = {pair.question: pair.answer for pair in open_pairs if pair.modality == "vqa"}
        text = [pair for pair in open_pairs if pair.modality == "text"]
        assert vqa.pop(IDENTITY_QUESTION) == record.name
        face_facts = [a for a in ATTRIBUTES if a.vqa_question in vqa]
        assert len(face_facts) == VQA_TAUGHT_ATTRIBUTES  # each in both training wordings, nothing else
        assert set(vqa) == {q for a in face_facts for q in (a.vqa_question, a.vqa_restatement)}
        assert {pair.question for pair in text} == {q.format(name=record.name) for a in ATTRIBUTES
                                                    for q in (a.text_question, a.text_restatement)}
        assert all(record.name not in answer for answer in vqa.values())


def test_every_fact_is_also_taught_in_the_lettered_format(benchmark):
    """Each taught fact has a lettered pair (MLLMU-Bench's prompt, training wording) answered with
    the right option's text, which the synthetic protocol's strict parse (and the lenient one)
    reads back as that option."""
    for split in ("full", "real_world", "holdout"):
        record = read_split(benchmark, split)[0]
        open_pairs = [pair for pair in record.train if not pair.question.endswith(MULTIPLE_CHOICE_INSTRUCTION)]
        lettered = [pair for pair in record.train if pair.question.endswith(MULTIPLE_CHOICE_INSTRUCTION)]
        facts = (len(open_pairs) - 1) // 2  # every fact but the identity, in two training wordings
        assert len(lettered) == facts * LETTERED_DRAWS
        letters = set()
        for pair in lettered:
            options = dict(line.split(": ", 1) for line in pair.question.split("\n")[1:-1])
            letter, rule = parse_choice(pair.answer, options)
            assert rule == "text" and options[letter] == pair.answer
            assert exact_option(pair.answer, options) == letter
            letters.add(letter)
        assert len(letters) > 1


def test_no_two_attributes_share_an_evaluation_frame():
    """World v3 asked pet and profession in one frame ("Which _ does {name} have?"), and vanilla
    answered both by name at 0.71-0.74 against >= 0.93 elsewhere: with the noun the only cue, the
    wording retrieved the fact poorly. Every evaluation wording, its attribute's noun blanked, is
    now a frame of its own."""
    def frame(attribute, wording):
        words = wording.lower().rstrip("?").split()
        return " ".join("_" if word in attribute.noun.split() else word for word in words)

    for wording in ("vqa_paraphrase", "text_paraphrase"):
        frames = [frame(a, getattr(a, wording)) for a in ATTRIBUTES]
        assert len(set(frames)) == len(frames), sorted(frames)


def test_holdout_people_are_never_in_a_training_split(raw_benchmark, benchmark):
    holdout = read_split(benchmark, "holdout")
    assert len(holdout) == 6 and all(r.train for r in holdout)
    names = {r.name for r in holdout}
    for split in ("full", "real_world", "test", "forget_10", "retain_90"):
        records = read_split(benchmark, split)
        assert not names & {r.name for r in records}
        assert not {r.id for r in holdout} & {r.id for r in records}
    world = json.loads((raw_benchmark / "world.json").read_text())
    assert sorted(p["id"] for p in world["people"] if p["kind"] == "holdout") == sorted(r.id for r in holdout)


def test_coupling_facts_are_balanced_over_attributes():
    people = sample_world(seed=5, n_fictitious=100, n_real=4, n_holdout=10)
    counts = {a.key: 0 for a in ATTRIBUTES}
    for person in people:
        if person.kind == "real":
            assert len(person.vqa_taught) == len(ATTRIBUTES)
            continue
        assert len(person.vqa_taught) == VQA_TAUGHT_ATTRIBUTES
        for a in person.coupling_attributes:
            counts[a.key] += 1
    assert max(counts.values()) - min(counts.values()) <= 2


def test_forget_sets_partition_the_profiles_and_nest(raw_benchmark):
    full = set(load(raw_benchmark, "Full_Set")["ID"])
    forgets = {}
    for ratio in (5, 10, 15):
        forget = set(load(raw_benchmark, f"forget_{ratio}")["ID"])
        retain = set(load(raw_benchmark, f"retain_{100 - ratio}")["ID"])
        assert not forget & retain
        assert forget | retain == full
        assert len(forget) == round(len(full) * ratio / 100)
        forgets[ratio] = forget
    assert forgets[5] < forgets[10] < forgets[15]


def test_test_set_images_are_new_views_of_the_training_portrait(raw_benchmark):
    portraits = {row["ID"]: row["image"] for row in load(raw_benchmark, "Full_Set")}
    for row in load(raw_benchmark, "Test_Set").select(range(5)):
        assert len(row["images"]) == 2
        for image in row["images"]:
            assert image.tobytes() != portraits[row["ID"]].tobytes()


def test_world_has_unique_names_and_distinct_faces():
    people = sample_world(seed=1, n_fictitious=200, n_real=20)
    assert len({p.name for p in people}) == len(people)
    for i, a in enumerate(people):
        for b in people[i + 1:]:
            assert trait_distance(a.traits, b.traits) >= MIN_TRAIT_DISTANCE


def test_facts_are_drawn_independently_of_faces():
    """No visible trait predicts an attribute: each trait value co-occurs with many professions."""
    people = sample_world(seed=2, n_fictitious=300, n_real=0)
    by_hair = {}
    for p in people:
        by_hair.setdefault(p.traits["hair_color"], set()).add(p.facts["profession"])
    assert all(len(professions) >= 8 for professions in by_hair.values())


def test_no_attribute_predicts_another():
    """The facts of a person are drawn independently: knowing one attribute does not narrow down
    another (every profession co-occurs with many hometowns, and so on for every pair)."""
    people = sample_world(seed=6, n_fictitious=600, n_real=0)
    for first in ATTRIBUTES:
        for second in ATTRIBUTES:
            if first is second:
                continue
            seen: dict[str, set[str]] = {}
            for p in people:
                seen.setdefault(p.facts[first.key], set()).add(p.facts[second.key])
            assert min(len(values) for values in seen.values()) >= 8, (first.key, second.key)


def test_world_is_reproducible_from_its_seed():
    assert sample_world(4, 30, 5) == sample_world(4, 30, 5)
    assert sample_world(4, 30, 5) != sample_world(5, 30, 5)


def test_jitter_keeps_size_and_changes_pixels():
    face = draw_portrait(sample_world(0, 1, 0)[0].traits, 64)
    moved = jitter(face, random.Random(0))
    assert moved.size == face.size and moved.tobytes() != face.tobytes()
    assert jitter(face, random.Random(0), strength=0).tobytes() == face.tobytes()


def test_default_config_gives_every_column_at_least_80_questions():
    """Every Table 1 column of the embedded default rests on >= 80 questions (its 95 % interval is
    reported beside it)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for experiment in config["experiments"]:
        synthetic = config["benchmarks"][experiment["benchmark"]]["synthetic"]
        smallest_forget = round(synthetic["fictitious_profiles"] * min(experiment["forget_ratios"]) / 100)
        assert smallest_forget * VQA_TAUGHT_ATTRIBUTES >= 80
        assert synthetic["real_profiles"] * VQA_TAUGHT_ATTRIBUTES >= 80
        assert synthetic["holdout_profiles"] >= smallest_forget  # as many non-members as members
