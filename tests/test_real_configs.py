"""The real configs (7B models, hub datasets) plan the paper's whole DAG, and the pre-flight check
that starts a real run says what is missing, without touching the network."""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace

from pathlib import Path

import huggingface_hub
import pytest
import yaml

from conftest import REPO, copy_without_config, run_stage
from pipeline_steps import check_environment as preflight
from pipeline_steps.check_environment import GIB, ModelShape, RunPlan, memory_estimates
from pipeline_steps.cli import StageError
from test_workflow import SMALL, planned_jobs, snakemake, workspace

REAL_CONFIGS = {
    "mllmu_llava": ("MLLMMU/MLLMU-Bench", "llava-hf/llava-1.5-7b-hf", [5, 10, 15]),
    "mllmu_qwen2_vl": ("MLLMMU/MLLMU-Bench", "Qwen/Qwen2-VL-7B-Instruct", [5, 10, 15]),
    "clear_llava": ("therem/CLEAR", "llava-hf/llava-1.5-7b-hf", [1, 5, 10]),
    "clear_qwen2_vl": ("therem/CLEAR", "Qwen/Qwen2-VL-7B-Instruct", [1, 5, 10]),
}
GPU_RULES = {"check_environment", "finetune_vanilla", "finetune_reference", "compute_fisher", "unlearn", "evaluate"}
# The paper's hyper-parameters (appendix B.3, Tables 4 and 5): fine-tuning batch and learning rate.
PAPER_FINETUNE = {"mllmu_llava": (4, 2e-5), "mllmu_qwen2_vl": (4, 1e-5), "clear_llava": (3, 2e-5),
                  "clear_qwen2_vl": (5, 1e-5)}


def dry_run_jobs(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    jobs, rule = [], None
    for line in stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line)
        if match:
            rule = match.group(1)
            jobs.append((rule, {}))
        elif rule and line.startswith("    resources: "):
            jobs[-1][1].update(part.split("=", 1) for part in line.split(": ", 1)[1].split(", "))
    return jobs


@pytest.fixture(scope="module")
def real_workspace(tmp_path_factory):
    root = workspace(tmp_path_factory.mktemp("real"), yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    for name in REAL_CONFIGS:
        shutil.copy(REPO / "config" / f"{name}.yaml", root / "config")
    return root


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_config_plans_the_paper_dag_with_a_gpu_per_gpu_stage(real_workspace, name):
    dataset, model, ratios = REAL_CONFIGS[name]
    config = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    (entry,) = config["experiments"]
    (benchmark,) = config["benchmarks"].values()
    (model_entry,) = config["models"].values()
    assert (benchmark["hub"], model_entry["hub"], entry["forget_ratios"]) == (dataset, model, ratios)
    assert model_entry["device"] == "auto" and model_entry["dtype"] == "bfloat16"
    assert (entry["finetune"]["batch_size"], entry["finetune"]["learning_rate"]) == PAPER_FINETUNE[name]
    assert entry["finetune"]["epochs"] == 4 and entry["finetune"]["lora_r"] > 0
    shared = entry["unlearn"]["shared"]
    assert (shared["epochs"], shared["batch_size"]) == (2, 4)
    assert shared["learning_rate"] == PAPER_FINETUNE[name][1] and entry["unlearn"]["npo"]["beta"] == 0.4

    result = snakemake(real_workspace, "-n", "--printshellcmds", "--configfile", f"config/{name}.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (real_workspace / "results").exists()
    r, groups = len(ratios), len(config["saliency"]["module_groups"])
    variants = 4 + groups  # four baselines, MMUnlearner per module group
    assert planned_jobs(result) == {
        "check_environment": 1, "prepare_benchmark": 1, "finetune_vanilla": 1, "finetune_reference": r,
        "compute_fisher": r * 4, "build_mask": r * groups, "unlearn": r * variants, "evaluate": r * (2 + variants),
        "locate_changes": r * 6, "render_table1": r, "render_case_studies": r, "render_heatmaps": r,
        "render_sweep_table": r, "render_tradeoffs": 1, "all": 1}
    for rule, resources in dry_run_jobs(result.stdout):
        expected = ("4" if rule == "unlearn" else "1") if rule in GPU_RULES else None
        assert resources.get("gpu", "0") == (expected or "0"), (rule, resources)
    for ratio in ratios:
        assert f"forget~{ratio}/eval/mmunlearner/beta~1.0/modules~all/metrics.json" in result.stdout
    finetune = [line for line in result.stdout.splitlines() if "python -m pipeline_steps.finetune " in line]
    unlearn = [line for line in result.stdout.splitlines() if " -m pipeline_steps.unlearn " in line]
    assert len(finetune) == 1 + r and len(unlearn) == r * variants
    assert all("--device auto --dtype bfloat16 --gradient-checkpointing" in line for line in finetune + unlearn)
    # Unlearning shards the model over the job's 4 GPUs (FSDP).
    fsdp = f"accelerate launch --config_file {real_workspace / 'profiles' / 'accelerate' / 'fsdp.yaml'}"
    assert all(f"{fsdp} --num_processes 4 -m pipeline_steps.unlearn " in line for line in unlearn)


def clear_instead(config):
    config["benchmarks"]["mini"] = {"format": "clear", "hub": "therem/CLEAR"}


@pytest.mark.parametrize("change,message", [
    (lambda c: c["benchmarks"]["mini"].update(format="clear"), "benchmarks.mini: format clear cannot be synthesized"),
    (lambda c: (clear_instead(c), c["experiments"][0].update(forget_ratios=[5, 15])),
     "benchmark 'mini' has no forget ratio 15 (its format offers 1, 5, 10)"),
    (lambda c: c["benchmarks"]["mini"].update(test_image_seed=1), "'test_image_seed' was unexpected"),
])
def test_bad_clear_config_stops_before_any_job(tmp_path, change, message):
    config = json.loads(json.dumps(SMALL))
    change(config)
    workspace(tmp_path, config)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


# --- the pre-flight check ----------------------------------------------------------------------

def check(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline_steps.check_environment", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, env=env)


def test_offline_with_an_empty_cache_names_the_dataset_the_model_and_the_fix(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"))
    result = check("--benchmark-name", "clear", "--format", "clear", "--dataset", "therem/CLEAR",
                   "--forget-ratios", "5", "--model-name", "llava_7b", "--model", "llava-hf/llava-1.5-7b-hf",
                   "--device", "cpu", "--dtype", "bfloat16", "--out", tmp_path / "preflight.json", env=env)
    assert result.returncode != 0
    message = result.stderr
    assert "found 2 problem(s); nothing was started" in message
    assert "benchmark 'clear' (hub dataset 'therem/CLEAR'): HF_HUB_OFFLINE" in message
    assert "has no copy of the config(s) forget05, forget05+tofu, full, full+tofu" in message
    assert "hf download --repo-type dataset therem/CLEAR --local-dir <dir>" in message
    assert "set benchmarks.clear.path: <dir> instead of hub:" in message
    assert "model 'llava_7b' (hub model 'llava-hf/llava-1.5-7b-hf'): HF_HUB_OFFLINE is set" in message
    assert "set models.llava_7b.path: <dir> instead of hub:" in message
    assert not (tmp_path / "preflight.json").exists()


def test_an_unreachable_hub_falls_back_to_the_cache_and_says_so(monkeypatch):
    """Hub not switched off but out of reach (faked here: no test touches the network)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(preflight, "hub_status", lambda repo, kind: ("unreachable", "ConnectError: no route to host"))
    findings, config_source = preflight.check_model("qwen", "Qwen/Qwen2-VL-7B-Instruct", local=False)
    assert config_source is None
    assert findings[0].problem.startswith("the hub cannot be reached (ConnectError: no route to host), and the "
                                          "local hub cache")
    (finding,) = preflight.check_dataset("mllmu", "MLLMMU/MLLMU-Bench", False, ["Full_Set"])
    assert "the hub cannot be reached" in finding.problem and "config(s) Full_Set" in finding.problem
    monkeypatch.setattr(preflight, "hub_status", lambda repo, kind: ("reachable", ""))
    assert preflight.check_dataset("mllmu", "MLLMMU/MLLMU-Bench", False, ["Full_Set"]) == []


def run_check(*args):
    """The check in this process (torch and transformers are imported once for all calls)."""
    preflight.main(preflight.build_parser().parse_args([str(a) for a in args]))


def test_a_cached_model_passes_offline_and_its_gpu_memory_is_estimated(tiny_models, tmp_path, monkeypatch):
    # The model in the local hub cache, laid out as `hf download` leaves it (conftest switched the hub off).
    repo = Path(huggingface_hub.constants.HF_HUB_CACHE) / "models--org--tiny-llava"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_models["llava"], snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    common = ["--model-name", "tiny", "--model", "org/tiny-llava", "--dtype", "float32", "--methods", "npo"]
    run_check(*common, "--device", "cpu", "--out", tmp_path / "ok.json")
    report = json.loads((tmp_path / "ok.json").read_text())
    assert report["warnings"][0]["problem"].startswith("the hub is switched off; the run will load the copy")
    assert 10_000 < report["shape"]["parameters"] < 10_000_000
    assert set(report["memory_estimates"]) == {"evaluate", "finetune", "compute_fisher", "unlearn"}

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


def test_a_local_copy_missing_a_config_is_named(raw_benchmark, tmp_path):
    copy = copy_without_config(raw_benchmark, tmp_path / "mllmu", "Test_Set")
    result = check("--benchmark-name", "mine", "--format", "mllmu_bench", "--dataset", copy, "--forget-ratios", "5",
                   "--model-name", "m", "--out", tmp_path / "p.json")
    assert result.returncode != 0 and f"benchmark 'mine' (local copy {copy}): the copy has no readable config Test_Set" \
        in result.stderr
    run_stage("check_environment", "--benchmark-name", "mine", "--format", "mllmu_bench", "--dataset", raw_benchmark,
              "--forget-ratios", "5", "10", "15", "--model-name", "m", "--out", tmp_path / "ok.json")


def test_memory_estimates_of_the_paper_models():
    """The numbers config/README.md quotes (LLaVA-1.5-7B: 7.06 B parameters, width 4096, 32 layers)."""
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
    (finding,) = preflight.check_gpu("llava_7b", "auto", "bfloat16", llava, checkpointed, ("H100", 80 * 10**9), plan)
    assert "need an estimated unlearn ~132 GiB" in finding.problem
    assert "models.llava_7b.unlearn_gpus: 2 (shards unlearning" in finding.fix
    parts = memory_estimates(llava, "bfloat16", plan)["unlearn"]["parts"]
    assert "frozen reference model (KL_Min, NPO)" in parts and "saliency mask (MMUnlearner)" not in parts
    alone = memory_estimates(llava, "bfloat16", RunPlan(16, 4, 2, 4, 16, ("mmunlearner",)))["unlearn"]["parts"]
    assert alone["saliency mask (MMUnlearner)"] == llava.parameters


def test_the_workflow_runs_the_check_first_and_shows_its_findings(tmp_path, tiny_models):
    config = json.loads(json.dumps(SMALL))
    config["models"]["mini_llava"] = {"path": str(tiny_models["llava"]), "device": "cpu", "dtype": "float32",
                                      "threads": 1}
    workspace(tmp_path, config)
    planned = snakemake(tmp_path, "-n")
    assert planned.returncode == 0, planned.stderr[-2000:]
    assert "build_base" not in planned_jobs(planned) and planned_jobs(planned)["check_environment"] == 1
    result = snakemake(tmp_path, "--cores", "1", "results/mini/mini_llava/check_environment.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "results/mini/mini_llava/check_environment.json").read_text())["shape"]["layers"] == 2

    config["benchmarks"]["mini"] = {"format": "mllmu_bench", "hub": "MLLMMU/MLLMU-Bench"}
    workspace(tmp_path / "hub", config)
    failed = snakemake(tmp_path / "hub", "--cores", "1", "results/mini/mini_llava/check_environment.json")
    assert failed.returncode != 0
    assert "benchmark 'mini' (hub dataset 'MLLMMU/MLLMU-Bench'): HF_HUB_OFFLINE" in failed.stderr
