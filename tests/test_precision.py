"""bfloat16 models trained under autocast with float32 trainable tensors; gradient checkpointing;
both tiny families through every stage in bfloat16, as a real run on a GPU would go."""

import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from pipeline_steps.benchmarks.synthetic.world import VQA_TAUGHT_ATTRIBUTES
from pipeline_steps.models.encoding import PromptEncoder
from pipeline_steps.models.loading import load_model
from pipeline_steps.training.precision import enable_gradient_checkpointing, training_accelerator
from pipeline_steps.unlearning.loop import UnlearnSettings, unlearn
from pipeline_steps.unlearning.methods import get_method

from helpers import VQA_PAIRS_PER_PERSON, forget_examples, retain_examples, run_stage

FAMILIES = ["llava", "qwen2_vl"]


@pytest.fixture
def bf16_accelerator():
    """A bfloat16 accelerator; its state is a process-wide singleton, so it is reset around the test."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield training_accelerator("cpu", "bfloat16")
    AcceleratorState._reset_state(reset_partial_state=True)


def unlearn_copy(model_dir, *, dtype="float32", accelerator=None, checkpointing=False, learning_rate=2e-5,
                 epochs=2):
    """GA_Diff on a fresh copy of ``model_dir`` loaded in ``dtype``: (start weights, final model)."""
    loaded = load_model(str(model_dir), dtype=dtype)
    if checkpointing:
        enable_gradient_checkpointing(loaded.model)
    start = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    settings = UnlearnSettings(epochs=epochs, batch_size=2, learning_rate=learning_rate, seed=0)
    unlearn(loaded.model, get_method("ga_diff"), PromptEncoder(loaded.processor), forget_examples(),
            retain_examples(), settings, get_method("ga_diff").Hyperparameters(), accelerator or Accelerator(cpu=True),
            trainable=set(start), start_values=start)
    return start, loaded.model


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_unlearning_follows_the_float32_run(tiny_models, family, bf16_accelerator):
    """At the paper's learning rate (2e-5) each step is below the spacing of bfloat16 weights; the
    trained tensors must accumulate steps in float32 and be rounded only when stored."""
    start, exact = unlearn_copy(tiny_models[family])
    start_bf16, mixed = unlearn_copy(tiny_models[family], dtype="bfloat16", accelerator=bf16_accelerator)
    assert all(p.dtype == torch.float32 for p in mixed.parameters())  # the trained copies
    moved = exact_moved = total = 0
    for name, parameter in mixed.named_parameters():
        rounded_exact = exact.get_parameter(name).detach().to(torch.bfloat16)
        stored = parameter.detach().to(torch.bfloat16)
        moved += int((stored != start_bf16[name]).sum())
        exact_moved += int((rounded_exact != start[name].to(torch.bfloat16)).sum())
        total += parameter.numel()
    # Nearly every entry that moves by a bfloat16 step in the float32 run also moves here.
    assert exact_moved > 0.05 * total
    assert moved > 0.8 * exact_moved
    delta_exact = torch.cat([(exact.get_parameter(n).detach() - start[n]).flatten() for n in start])
    delta_mixed = torch.cat([(p.detach() - start_bf16[n].float()).flatten() for n, p in mixed.named_parameters()])
    assert torch.nn.functional.cosine_similarity(delta_exact, delta_mixed, dim=0) > 0.9


def test_float16_training_is_refused():
    with pytest.raises(ValueError, match="use bfloat16"):
        training_accelerator("cpu", "float16")


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_checkpointing_recomputes_and_changes_nothing(tiny_models, family):
    plain_start, plain = unlearn_copy(tiny_models[family], learning_rate=1e-3, epochs=1)
    loaded = load_model(str(tiny_models[family]))
    enable_gradient_checkpointing(loaded.model)
    layers = loaded.model.model.language_model.layers
    calls = []
    # The layer's first module: a layer's own hooks stay outside the checkpoint, and recomputation
    # stops as soon as backward has what it needs.
    layers[0].input_layernorm.register_forward_pre_hook(lambda *_: calls.append(1))
    settings = UnlearnSettings(epochs=1, batch_size=2, learning_rate=1e-3, seed=0)
    unlearn(loaded.model, get_method("ga_diff"), PromptEncoder(loaded.processor), forget_examples(),
            retain_examples(), settings, get_method("ga_diff").Hyperparameters(), Accelerator(cpu=True), trainable=set(plain_start))
    steps = len(forget_examples()) // 2
    assert len(calls) == 2 * 2 * steps  # forget and retain forwards, each run again in backward
    for name, parameter in loaded.model.named_parameters():
        torch.testing.assert_close(parameter, plain.get_parameter(name), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_in_bfloat16_with_checkpointing(benchmark, tiny_models, tmp_path, family):
    """Fisher, mask, unlearning and evaluation of a bfloat16 model, as a GPU run would, on CPU."""
    model = tiny_models[family]
    common = ["--benchmark", benchmark, "--forget-ratio", "10", "--device", "cpu", "--dtype", "bfloat16"]
    fisher = {}
    for split in ("forget_vqa", "forget_text"):  # the retain splits go the same way, ten times longer
        fisher[split] = tmp_path / "fisher" / split
        run_stage("compute_fisher", "--model", model, "--split", split, "--out", fisher[split], "--batch-size", "8",
                  *common)
    run_stage("build_mask", "--target", fisher["forget_vqa"], "--preserve", fisher["forget_text"],
              "--out", tmp_path / "mask")
    run_stage("unlearn", "--vanilla", model, "--method", "mmunlearner", "--mask", tmp_path / "mask", "--out",
              tmp_path / "unlearned", "--epochs", "1", "--batch-size", "8", "--hparam", "retain_weight=0",
              "--gradient-checkpointing", *common)
    run_stage("evaluate", "--model", model, "--changes", tmp_path / "unlearned" / "weights", "--out",
              tmp_path / "eval", "--scoring", "likelihood", "--batch-size", "32", *common)

    index = json.loads((tmp_path / "fisher" / "forget_vqa.safetensors.index.json").read_text())
    assert index["metadata"]["model_dtype"] == "bfloat16" and index["metadata"]["sample_count"] == str(4 * VQA_PAIRS_PER_PERSON)
    mask_stats = json.loads((tmp_path / "mask" / "mask_stats.json").read_text())
    manifest = json.loads((tmp_path / "unlearned" / "manifest.json").read_text())
    assert manifest["dtype"] == "bfloat16"
    # Without a retain term only masked entries move, through the float32 copy and back.
    assert 0 < manifest["changed_entries"] <= mask_stats["overall"]["selected"]
    changes = json.loads((tmp_path / "unlearned" / "weights.safetensors.index.json").read_text())
    assert changes["metadata"]["changed_entries"] == str(manifest["changed_entries"])
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["multiple_choice"]["likelihood"]["forget_vqa"]["n"] > 0
