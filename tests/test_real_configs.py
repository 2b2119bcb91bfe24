"""The real configs (7B models, hub datasets) plan the paper's whole DAG, and the environment check
that starts a real run says what is missing, without touching the network."""

import json
import re
import shutil

import pytest
import yaml

from pipeline_steps.attacks import get_attack
from pipeline_steps.unlearning.methods import REGISTRY, get_method, uses_fisher_ratio_mask

from helpers import REPO, SMALL, planned_jobs, refusal, snakemake, workspace


REAL_CONFIGS = {
    "mllmu_llava": ("MLLMMU/MLLMU-Bench", "llava-hf/llava-1.5-7b-hf", [5, 10, 15]),
    "mllmu_qwen2_vl": ("MLLMMU/MLLMU-Bench", "Qwen/Qwen2-VL-7B-Instruct", [5, 10, 15]),
    "clear_llava": ("therem/CLEAR", "llava-hf/llava-1.5-7b-hf", [1, 5, 10]),
    "clear_qwen2_vl": ("therem/CLEAR", "Qwen/Qwen2-VL-7B-Instruct", [1, 5, 10]),
}
GPU_RULES = {"check_environment", "finetune_vanilla", "finetune_reference", "compute_fisher", "compute_gradient",
             "compute_neuron_importance",
             "unlearn", "evaluate", "attack", "evaluate_attack"}
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


@pytest.mark.slow
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
    # Every registered method, MMUnlearner once per module group and the rest once each (SalUn at
    # its one mask, from one summed-gradient job per ratio).
    assert set(entry["unlearn"]["methods"]) == set(REGISTRY)
    r, groups = len(ratios), len(config["saliency"]["module_groups"])
    variants = sum(groups if uses_fisher_ratio_mask(get_method(m)) else 1 for m in entry["unlearn"]["methods"])
    attacks = len(entry["attacks"])
    model_attacks = sum(get_attack(a.get("kind", name)).produces_model for name, a in entry["attacks"].items())
    assert {get_attack(a.get("kind", name)).kind for name, a in entry["attacks"].items()} == {"relearn", "quantize", "probe"}
    assert planned_jobs(result) == {
        "check_environment": 1, "prepare_benchmark": 1, "finetune_vanilla": 1, "finetune_reference": r,
        "compute_fisher": r * 4, "compute_gradient": r, "compute_neuron_importance": r * 4, "build_mask": r * groups, "build_salun_mask": r, "unlearn": r * variants, "evaluate": r * (3 + variants),
        "locate_changes": r * (len(entry["unlearn"]["methods"]) + 1), "render_table1": r, "render_equal_forgetting": r,
        "render_case_studies": r, "render_heatmaps": r,
        "render_sweep_table": r, "render_tradeoffs": 1,
        # Each attack entry on vanilla, the oracle and every method at its protocol point (MMUnlearner
        # at module group `all`); the model each relearning or quantization produces is evaluated.
        "attack": r * attacks * (2 + len(entry["unlearn"]["methods"])),
        "evaluate_attack": r * model_attacks * (2 + len(entry["unlearn"]["methods"])), "render_robustness": r, "all": 1}
    # MANU's unlearning job edits weights on the host (one process, no GPU); its statistics job runs on one.
    pruning = sum(not get_method(m).trains for m in entry["unlearn"]["methods"])
    # The baselines the authors ran through LoRA (rank 16, alpha 16) run so, each on one GPU; GA on
    # CLEAR is full-parameter in their code.
    lora = sorted(m for m in entry["unlearn"]["methods"] if (entry["unlearn"].get(m) or {}).get("lora_r"))
    assert lora == (["ga_diff", "kl_min", "npo"] if name.startswith("clear") else ["ga", "ga_diff", "kl_min", "npo"])
    assert all(entry["unlearn"][m]["lora_r"] == entry["unlearn"][m]["lora_alpha"] == 16 for m in lora)
    jobs = dry_run_jobs(result.stdout)
    assert sorted(resources.get("gpu", "0") for rule, resources in jobs if rule == "unlearn") == (
        ["0"] * (r * pruning) + ["1"] * (r * len(lora)) + ["4"] * (r * (variants - pruning - len(lora))))
    for rule, resources in jobs:
        if rule != "unlearn":
            assert resources.get("gpu", "0") == ("1" if rule in GPU_RULES else "0"), (rule, resources)
    for ratio in ratios:
        assert f"forget~{ratio}/eval/mmunlearner/beta~1.0/modules~all/metrics.json" in result.stdout
    finetune = [line for line in result.stdout.splitlines() if "python -m pipeline_steps.finetune " in line]
    unlearn = [line for line in result.stdout.splitlines() if " -m pipeline_steps.unlearn " in line]
    assert len(finetune) == 1 + r and len(unlearn) == r * variants
    assert all("--device auto --dtype bfloat16 --gradient-checkpointing" in line for line in finetune + unlearn)
    # Unlearning shards the model over the job's 4 GPUs (FSDP).
    fsdp = f"accelerate launch --config_file {real_workspace / 'profiles' / 'accelerate' / 'fsdp.yaml'}"
    assert sum(f"{fsdp} --num_processes 4 -m pipeline_steps.unlearn " in line for line in unlearn) == (
        r * (variants - pruning - len(lora)))
    assert sum("--lora-r 16 --lora-alpha 16.0 --lora-dropout 0.05" in line and fsdp not in line
               and "python -m pipeline_steps.unlearn " in line for line in unlearn) == r * len(lora)
    assert sum("--lora" in line for line in unlearn) == r * len(lora)  # a full-parameter job's flags are as before
    assert sum("--method manu" in line and "python -m pipeline_steps.unlearn " in line and fsdp not in line
               for line in unlearn) == r * pruning


def clear_instead(config):
    config["benchmarks"]["mini"] = {"format": "clear", "hub": "therem/CLEAR"}


@pytest.mark.parametrize("change,message", [
    (lambda c: c["benchmarks"]["mini"].update(format="clear"), "benchmarks.mini: format clear cannot be synthesized"),
    (lambda c: (clear_instead(c), c["experiments"][0].update(forget_ratios=[5, 15])),
     "benchmark 'mini' has no forget ratio 15 (its format offers 1, 5, 10)"),
    (lambda c: c["benchmarks"]["mini"].update(test_image_seed=1), "'test_image_seed' was unexpected"),
])
def test_bad_clear_config_is_refused_before_any_job(change, message):
    config = json.loads(json.dumps(SMALL))
    change(config)
    assert message in refusal(config)


# --- the environment check ----------------------------------------------------------------------

@pytest.mark.slow
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
