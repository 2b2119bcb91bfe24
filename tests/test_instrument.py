"""The instrument diagnostics: the questions they ask, and the stage that asks them."""

import json

import pytest

from pipeline_steps.benchmarks.synthetic.instrument import attribute_of, diagnostic_items, read_world
from pipeline_steps.benchmarks.synthetic.world import ATTRIBUTES, VQA_TAUGHT_ATTRIBUTES
from pipeline_steps.measure_instrument import CHANCE, per_attribute, summary

from helpers import call_stage

WORDINGS = {wording: {getattr(a, wording) for a in ATTRIBUTES}
            for wording in ("vqa_question", "vqa_paraphrase", "text_question", "text_paraphrase")}


def test_coupling_questions_ask_facts_taught_by_name_only_with_the_face(raw_benchmark, benchmark):
    world = read_world(raw_benchmark)
    groups = diagnostic_items(world, benchmark, people=5)
    people = {p["id"]: p for p in world["people"]}
    coupled = len(ATTRIBUTES) - VQA_TAUGHT_ATTRIBUTES
    assert len(groups["coupling"]) == len(groups["coupling_text"]) == 5 * coupled
    assert len(groups["face_train"]) == len(groups["face_eval"]) == 5 * VQA_TAUGHT_ATTRIBUTES
    assert len(groups["text_train"]) == len(groups["text_eval"]) == 5 * len(ATTRIBUTES)
    by_question = {a.vqa_paraphrase: a.key for a in ATTRIBUTES}
    for posed in groups["coupling"]:
        person = people[posed.profile]
        key = by_question[posed.item.question]
        assert posed.image is not None and person["kind"] == "fictitious"
        assert key not in person["vqa_taught"]
        assert posed.item.answer_text == person["facts"][key]
        assert len(set(posed.item.options.values())) == 4
    assert all(p.item.question in WORDINGS["vqa_question"] for p in groups["face_train"])
    assert all(p.item.question in WORDINGS["vqa_paraphrase"] for p in groups["face_eval"])
    assert all(p.image is None for g in ("coupling_text", "text_train", "text_eval") for p in groups[g])


def test_every_diagnostic_question_is_traced_to_the_attribute_it_asks(raw_benchmark, benchmark):
    world = read_world(raw_benchmark)
    people = {p["id"]: p for p in world["people"]}
    keys = attribute_of(world)
    for group, asked in diagnostic_items(world, benchmark, people=5).items():
        for posed in asked:
            assert posed.item.answer_text == people[posed.profile]["facts"][keys[posed.item.question]], group


def test_per_attribute_accuracy_counts_each_wording_group_of_each_attribute():
    def row(group, question, likelihood, generate):
        return {"column": group, "question": question, "likelihood": {"correct": likelihood},
                "generate": {"correct": generate}}

    rows = [row("text_eval", "Which food does Ana like?", True, False),
            row("text_eval", "Which food does Bo like?", True, True),
            row("text_train", "What is the favorite food of Ana?", True, True),
            row("text_eval", "What drink does Ana like?", False, False),
            row("coupling", "Which food does the person like?", True, True)]  # not a wording group
    keys = {"Which food does Ana like?": "food", "Which food does Bo like?": "food",
            "What is the favorite food of Ana?": "food", "What drink does Ana like?": "drink"}
    got = per_attribute(rows, keys)
    assert got["food"]["text_eval"]["likelihood"] == {"accuracy": 1.0, "correct": 2, "n": 2}
    assert got["food"]["text_eval"]["generate"]["accuracy"] == 0.5
    assert got["food"]["text_train"]["generate"]["n"] == 1
    assert got["drink"] == {"text_eval": {"likelihood": {"accuracy": 0.0, "correct": 0, "n": 1},
                                          "generate": {"accuracy": 0.0, "correct": 0, "n": 1}}}


def test_summary_is_coupling_over_chance_and_train_minus_eval():
    def acc(value):
        return {"likelihood": {"accuracy": value}, "generate": {"accuracy": value / 2}}

    diagnostics = {"vanilla": {"coupling": acc(0.45), "coupling_text": acc(0.9), "face_train": acc(1.0),
                               "face_eval": acc(0.8), "text_train": acc(0.96), "text_eval": acc(0.9)}}
    got = summary(diagnostics)["vanilla"]
    assert got["likelihood"]["coupling_over_chance"] == 0.45 - CHANCE
    assert abs(got["likelihood"]["paraphrase_gap_vqa"] - 0.2) < 1e-12
    assert abs(got["generate"]["paraphrase_gap_text"] - 0.03) < 1e-12
    assert got["generate"]["coupling_ceiling"] == 0.45


@pytest.mark.slow
def test_stage_writes_every_group_for_every_model(raw_benchmark, benchmark, tiny_models, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"table": {"forget_vqa": 0.5}, "scoring_modes": ["likelihood"],
                                   "multiple_choice": {"likelihood": {"forget_vqa": {"accuracy": 0.5, "n": 2}}}}))
    out = tmp_path / "instrument"
    call_stage("measure_instrument", "--raw", raw_benchmark, "--benchmark", benchmark,
               "--model", f"untrained={tiny_models['llava']}", "--metrics", f"base={metrics}",
               "--people", "3", "--max-new-tokens", "2", "--out", out)
    report = json.loads((out / "instrument.json").read_text())
    groups = report["diagnostics"]["untrained"]
    assert groups["coupling"]["likelihood"]["n"] == 3 * (len(ATTRIBUTES) - VQA_TAUGHT_ATTRIBUTES)
    assert groups["text_eval"]["generate"]["n"] == 3 * len(ATTRIBUTES)
    assert report["columns"]["base"]["table"] == {"forget_vqa": 0.5}
    by_attribute = report["per_attribute"]["untrained"]
    assert set(by_attribute) == {a.key for a in ATTRIBUTES}
    assert sum(g["text_eval"]["likelihood"]["n"] for g in by_attribute.values()) == 3 * len(ATTRIBUTES)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == sum(g["likelihood"]["n"] for g in groups.values())
    assert "| base | likelihood | 0.50 |" in (out / "instrument.md").read_text()
