"""The environment check says what is missing before a real run starts, without touching the
network: hub datasets and models, local copies, and the GPU memory the stages need."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import huggingface_hub
import pytest

from pipeline_steps import check_environment, hub
from pipeline_steps.benchmarks.availability import check_dataset
from pipeline_steps.cli import StageError
from pipeline_steps.models.availability import check_model
from pipeline_steps.models.memory import GIB, ModelShape, RunPlan, memory_estimates

from helpers import REPO, copy_without_config, run_stage


def check(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline_steps.check_environment", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env)


def test_offline_with_an_empty_cache_names_the_dataset_the_model_and_the_fix(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    result = check("--benchmark-name", "clear", "--format", "clear", "--dataset-hub", "therem/CLEAR",
                   "--forget-ratios", "5", "--model-name", "llava_7b", "--model-hub", "llava-hf/llava-1.5-7b-hf",
                   "--device", "cpu", "--dtype", "bfloat16", "--out", tmp_path / "check_environment.json", env=env)
    assert result.returncode != 0
    message = result.stderr
    assert "the environment check found 2 problem(s); nothing was started" in message
    assert "benchmark 'clear' (hub dataset 'therem/CLEAR'): HF_HUB_OFFLINE" in message
    assert "has no copy of the config(s) forget05, forget05+tofu, full, full+tofu" in message
    assert "hf download --repo-type dataset therem/CLEAR --local-dir <dir>" in message
    assert "set benchmarks.clear.path: <dir> instead of hub:" in message
    assert "model 'llava_7b' (hub model 'llava-hf/llava-1.5-7b-hf'): HF_HUB_OFFLINE is set" in message
    assert "set models.llava_7b.path: <dir> instead of hub:" in message
    assert not (tmp_path / "check_environment.json").exists()


def test_an_unreachable_hub_falls_back_to_the_cache_and_says_so(monkeypatch):
    """Hub not switched off but out of reach (faked here: no test touches the network)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(hub, "hub_status", lambda repo, kind: ("unreachable", "ConnectError: no route to host"))
    findings, shape = check_model("qwen", "Qwen/Qwen2-VL-7B-Instruct", local=False)
    assert shape is None
    assert findings[0].problem.startswith("the hub cannot be reached (ConnectError: no route to host), and the "
                                          "local hub cache")
    (finding,) = check_dataset("mllmu", "MLLMMU/MLLMU-Bench", False, ["Full_Set"])
    assert "the hub cannot be reached" in finding.problem and "config(s) Full_Set" in finding.problem
    monkeypatch.setattr(hub, "hub_status", lambda repo, kind: ("reachable", ""))
    assert check_dataset("mllmu", "MLLMMU/MLLMU-Bench", False, ["Full_Set"]) == []


def run_check(*args):
    """The check in this process (torch and transformers are imported once for all calls)."""
    check_environment.main(check_environment.build_parser().parse_args([str(a) for a in args]))


def test_a_cached_model_passes_offline_and_its_gpu_memory_is_estimated(tiny_models, tmp_path, monkeypatch):
    # The model in the local hub cache, laid out as `hf download` leaves it (conftest switched the hub off).
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--org--tiny-llava"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_models["llava"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    common = ["--model-name", "tiny", "--model-hub", "org/tiny-llava", "--dtype", "float32", "--methods", "npo"]
    run_check(*common, "--device", "cpu", "--out", tmp_path / "ok.json")
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["warnings"][0]["problem"].startswith("the hub is switched off; the run will load the copy")
    assert 10_000 < report["shape"]["parameters"] < 10_000_000
    assert set(report["memory_estimates"]) == {"evaluate", "finetune", "compute_fisher", "unlearn", "attack"}

    # A GPU too small for the model: named, with the estimate per stage and the fixes.
    small = [*common, "--device", "cuda", "--gpu-memory-gib", "0.0001", "--out", tmp_path / "no.json"]
    with pytest.raises(StageError) as error:
        run_check(*small)
    message = str(error.value)
    assert "model 'tiny' on device 'cuda': planned GPU has 0.0 GiB, but" in message
    assert "in float32 need an estimated evaluate ~0 GiB" in message and "unlearn ~" in message
    assert "models.tiny.dtype: bfloat16" in message and "MMUNLEARNER_SKIP_MEMORY_CHECK=1" in message
    assert not (tmp_path / "no.json").exists()
    monkeypatch.setenv("MMUNLEARNER_SKIP_MEMORY_CHECK", "1")
    run_check(*small)  # a warning now
    assert "planned GPU has 0.0 GiB" in json.loads((tmp_path / "no.json").read_text())["warnings"][-1]["problem"]

    # Half a snapshot (the weights missing) is as good as none.
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(StageError, match="is incomplete: there are no safetensors weights"):
        run_check(*common, "--device", "cpu", "--out", tmp_path / "broken.json")


@pytest.mark.slow
def test_a_local_copy_missing_a_config_is_named(raw_benchmark, tmp_path):
    copy = copy_without_config(raw_benchmark, tmp_path / "mllmu", "Test_Set")
    result = check("--benchmark-name", "mine", "--format", "mllmu_bench", "--dataset-path", copy,
                   "--forget-ratios", "5", "--model-name", "m", "--out", tmp_path / "p.json")
    assert result.returncode != 0 and f"benchmark 'mine' (local copy {copy}): the copy has no readable config Test_Set" \
        in result.stderr
    run_stage("check_environment", "--benchmark-name", "mine", "--format", "mllmu_bench", "--dataset-path",
              raw_benchmark, "--forget-ratios", "5", "10", "15", "--model-name", "m", "--out", tmp_path / "ok.json")


def test_the_probe_names_the_config_a_local_copy_lacks(raw_benchmark, tmp_path):
    """The probe as the check runs it: a program of its own, with the hub switched off."""
    copy = copy_without_config(raw_benchmark, tmp_path / "mllmu", "Test_Set")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "pipeline_steps.benchmarks.probe_configs", str(copy), "Full_Set",
                             "Test_Set", "--cache-dir", str(tmp_path / "cache")],
                            capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(json.loads(result.stdout.strip().splitlines()[-1])) == ["Test_Set"]


@pytest.mark.parametrize("kind,value", [("dataset", "data/CLEAR"), ("model", "models/llava")])
def test_a_source_is_either_a_hub_id_or_a_local_path(kind, value, capsys):
    parser = check_environment.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--model-name", "m", "--out", "r.json", f"--{kind}-hub", "org/x", f"--{kind}-path", value])
    assert f"argument --{kind}-path: not allowed with argument --{kind}-hub" in capsys.readouterr().err
    args = parser.parse_args(["--model-name", "m", "--out", "r.json", f"--{kind}-path", value])
    assert check_environment.chosen(getattr(args, f"{kind}_hub"), getattr(args, f"{kind}_path")) == (value, True)


def test_memory_estimates_of_the_paper_models():
    """The numbers config/README.md quotes (LLaVA-1.5-7B: 7.06 B parameters, width 4096, 32 layers), but
    for Fisher: this shape leaves out the vision tower and the largest tensor, whose Fisher numbers
    are in test_fisher_estimates_of_the_paper_models_quoted_in_the_config_readme."""
    llava = ModelShape(7_063_427_072, 4096, 32)
    plan = RunPlan(16, 4, 2, 4, 16, ("ga", "ga_diff", "kl_min", "npo", "mmunlearner"))
    bf16 = {stage: e["bytes"] / GIB for stage, e in memory_estimates(llava, "bfloat16", plan).items()}
    fp32 = {stage: e["bytes"] / GIB for stage, e in memory_estimates(llava, "float32", plan).items()}
    assert [round(bf16[s]) for s in ("evaluate", "finetune", "compute_fisher", "unlearn")] == [23, 34, 67, 149]
    # Trained tensors are float32 either way; float32 storage doubles the weights and the reference model.
    assert round(fp32["unlearn"]) == 182 and fp32["finetune"] < 80
    checkpointed = memory_estimates(llava, "bfloat16", replace(plan, gradient_checkpointing=True))
    assert [round(checkpointed[s]["bytes"] / GIB) for s in ("finetune", "compute_fisher", "unlearn")] == [17, 67, 132]
    # More than any one GPU: the check proposes sharding unlearning, over as few GPUs as fit.
    plan = replace(plan, gradient_checkpointing=True)
    sharded = memory_estimates(llava, "bfloat16", replace(plan, unlearn_gpus=4))
    assert round(sharded["unlearn"]["bytes"] / GIB) == 34 and sharded["finetune"] == checkpointed["finetune"]
    (finding,) = check_environment.check_gpu("llava_7b", "auto", "bfloat16", llava, checkpointed,
                                             ("H100", 80 * 10**9), plan)
    assert "need an estimated unlearn ~132 GiB" in finding.problem
    assert "models.llava_7b.unlearn_gpus: 2 (shards unlearning" in finding.fix
    parts = memory_estimates(llava, "bfloat16", plan)["unlearn"]["parts"]
    assert "frozen reference model (KL_Min, NPO)" in parts and "saliency mask (MMUnlearner)" not in parts
    alone = memory_estimates(llava, "bfloat16", RunPlan(16, 4, 2, 4, 16, ("mmunlearner",)))["unlearn"]["parts"]
    assert alone["saliency mask (MMUnlearner)"] == llava.parameters


def test_the_attack_stage_is_estimated_as_its_training_or_as_the_weights():
    """Relearning with LoRA needs what fine-tuning with the same rank and batch needs; with every
    parameter trained, 16 bytes each (more than an 80 GB GPU at 7B); attacks that do not train
    (membership inference, quantization) hold the weights."""
    llava = ModelShape(7_063_427_072, 4096, 32)
    plan = RunPlan(16, 4, 2, 4, 16, ("ga",), gradient_checkpointing=True)
    assert memory_estimates(llava, "bfloat16", plan)["attack"]["parts"] == {"weights": 2 * llava.parameters}
    lora = memory_estimates(llava, "bfloat16", replace(plan, attack_lora_r=16, attack_batch_size=4))
    assert lora["attack"] == lora["finetune"]
    full = memory_estimates(llava, "bfloat16", replace(plan, attack_lora_r=0, attack_batch_size=4))["attack"]
    assert full["parts"]["fp32 weights, gradients and AdamW moments"] == 16 * llava.parameters
    assert full["bytes"] / GIB > 80


def test_a_full_parameter_relearning_attack_that_does_not_fit_is_told_to_use_lora():
    llava = ModelShape(7_063_427_072, 4096, 32)
    plan = RunPlan(16, 4, 2, 4, 16, ("ga",), gradient_checkpointing=True, unlearn_gpus=4, attack_lora_r=0,
                   attack_batch_size=4)
    (finding,) = check_environment.check_gpu("llava_7b", "auto", "bfloat16", llava,
                                             memory_estimates(llava, "bfloat16", plan), ("H100", 80 * 10**9), plan)
    assert "attack ~" in finding.problem and "experiments[].attacks.<name>.lora_r: 16" in finding.fix


LLAVA_7B = ModelShape(7_063_427_072, 4096, 32, vision_hidden=1024, vision_layers=24, vision_patches=577,
                      largest_tensor=131_334_144)  # model_shape of llava-hf/llava-1.5-7b-hf's config
QWEN2_VL_7B = ModelShape(8_291_375_616, 3584, 28, vision_hidden=1280, vision_layers=32, vision_patches=5476,
                         largest_tensor=544_997_376)  # of Qwen/Qwen2-VL-7B-Instruct's, images of 1024 x 1024


def test_the_fisher_estimate_grows_with_the_image_patches_by_the_vision_towers_activations():
    """34 bytes per patch, vision width and vision layer in bf16, per image of the batch."""
    plan = RunPlan(16, 4, 2, 4, 16, ("ga",))

    def fisher(shape):
        return memory_estimates(shape, "bfloat16", plan)["compute_fisher"]

    more = replace(QWEN2_VL_7B, vision_patches=QWEN2_VL_7B.vision_patches + 1000)
    # By hand: 2 images x 34 bytes x 1,000 patches x 1,280 x 32 layers = 2,785,280,000 bytes, + 10 %.
    grown = fisher(more)["parts"]["vision activations"] - fisher(QWEN2_VL_7B)["parts"]["vision activations"]
    assert grown == 2_785_280_000
    assert abs(fisher(more)["bytes"] - fisher(QWEN2_VL_7B)["bytes"] - 3_063_808_000) <= 1
    assert fisher(QWEN2_VL_7B)["parts"]["vision activations"] == 2 * 34 * 5476 * 1280 * 32
    # Nothing else moves; a shape without a vision tower counts none.
    assert {k: v for k, v in fisher(more)["parts"].items() if k != "vision activations"} == \
        {k: v for k, v in fisher(QWEN2_VL_7B)["parts"].items() if k != "vision activations"}
    assert "vision activations" not in fisher(ModelShape(7_063_427_072, 4096, 32))["parts"]


def test_fisher_estimates_of_the_paper_models_quoted_in_the_config_readme():
    """Qwen2-VL-7B at batch 2 needs more than an 80 GB GPU (79.2 GiB visible on an H100) once its
    vision activations count, so its configs compute Fisher one example at a time."""
    def gib(shape, batch):
        plan = RunPlan(16, 4, batch, 4, 16, ("ga",))
        return round(memory_estimates(shape, "bfloat16", plan)["compute_fisher"]["bytes"] / GIB, 1)

    assert (gib(LLAVA_7B, 2), gib(QWEN2_VL_7B, 2), gib(QWEN2_VL_7B, 1)) == (55.6, 81.6, 70.2)
    parts = memory_estimates(QWEN2_VL_7B, "bfloat16", RunPlan(16, 4, 1, 4, 16, ("ga",)))["compute_fisher"]["parts"]
    assert parts["largest gradient and its fp32 per-example products"] == 544_997_376 * (2 + 12)


def test_patches_per_image_of_a_fixed_size_and_of_a_dynamic_resolution_tower():
    from types import SimpleNamespace

    from pipeline_steps.models.memory import image_patches
    assert image_patches(SimpleNamespace(image_size=336, patch_size=14)) == 577  # CLIP ViT-L/14-336 + class token
    qwen = SimpleNamespace(image_size=None, patch_size=14, spatial_merge_size=2)
    assert image_patches(qwen) == 74 * 74 and image_patches(qwen, side=448) == 32 * 32
