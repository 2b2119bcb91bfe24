"""The evaluation's shared-work paths against the straightforward computations, on both families.

Likelihood scores all options of an item against one cached pass over its prompt, with image
features computed once per image, in batches sorted by length; generation sorts prompts by
length and reuses the image features. Each must give what scoring every option as its own
sequence, and decoding every prompt on its own, gives (``evaluation/reference.py``).
"""

import json

import pytest
import torch
from PIL import Image

from pipeline_steps.benchmarks.layouts import layout_of
from pipeline_steps.benchmarks.records import ChoiceItem, read_manifest
from pipeline_steps.evaluate import asked_items
from pipeline_steps.evaluation.batching import by_length
from pipeline_steps.evaluation.generation import generate_answers
from pipeline_steps.evaluation.images import ImageFeatures
from pipeline_steps.evaluation.likelihood import option_loglikelihoods
from pipeline_steps.evaluation.reference import per_item_answers, per_option_loglikelihoods
from pipeline_steps.evaluation.scoring import PosedItem
from pipeline_steps.models.encoding import Example, PromptEncoder, multiple_choice_question
from pipeline_steps.models.loading import load_model

from helpers import call_stage

FAMILIES = ["llava", "qwen2_vl"]


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return {family: load_model(str(path)) for family, path in tiny_models.items()}


def posed(benchmark, kind: str) -> list[PosedItem]:
    """A column's image items and a column's text items of the fixture benchmark."""
    columns = layout_of(read_manifest(benchmark)).records(benchmark, 5)
    opened: dict = {}
    vqa = asked_items(*columns["forget_vqa"], kind, benchmark, opened)
    text = asked_items(*columns["retain_qa"], kind, benchmark)
    return vqa[:14] + text[:9]


def test_batches_by_length():
    assert list(by_length([5, 1, 4, 2, 3], budget=2)) == [[1, 3], [4, 2], [0]]
    assert list(by_length([(2, 1), (1, 9), (2, 0)], budget=5)) == [[1, 2, 0]]


@pytest.mark.parametrize("family", FAMILIES)
def test_continuation_ids_are_what_encode_appends(loaded, family):
    encoder = PromptEncoder(loaded[family].processor)
    example = Example("What is the profession of Anika Graves?", "pilot", Image.new("RGB", (32, 32), "red"))
    full, prompt = encoder.encode(example), encoder.encode(Example(example.question, None, example.image))
    assert torch.equal(full["input_ids"], torch.cat([prompt["input_ids"], encoder.continuation_ids("pilot")]))


@pytest.mark.parametrize("family", FAMILIES)
def test_likelihood_from_a_shared_prompt_equals_scoring_each_option(loaded, benchmark, family):
    model, encoder = loaded[family].model.eval(), PromptEncoder(loaded[family].processor)
    asked = posed(benchmark, "multiple_choice")
    options = {"A": "Lisbon", "B": "a very long option text here", "C": "x"}
    three = ChoiceItem("text", "Which city is this?", options, "A")
    asked.insert(3, PosedItem(three, None, "extra"))  # options of unequal number and length
    expected = per_option_loglikelihoods(model, encoder, asked, batch_size=6)
    got = option_loglikelihoods(model, encoder, asked, batch_size=7)  # batches cut across items and columns
    assert [len(scores) for scores in got] == [len(a.item.options) for a in asked]
    for want, have in zip(expected, got):
        assert have == pytest.approx(want, abs=1e-5)
        assert max(range(len(want)), key=want.__getitem__) == max(range(len(have)), key=have.__getitem__)


@pytest.mark.parametrize("family", FAMILIES)
def test_image_features_stand_in_for_the_pixels(loaded, family):
    model, encoder = loaded[family].model.eval(), PromptEncoder(loaded[family].processor)
    images = [Image.new("RGB", (32, 32), color) for color in ("purple", "green")]
    examples = [Example("Who is this?", "a pilot", images[0]),
                Example("Where was this person born?", "Lisbon", images[1]), Example("Who is this?", "a chef", images[0])]
    encoded = [encoder.encode(e) for e in examples]
    batch = {k: v for k, v in encoder.collate(encoded).items() if k != "labels"}
    features = ImageFeatures(model, batch_size=8)
    features.add([(e.image, item) for e, item in zip(examples, encoded)])
    assert features.enabled and len(features._features) == 2
    with torch.no_grad():
        direct = model(**batch).logits
        shared = model(**features.inputs([e.image for e in examples], batch)).logits
    assert torch.allclose(direct, shared, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_greedy_decoding_item_by_item(loaded, benchmark, family):
    model, encoder = loaded[family].model.eval(), PromptEncoder(loaded[family].processor)
    choice = posed(benchmark, "multiple_choice")[10:18]
    prompts = ([Example(multiple_choice_question(a.item.question, a.item.options), None, a.image) for a in choice]
               + [Example(a.item.question, None, a.image) for a in posed(benchmark, "generation")[8:18]])
    images = ImageFeatures(model, batch_size=4)  # shared by both kinds, as evaluate shares it
    assert generate_answers(model, encoder, prompts, batch_size=5, max_new_tokens=6, images=images) == \
        per_item_answers(model, encoder, prompts, max_new_tokens=6)


@pytest.mark.slow
def test_outputs_select_the_item_kinds_and_are_recorded(tiny_models, benchmark, tmp_path):
    out = tmp_path / "eval"
    call_stage("evaluate", "--model", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "5",
               "--out", out, "--scoring", "likelihood", "--outputs", "multiple_choice", "--batch-size", "32")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["outputs"] == ["multiple_choice"] and metrics["scoring_modes"] == ["likelihood"]
    assert metrics["generation_rouge_l"] == {} and metrics["fill_blank"] == {}
    assert metrics["table"]["forget_vqa"] is not None
    kinds = {json.loads(line)["kind"] for line in (out / "predictions.jsonl").read_text().splitlines()}
    assert kinds == {"multiple_choice"}
