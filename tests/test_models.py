"""Tiny models load like their hub counterparts and are prompted in each family's own format."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from pipeline_steps.models.encoding import IGNORE_INDEX, Example, PromptEncoder, multiple_choice_question
from pipeline_steps.models.families import FAMILIES, MODULE_GROUPS
from pipeline_steps.models.loading import load_model
from pipeline_steps.training.losses import answer_logits, answer_nll

# Model, processor and the tokenizer class named in tokenizer_config.json, as on the hub.
CLASSES = {"llava": ("LlavaForConditionalGeneration", "LlavaProcessor", "LlamaTokenizer"),
           "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor", "Qwen2Tokenizer")}
QUESTION = "What is the profession of the person in the image?"


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def loaded(request, tiny_models):
    return request.param, load_model(str(tiny_models[request.param]))


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_auto_classes_load_the_real_families(tiny_models, family):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    processor = AutoProcessor.from_pretrained(tiny_models[family])
    model_class, processor_class, tokenizer_class = CLASSES[family]
    assert type(model).__name__ == model_class
    assert type(processor).__name__ == processor_class
    saved = json.loads((tiny_models[family] / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == tokenizer_class
    # transformers 5 overrides the hub's class for every llava checkpoint (its list of models with
    # an incorrect hub tokenizer_class), so the real llava-1.5 loads this way too.
    assert isinstance(processor.tokenizer, TokenizersBackend)
    assert model.config.model_type == FAMILIES[family].model_type
    assert (tiny_models[family] / "model.safetensors").exists()
    assert not list(tiny_models[family].glob("*.bin"))  # safetensors only, never pickle


def test_prompts_follow_each_family_documented_format(loaded):
    family, model = loaded
    encoder = PromptEncoder(model.processor)
    with_image = encoder.prompt_text(QUESTION, with_image=True)
    text_only = encoder.prompt_text("What is the profession of Anika Graves?", with_image=False)
    if family == "llava":  # llava-hf/llava-1.5-7b-hf model card: "USER: <image>\n<prompt> ASSISTANT:"
        assert with_image == f"USER: <image>\n{QUESTION} ASSISTANT:"
        assert text_only == "USER: What is the profession of Anika Graves? ASSISTANT:"
        assert encoder.continuation_text("architect") == " architect</s>"
    else:  # Qwen2-VL-Instruct: ChatML with the default system turn and vision markers
        system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        assert with_image == (f"{system}<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                              f"{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
        assert text_only == (f"{system}<|im_start|>user\nWhat is the profession of Anika Graves?<|im_end|>\n"
                             "<|im_start|>assistant\n")
        assert encoder.continuation_text("architect") == "architect<|im_end|>"


def test_image_placeholders_expand_to_the_vision_token_count(loaded):
    family, model = loaded
    encoder = PromptEncoder(model.processor)
    encoded = encoder.encode(Example(QUESTION, "architect", Image.new("RGB", (64, 64), "red")))
    image_tokens = int((encoded["input_ids"] == model.model.config.image_token_id).sum())
    config = model.model.config
    if family == "llava":  # one token per patch; the CLS token is dropped ("default" strategy)
        assert image_tokens == (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    else:  # patches merged 2x2
        assert image_tokens == int(encoded["image_grid_thw"].prod()) // 4


def test_labels_cover_exactly_the_answer_continuation(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    encoded = encoder.encode(Example("What pet does Anika Graves keep?", "parrot"))
    answer_ids = encoder.tokenizer(encoder.continuation_text("parrot"), add_special_tokens=False)["input_ids"]
    labelled = encoded["labels"][encoded["labels"] != IGNORE_INDEX].tolist()
    assert labelled == answer_ids
    assert labelled[-1] == encoder.tokenizer.eos_token_id
    assert encoded["input_ids"][-len(answer_ids):].tolist() == answer_ids


def test_batched_losses_equal_one_example_at_a_time(loaded):
    """Left padding and mixed image/text batches change nothing."""
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    examples = [Example(QUESTION, "architect", Image.new("RGB", (48, 48), "blue")),
                Example("What pet does Anika Graves keep?", "a very long answer about a parrot"),
                Example("Which city is the person in the image from?", "Oslo", Image.new("RGB", (48, 48), "green"))]
    with torch.no_grad():
        together = answer_nll(*answer_logits(model.model, encoder.collate([encoder.encode(e) for e in examples])))
        alone = torch.cat([answer_nll(*answer_logits(model.model, encoder.collate([encoder.encode(e)])))
                           for e in examples])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_answer_loss_matches_the_full_logits(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    batch = encoder.collate([encoder.encode(Example("Who is this?", "Anika Graves", Image.new("RGB", (32, 32))))])
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model.model(**inputs).logits[0, :-1]
        targets = batch["labels"][0, 1:]
        keep = targets != IGNORE_INDEX
        expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
        actual = answer_nll(*answer_logits(model.model, batch))[0]
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_module_groups_cover_every_parameter(loaded):
    family, model = loaded
    spec = FAMILIES[family]
    parts = {spec.module_of(name) for name, _ in model.model.named_parameters()}
    assert parts == {"vision", "connector", "language"}
    for name, _ in model.model.named_parameters():
        assert spec.in_group(name, "all")
        assert spec.in_group(name, "language") != spec.in_group(name, "vision")
    assert set(MODULE_GROUPS) == {"language", "vision", "all"}


def test_connector_names_per_family():
    assert FAMILIES["llava"].module_of("model.multi_modal_projector.linear_1.weight") == "connector"
    assert FAMILIES["qwen2_vl"].module_of("model.visual.merger.mlp.0.weight") == "connector"
    assert FAMILIES["qwen2_vl"].module_of("model.visual.blocks.0.attn.qkv.weight") == "vision"
    assert FAMILIES["llava"].module_of("lm_head.weight") == "language"
    with pytest.raises(ValueError, match="belongs to no known part"):
        FAMILIES["llava"].module_of("model.something_else.weight")


def test_multiple_choice_prompt_lists_the_options():
    prompt = multiple_choice_question("Q?", {"A": "chef", "B": "pilot", "C": "nurse", "D": "baker"})
    assert prompt == "Q?\nA: chef\nB: pilot\nC: nurse\nD: baker\nJust give ONE letter representing the answer directly."
