"""Metrics on hand-made cases, and likelihood scoring against a direct computation."""

import json

import pytest
import torch
from PIL import Image

from pipeline_steps.benchmarks.records import ChoiceItem
from pipeline_steps.evaluation.protocols import (PROTOCOLS, clear_multiple_choice_question, exact_option,
                                                 official_letter, protocol_of)
from pipeline_steps.evaluation.scoring import (PosedItem, accuracy, fills_blank, option_loglikelihoods, parse_choice,
                                               read_generated, rouge_l)
from pipeline_steps.models.encoding import MULTIPLE_CHOICE_INSTRUCTION
from pipeline_steps.models.encoding import IGNORE_INDEX, Example, PromptEncoder
from pipeline_steps.models.loading import load_model

from helpers import call_stage

OPTIONS = {"A": "chef", "B": "pilot", "C": "nurse", "D": "baker"}


@pytest.mark.parametrize("output,expected", [
    ("B", ("B", "letter")), ("B.", ("B", "letter")), ("  (C) nurse", ("C", "letter")), ("D: baker", ("D", "letter")),
    ("pilot", ("B", "text")), ("The person is a Nurse.", ("C", "text")),
    ("a chef", ("A", "text")),  # lowercase "a" is an article, the option text decides
    ("Beekeeper", (None, "none")), ("chef or pilot", (None, "none")), ("", (None, "none")),
    ("E", (None, "none")),
    ("pilot (B)", ("B", "trailing_letter")), ("nurse (D)", ("D", "trailing_letter")),  # the letter decides
    ("chef (E)", ("A", "text")),  # no such letter: the option text decides
])
def test_parse_choice(output, expected):
    assert parse_choice(output, OPTIONS) == expected


@pytest.mark.parametrize("output,expected", [
    ("B", "B"), ("B.", "B"), ("(B) chef", "B"), (" b.", "B"), ("**D**: baker", "D"),
    ("chef (B)", "C"),  # the first alphanumeric character is the c of "chef": option C, not B
    ("The answer is B", None),  # "T" is no option: rejected
    ("pilot", None), ("E", None), ("", None), ("...", None), ("2", None),
])
def test_the_official_parse_takes_the_first_alphanumeric_character(output, expected):
    assert official_letter(output, OPTIONS) == expected


def test_the_strict_parse_rejects_an_answer_without_a_leading_letter():
    """What the lenient reading credits and the official one does not."""
    for output in ("The answer is (B)", "The person is a pilot.", "I think (B)"):
        assert parse_choice(output, OPTIONS)[0] == "B"
        assert official_letter(output, OPTIONS) is None


@pytest.mark.parametrize("output,expected", [
    ("chef", "A"), ("Chef.", "A"), ("  PILOT!\n", "B"), ('"nurse"', "C"),
    ("chef or pilot", None), ("a chef", None), ("The person is a chef.", None), ("chef (A)", None),
    ("B", None), ("", None), ("?", None), ("cheff", None),
])
def test_the_synthetic_parse_is_exactly_one_options_text(output, expected):
    assert exact_option(output, OPTIONS) == expected


def test_the_synthetic_parse_refuses_an_ambiguous_option_text():
    assert exact_option("chef", {"A": "chef", "B": "Chef", "C": "pilot"}) is None


def test_a_generated_answer_is_read_strictly_and_leniently():
    item = ChoiceItem("vqa", "Q?", OPTIONS, "B")
    reading = read_generated("The person is a pilot.", item, PROTOCOLS["mllmu_bench"])
    assert reading == {"output": "The person is a pilot.", "prediction": None, "rule": "official_letter",
                       "correct": False, "lenient": {"prediction": "B", "parse": "text", "correct": True}}
    reading = read_generated("pilot", item, PROTOCOLS["synthetic_mllmu"])
    assert (reading["prediction"], reading["rule"], reading["correct"]) == ("B", "exact_option", True)
    assert reading["lenient"] == {"prediction": "B", "parse": "text", "correct": True}
    reading = read_generated("pilot or chef", item, PROTOCOLS["synthetic_mllmu"])
    assert (reading["prediction"], reading["correct"], reading["lenient"]["correct"]) == (None, False, False)


def test_each_benchmark_asks_in_its_own_format():
    mllmu = PROTOCOLS["mllmu_bench"].ask("Q?", {"A": "chef", "B": "pilot"})
    assert mllmu == f"Q?\nA: chef\nB: pilot\n{MULTIPLE_CHOICE_INSTRUCTION}"
    assert PROTOCOLS["synthetic_mllmu"].ask("Q?", {"A": "chef", "B": "pilot"}) == mllmu  # what it was taught
    clear = PROTOCOLS["clear"].ask("What is the name of the person in the image?", {"A": "Ann Lee", "B": "Bo Li"})
    assert clear == clear_multiple_choice_question("What is the name of the person in the image?",
                                                   {"A": "Ann Lee", "B": "Bo Li"})
    assert clear == "What is the name of the person in the image?\nA. Ann Lee\nB. Bo Li\n"  # no instruction
    assert PROTOCOLS["clear"].parse is PROTOCOLS["mllmu_bench"].parse is official_letter


def test_the_protocol_comes_from_the_manifest():
    assert protocol_of({"format": "clear", "protocol": "clear"}) is PROTOCOLS["clear"]
    with pytest.raises(ValueError, match="prepare_benchmark again"):
        protocol_of({"format": "mllmu_bench"})  # prepared before protocols were recorded
    with pytest.raises(ValueError, match="unknown protocol 'lenient'"):
        protocol_of({"format": "mllmu_bench", "protocol": "lenient"})


def test_rouge_l_is_the_lcs_f_measure():
    # LCS("the cat on the mat", "the cat sat on the mat") = 5: P = 5/5, R = 5/6, F = 10/11.
    assert rouge_l("the cat on the mat", "the cat sat on the mat") == pytest.approx(10 / 11)
    # Stemming: "runs" and "running" share the stem "run"; LCS = 3, P = 1, R = 3/4, F = 6/7.
    assert rouge_l("he runs fast", "He was running fast") == pytest.approx(6 / 7)
    assert rouge_l("architect", "architect") == 1.0
    assert rouge_l("", "architect") == 0.0


def test_fill_in_the_blank_is_containment():
    assert fills_blank("She was born in 1985.", "1985")
    assert fills_blank("LISBON", "Lisbon")
    assert not fills_blank("1986", "1985")


def test_accuracy_counts():
    assert accuracy([True, False, True, True]) == {"accuracy": 0.75, "correct": 3, "n": 4}
    assert accuracy([]) == {"accuracy": None, "correct": 0, "n": 0}


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_option_likelihood_is_the_mean_answer_token_logprob(tiny_models, family):
    loaded = load_model(str(tiny_models[family]))
    encoder = PromptEncoder(loaded.processor)
    image = Image.new("RGB", (32, 32), "purple")
    items = [PosedItem(ChoiceItem("vqa", "What is the profession of the person in the image?", OPTIONS, "B"), image, "1"),
             PosedItem(ChoiceItem("text", "What is the profession of Anika Graves?", OPTIONS, "A"), None, "1")]
    scores = option_loglikelihoods(loaded.model, encoder, items, batch_size=3)
    for asked, item_scores in zip(items, scores):
        for text, score in zip(OPTIONS.values(), item_scores):
            encoded = encoder.encode(Example(asked.item.question, text, asked.image))
            inputs = {k: (v.unsqueeze(0) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
                      for k, v in encoded.items() if k != "labels"}
            with torch.no_grad():
                logprobs = torch.log_softmax(loaded.model(**inputs).logits[0, :-1].float(), dim=-1)
            targets = encoded["labels"][1:]
            keep = targets != IGNORE_INDEX
            expected = logprobs[keep].gather(1, targets[keep].unsqueeze(1)).mean().item()
            assert score == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_evaluate_scores_generate_strictly_and_reports_the_lenient_reading(tiny_models, benchmark, tmp_path):
    """On the synthetic benchmark: rows hold both readings, the table the strict one (its exact-option
    rule), ``generate_lenient`` the lenient one, ``generate_parse_rules`` the lenient rules."""
    out = tmp_path / "eval"
    call_stage("evaluate", "--model", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "5",
               "--out", out, "--scoring", "generate", "--primary", "generate", "--outputs", "multiple_choice",
               "--max-new-tokens", "4", "--batch-size", "32")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["protocol"], metrics["generate_rule"]) == ("synthetic_mllmu", "exact_option")
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    rules = {}
    for row in rows:
        reading = row["generate"]
        assert reading["rule"] == "exact_option"
        assert reading["prediction"] == exact_option(reading["output"], row["options"])
        assert reading["correct"] == (reading["prediction"] == row["answer"])
        lenient, rule = parse_choice(reading["output"], row["options"])
        assert reading["lenient"] == {"prediction": lenient, "parse": rule, "correct": lenient == row["answer"]}
        rules[rule] = rules.get(rule, 0) + 1
    assert metrics["generate_parse_rules"] == rules
    for column, strict in metrics["multiple_choice"]["generate"].items():
        of_column = [row["generate"] for row in rows if row["column"] == column]
        assert strict == accuracy(r["correct"] for r in of_column)
        assert metrics["generate_lenient"][column] == accuracy(r["lenient"]["correct"] for r in of_column)
        assert metrics["generate_rejected"][column] == sum(r["prediction"] is None for r in of_column)
        assert metrics["table"][column] == strict["accuracy"]
