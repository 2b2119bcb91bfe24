"""Reading CLEAR-schema data into canonical records (the same code reads ``therem/CLEAR``), and
scoring a model on it: the paper's six CLEAR columns."""

import io
import json
from collections import Counter

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clear_fixture import (AUTHORS, CELEBRITIES, FORGET_AUTHORS, RETAIN_PERTURBED, clear_configs, image_of, png,
                           questions, write_clear)
from pipeline_steps.benchmarks.clear import CAPTION_PROMPTS, NAME_QUESTION, read_clear
from pipeline_steps.benchmarks.records import read_manifest, read_split
from pipeline_steps.benchmarks.source import Source, content_id
from pipeline_steps.evaluation.protocols import PROTOCOLS, official_letter, protocol_of
from pipeline_steps.evaluation.scoring import parse_choice, rouge_l

from helpers import call_stage

CLEAR_TABLE = {"forget_vqa", "forget_qa_rouge_l", "retain_vqa", "retain_qa_rouge_l", "real_vqa", "real_face_vqa"}


@pytest.fixture(scope="module")
def clear_raw(tmp_path_factory):
    return write_clear(tmp_path_factory.mktemp("clear") / "raw")


@pytest.fixture(scope="module")
def clear_benchmark(clear_raw, tmp_path_factory):
    """The fixture prepared by the stage, as the workflow runs it (local copy, seed 0)."""
    out = tmp_path_factory.mktemp("clear-prepared") / "benchmark"
    call_stage("prepare_benchmark", "--format", "clear", "--path", clear_raw, "--out", out)
    return out


def read(source, out, seed=0):
    """As prepare_benchmark reads a local copy: through a cache of its own."""
    return read_clear(Source.path(source, cache_dir=str(out.parent / f"{out.name}-cache")), out, seed=seed)


def test_the_fixture_has_the_hub_columns_and_types(clear_raw):
    full = datasets.load_dataset(str(clear_raw), "full", split="train")
    assert set(full.column_names) == {"image", "caption", "name"} and isinstance(full.features["image"], datasets.Image)
    raw = pq.read_table(clear_raw / "full" / "train-00000-of-00001.parquet").column("image")[0].as_py()
    assert set(raw) == {"bytes", "path"} and Image.open(io.BytesIO(raw["bytes"])).format == "PNG"
    tofu = datasets.load_dataset(str(clear_raw), "forget05+tofu", split="train")
    assert set(tofu.column_names) == {"image", "caption", "question", "answer"}
    assert sum(row["image"] is None for row in tofu) == 2 * len(FORGET_AUTHORS[5])  # TOFU rows have no image
    perturbed = datasets.load_dataset(str(clear_raw), "forget05_perturbed", split="train")
    assert set(perturbed.column_names) == {"image", "caption", "name", "paraphrased_caption", "perturbed_captions",
                                           "perturbed_names"}
    assert isinstance(perturbed.features["perturbed_names"], datasets.List)
    assert set(datasets.load_dataset(str(clear_raw), "real_world", split="train").column_names) == {
        "question", "answer", "image", "prompt", "options"}
    assert set(datasets.load_dataset(str(clear_raw), "real_faces", split="train").column_names) == {
        "image", "answer", "options"}


def test_every_split_with_its_images_and_questions(clear_benchmark):
    manifest = read_manifest(clear_benchmark)
    assert manifest["format"] == "clear" and manifest["forget_ratios"] == [1, 5, 10]
    assert {p.stem for p in (clear_benchmark / "splits").glob("*.jsonl")} == {
        "full", "forget_1", "forget_5", "forget_10", "retain_99", "retain_95", "retain_90", "real_world", "real_faces"}
    full = read_split(clear_benchmark, "full")
    assert sum(r.image is not None for r in full) == 3 * len(AUTHORS) and sum(r.image is None for r in full) == 20
    for ratio, forget_authors in FORGET_AUTHORS.items():
        forget, retain = read_split(clear_benchmark, f"forget_{ratio}"), read_split(clear_benchmark, f"retain_{100 - ratio}")
        assert {r.id for r in forget}.isdisjoint(r.id for r in retain)
        assert {r.name for r in forget if r.image} == set(forget_authors)
        assert {r.name for r in retain if r.image}.isdisjoint(forget_authors)
        # Forget VQA: every forget image asked for the name (forget<r>_perturbed shows them all).
        assert sum(len(r.multiple_choice) for r in forget) == 3 * len(forget_authors)
        # Forget QA: the forget authors' TOFU questions, each asked and scored against its own answer.
        text = {(r.generation[0].question, r.generation[0].answer) for r in forget if r.image is None}
        assert text == {pair for author in forget_authors for pair in questions(author)}
        assert all(r.train == r.generation and r.train[0].modality == "text" for r in forget if r.image is None)
    # Retain VQA: retain90_perturbed at 10 %; retain_perturbed without the forget authors otherwise.
    retain_questions = {ratio: sum(len(r.multiple_choice) for r in read_split(clear_benchmark, f"retain_{ratio}"))
                        for ratio in (99, 95, 90)}
    assert retain_questions == {99: 8, 95: 7, 90: 2}
    assert manifest["name_questions"]["retain_95"]["perturbed rows of forget authors, left out"] == 1
    assert len(read_split(clear_benchmark, "real_world")) == 4
    assert [r.name for r in read_split(clear_benchmark, "real_faces")] == CELEBRITIES


def test_name_questions_put_the_true_name_at_a_seeded_position(clear_raw, clear_benchmark, tmp_path):
    for record in read_split(clear_benchmark, "forget_10"):
        for item in record.multiple_choice:
            assert item.question == NAME_QUESTION and item.answer_text == record.name
            assert len(item.options) == 4 and len(set(item.options.values())) == 4
            wrong = set(item.options.values()) - {record.name}
            if record.name == AUTHORS[9]:  # one perturbed name only: topped up from other authors
                assert AUTHORS[0] in wrong and wrong <= set(AUTHORS)
            else:
                assert wrong == {f"Wrong{AUTHORS.index(record.name)} Name{j}" for j in range(3)}
    answers = Counter(item.answer for split in ("forget_10", "retain_99")
                      for r in read_split(clear_benchmark, split) for item in r.multiple_choice)
    assert len(answers) >= 3  # the right name is not always in one place

    def positions(directory):
        return [item.answer for r in read_split(directory, "retain_99") for item in r.multiple_choice]
    read(clear_raw, tmp_path / "same", seed=0)
    read(clear_raw, tmp_path / "other", seed=1)
    assert positions(tmp_path / "same") == positions(clear_benchmark)
    assert positions(tmp_path / "other") != positions(clear_benchmark)


def test_images_train_on_their_captions_with_a_fixed_prompt(clear_benchmark):
    full = {r.id: r for r in read_split(clear_benchmark, "full")}
    captions = {(row["name"], row["caption"]) for row in clear_configs()["full"][1]}
    for record in read_split(clear_benchmark, "forget_5"):
        if record.image is None:
            continue
        (pair,) = record.train
        assert pair.modality == "vqa" and pair.question in CAPTION_PROMPTS and (record.name, pair.answer) in captions
        assert full[record.id].train == record.train and full[record.id].image == record.image
        assert (clear_benchmark / record.image).read_bytes()
    prompts = Counter(r.train[0].question for r in full.values() if r.image)
    assert len(prompts) > 3


def test_caption_prompts_are_clears_nine_drawn_with_the_seed(clear_raw, clear_benchmark, tmp_path):
    """CLEAR's own caption prompts (IMAGE_CAPTION_QUESTIONS of the authors' mm/dataset.py), one per
    image, drawn by the reader's seed: the same seed draws the same prompts, another seed others."""
    assert len(CAPTION_PROMPTS) == len(set(CAPTION_PROMPTS)) == 9
    assert CAPTION_PROMPTS[0] == "What can you see in this picture?"
    assert CAPTION_PROMPTS[-1] == "What is happening in this image?"

    def prompts(directory):
        return {r.id: r.train[0].question for r in read_split(directory, "full") if r.image}
    drawn = prompts(clear_benchmark)
    assert set(drawn.values()) <= set(CAPTION_PROMPTS)
    read(clear_raw, tmp_path / "same", seed=0)
    read(clear_raw, tmp_path / "other", seed=1)
    assert prompts(tmp_path / "same") == drawn
    assert prompts(tmp_path / "other") != drawn and set(prompts(tmp_path / "other").values()) <= set(CAPTION_PROMPTS)


def test_clear_asks_its_name_questions_in_its_own_format(clear_benchmark):
    """CLEAR's multiple-choice prompt: ``A. name`` lines and no answer instruction, read by the
    official first-character rule."""
    protocol = protocol_of(read_manifest(clear_benchmark))
    assert protocol is PROTOCOLS["clear"] and protocol.parse is official_letter
    item = next(i for r in read_split(clear_benchmark, "forget_5") for i in r.multiple_choice)
    lines = protocol.ask(item.question, item.options).split("\n")
    assert lines[0] == NAME_QUESTION and lines[-1] == ""
    assert lines[1:-1] == [f"{letter}. {name}" for letter, name in item.options.items()]


def test_real_world_and_real_faces_use_the_rows_options(clear_benchmark):
    for record in read_split(clear_benchmark, "real_faces"):
        (item,) = record.multiple_choice
        assert item.question == NAME_QUESTION and item.answer_text == record.name
        assert set(item.options.values()) == {record.name, "Ada Lovelace", "Pablo Neruda", "Rosa Parks"}
    for record in read_split(clear_benchmark, "real_world"):
        (item,) = record.multiple_choice
        assert item.question.startswith("Which landmark") and item.answer_text == record.train[0].answer
        assert sorted(item.options.values()) == [f"Landmark {j}" for j in range(4)]


def test_without_perturbed_configs_other_authors_are_the_wrong_names(tmp_path):
    configs = {name: value for name, value in clear_configs().items() if "perturbed" not in name}
    manifest = read(write_clear(tmp_path / "raw", configs), tmp_path / "out")
    assert manifest["name_questions"]["forget_5"] == {"wrong names from other authors": 6}
    for record in read_split(tmp_path / "out", "retain_95"):
        for item in record.multiple_choice:
            assert item.answer_text == record.name and set(item.options.values()) <= set(AUTHORS)


def test_a_text_row_in_both_forget_and_retain_is_refused(tmp_path):
    configs = clear_configs()
    kind, rows = configs["retain95+tofu"]
    leaked = next(row for row in configs["forget05+tofu"][1] if row["image"] is None)
    configs["retain95+tofu"] = (kind, rows + [leaked])
    with pytest.raises(ValueError, match="in both forget05 and retain95"):
        read(write_clear(tmp_path / "raw", configs), tmp_path / "out")


def test_a_missing_required_config_is_named(tmp_path):
    configs = {name: value for name, value in clear_configs().items() if name != "real_faces"}
    with pytest.raises(ValueError, match="has no config 'real_faces'"):
        read(write_clear(tmp_path / "raw", configs), tmp_path / "out")


def image_id(author: str, index: int) -> str:
    return f"img-{content_id(image_of(author, index)['bytes'], 16)}"


def test_the_manifest_accounts_for_every_row(tmp_path):
    """Read, merged (with how many) or skipped (with the reason and the ids), per config; numbers by hand."""
    configs = clear_configs()
    tofu_kind, tofu = configs["full+tofu"]
    repeated = next(row for row in tofu if row["image"] is None)
    tofu = tofu + [repeated, repeated, {"image": None, "caption": None, "question": "Who?", "answer": None}]
    configs["full+tofu"] = (tofu_kind, tofu)
    stranger = {"image": {"bytes": png(9999), "path": None}, "caption": "", "name": None, "paraphrased_caption": "",
                "perturbed_captions": [], "perturbed_names": []}
    configs["retain_perturbed"] = ("perturbed", configs["retain_perturbed"][1] + [stranger])
    world_kind, world = configs["real_world"]
    configs["real_world"] = (world_kind, world + [dict(world[0], image=None)])
    manifest = read(write_clear(tmp_path / "raw", configs), tmp_path / "out")
    rows = manifest["rows"]
    qa_id = f"qa-{content_id((repeated['question'] + chr(0) + repeated['answer']).encode(), 16)}"
    # full+tofu: 30 image rows + 20 TOFU rows + 2 repeats + 1 without an answer.
    assert rows["full+tofu"]["rows"] == 53 and rows["full+tofu"]["read"] == 20
    assert rows["full+tofu"]["merged"] == {"count": 2, "records": 1, "into": {qa_id: 2}}
    skipped = rows["full+tofu"]["skipped"]
    assert skipped["image row (its image and caption are read from 'full')"]["count"] == 30
    assert skipped["text row without a question or an answer"] == {"count": 1, "ids": ["row 52"]}
    # retain_perturbed at 5 %: 8 fixture rows, one of a forget author (Ines Moreau), one nameless stranger.
    at_95 = rows["retain_perturbed for retain_95"]
    assert (at_95["rows"], at_95["read"], at_95["merged"]["count"]) == (9, 7, 0)
    assert at_95["skipped"] == {
        "a forget author's row, left out of the retain split": {"count": 1, "ids": [image_id(AUTHORS[8], 0)]},
        "no name, and its image is in no record of 'full'": {
            "count": 1, "ids": [f"img-{content_id(png(9999), 16)}"]}}
    assert rows["retain_perturbed for retain_99"]["read"] == 8
    assert rows["real_world"] == {"rows": 5, "read": 4, "merged": {"count": 0, "records": 0, "into": {}},
                                  "skipped": {"no image": {"count": 1, "ids": ["row 4"]}}}
    # Images no perturbed row shows: retain_99 has authors 0-8's 27 images, 8 of them shown.
    uncovered = manifest["images_without_name_question"]
    shown = set(RETAIN_PERTURBED)
    assert uncovered["retain_99"] == {"count": 19, "ids": [image_id(a, i) for a in AUTHORS[:9] for i in range(3)
                                                           if (a, i) not in shown]}
    assert uncovered["forget_5"] == {"count": 0, "ids": []}


@pytest.mark.slow
def test_evaluate_reports_the_six_clear_columns(clear_benchmark, tiny_models, tmp_path):
    out = tmp_path / "eval"
    call_stage("evaluate", "--model", tiny_models["llava"], "--benchmark", clear_benchmark, "--forget-ratio", "5",
               "--out", out, "--scoring", "likelihood", "generate", "--max-new-tokens", "6", "--batch-size", "16")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["table"]) == CLEAR_TABLE
    choice = metrics["multiple_choice"]["likelihood"]
    assert {column: choice[column]["n"] for column in choice} == {
        "forget_vqa": 6, "retain_vqa": 7, "real_vqa": 4, "real_face_vqa": 4}
    assert metrics["table"]["forget_vqa"] == choice["forget_vqa"]["accuracy"]
    assert (metrics["protocol"], metrics["generate_rule"]) == ("clear", "official_letter")
    assert {c: v["n"] for c, v in metrics["generation_rouge_l"].items()} == {"forget_qa": 4, "retain_qa": 16}
    assert metrics["table"]["retain_qa_rouge_l"] == metrics["generation_rouge_l"]["retain_qa"]["rouge_l"]
    assert all(0 <= value <= 1 for value in metrics["table"].values())

    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    generated = [row for row in rows if row["kind"] == "generation"]
    truth = {q: a for author in AUTHORS for q, a in questions(author)}
    for row in generated:  # each output scored against its own question's answer, not a stale string
        assert row["answer"] == truth[row["question"]]
        assert row["rouge_l"] == rouge_l(row["output"], row["answer"])
    assert sum(r["rouge_l"] for r in generated if r["column"] == "forget_qa") / 4 == pytest.approx(
        metrics["table"]["forget_qa_rouge_l"])

    # generate: each output read by the official rule (scored) and leniently (a diagnostic).
    chosen = [row for row in rows if row["kind"] == "multiple_choice"]
    for row in chosen:
        reading = row["generate"]
        assert reading["rule"] == "official_letter"
        assert reading["prediction"] == official_letter(reading["output"], row["options"])
        assert reading["correct"] == (reading["prediction"] == row["answer"])
        assert reading["lenient"]["prediction"] == parse_choice(reading["output"], row["options"])[0]
    for column in choice:
        of_column = [row["generate"] for row in chosen if row["column"] == column]
        assert metrics["multiple_choice"]["generate"][column]["correct"] == sum(r["correct"] for r in of_column)
        assert metrics["generate_lenient"][column]["correct"] == sum(r["lenient"]["correct"] for r in of_column)
        assert metrics["generate_rejected"][column] == sum(r["prediction"] is None for r in of_column)
