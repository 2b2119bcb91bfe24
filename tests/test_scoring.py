"""Metrics on hand-made cases, and likelihood scoring against a direct computation."""

import pytest
import torch
from PIL import Image

from pipeline_steps.benchmarks.records import ChoiceItem
from pipeline_steps.evaluation.scoring import (PosedItem, accuracy, fills_blank, option_loglikelihoods, parse_choice,
                                               rouge_l)
from pipeline_steps.models.encoding import IGNORE_INDEX, Example, PromptEncoder
from pipeline_steps.models.loading import load_model

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
