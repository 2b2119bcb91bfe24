"""The Snakemake workflow: config checks before any job, and a small end-to-end run."""

import copy
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from pipeline_steps.benchmarks.synthetic.world import ATTRIBUTES, VQA_TAUGHT_ATTRIBUTES

from helpers import (VQA_PAIRS_PER_PERSON, REPO, SMALL, planned_jobs, pretend_run, refusal, snakemake, workflow_env, workspace,
                     write_config)


def broken(change) -> dict:
    config = copy.deepcopy(SMALL)
    change(config)
    return config


@pytest.mark.parametrize("config,message", [
    (broken(lambda c: c["experiments"][0].update(model="mini_qwen")),
     "names model 'mini_qwen', which is not defined under 'models'"),
    (broken(lambda c: c["experiments"][0].update(benchmark="mllmu")),
     "names benchmark 'mllmu', which is not defined under 'benchmarks'"),
    (broken(lambda c: c["experiments"][0].update(forget_ratios=[7])),
     "benchmark 'mini' has no forget ratio 7"),
    (broken(lambda c: c["benchmarks"]["mini"].update(path="/no/such/dir") or c["benchmarks"]["mini"].pop("synthetic")),
     "benchmarks.mini.path: '/no/such/dir' is not a directory"),
    (broken(lambda c: c["evaluation"].update(batch_sise=8)), "'batch_sise' was unexpected"),
    (broken(lambda c: c["models"]["mini_llava"]["tiny"].update(family="llama")), "'llama' is not one of"),
    (broken(lambda c: c["evaluation"].update(primary="generate", scoring=["likelihood"])),
     "evaluation.primary 'generate' is not one of evaluation.scoring"),
    (broken(lambda c: c["saliency"].update(preserve=["real_text"])),
     "saliency.preserve uses Fisher split 'real_text', which is not in saliency.fisher_splits"),
    (broken(lambda c: c["saliency"].update(module_groups=["decoder"])), "'decoder' is not one of"),
    (broken(lambda c: c["saliency"].update(fisher_splits=["forget_vqa", "forget_audio"])),
     "saliency.fisher_splits: 'forget_audio' is not a Fisher split"),
    (broken(lambda c: c["experiments"][0]["unlearn"]["methods"].append("undial")),
     "experiments[1].unlearn.methods[5]: 'undial' is not one of"),
    (broken(lambda c: c["experiments"][0]["unlearn"]["npo"].update(gamma=1.0)),
     "experiments[1].unlearn.npo: Additional properties are not allowed ('gamma' was unexpected)"),
    # A method without a retain term has no retain schedule; a method with one takes the two schedules.
    (broken(lambda c: c["experiments"][0]["unlearn"]["npo"].update(retain_schedule="all_per_epoch")),
     "experiments[1].unlearn.npo: Additional properties are not allowed ('retain_schedule' was unexpected)"),
    (broken(lambda c: c["experiments"][0]["unlearn"].update(ga_diff={"retain_schedule": "every_epoch"})),
     "experiments[1].unlearn.ga_diff.retain_schedule: 'every_epoch' is not one of ['one_per_step', 'all_per_epoch']"),
    (broken(lambda c: c["experiments"][0]["unlearn"]["npo"].update(beta=0)),
     "experiments[1].unlearn.npo.beta: 0 is less than or equal to the minimum of 0"),
    (broken(lambda c: c["experiments"][0]["unlearn"]["shared"].pop("epochs")),
     "unlearning setting 'epochs' of method 'ga' has no default; set it under unlearn.shared or unlearn.ga"),
])
def test_bad_config_is_refused_with_the_key_to_fix(config, message):
    """Checked in this process as ``common.smk`` checks it; the test below runs two through Snakemake."""
    assert message in refusal(config)
    assert refusal(SMALL) == ""


@pytest.mark.parametrize("change,message", [
    (lambda c: c["evaluation"].update(batch_sise=8), "'batch_sise' was unexpected"),  # the schema
    (lambda c: c["experiments"][0].update(forget_ratios=[7]), "benchmark 'mini' has no forget ratio 7"),
])
def test_bad_config_stops_snakemake_before_any_job(tmp_path, change, message):
    workspace(tmp_path, broken(change))
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


PLANNING_IMPORTS = """
import runpy, sys
sys.argv = ["snakemake", "-n", "--quiet"]
try:
    runpy.run_module("snakemake", run_name="__main__")
except SystemExit as finished:
    assert not finished.code, finished.code
print(sorted(m for m in ("torch", "transformers", "accelerate", "datasets", "scipy.stats") if m in sys.modules))
"""


def test_planning_a_study_imports_no_torch(tmp_path):
    """Snakemake parses the workflow on every dry run and again in every cluster job; the
    methods' and attacks' declarations it reads import torch only where they compute (the
    import was 4 of a small config's 7.5 s dry run)."""
    workspace(tmp_path, SMALL)
    result = subprocess.run([sys.executable, "-c", PLANNING_IMPORTS], capture_output=True, text=True,
                            env=workflow_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.slow
def test_end_to_end_small_config(small_study):
    study = small_study  # the fixture ran the workflow; this test checks it, then edits it
    base = study / "results" / "mini" / "mini_llava"
    for variant in ("base", "vanilla", "oracle"):
        metrics = json.loads((base / "forget~10" / "eval" / variant / "metrics.json").read_text())
        assert metrics["primary_scoring"] == "likelihood"
        assert set(metrics["table"]) == {"forget_vqa", "forget_qa", "retain_vqa", "retain_qa", "real_vqa",
                                         "real_qa", "test_vqa"}
        counts = metrics["multiple_choice"]["likelihood"]
        assert counts["forget_vqa"]["n"] == 2 * VQA_TAUGHT_ATTRIBUTES  # the coupling facts are no column
        assert counts["retain_qa"]["n"] == 18 * len(ATTRIBUTES)
        assert all(0 <= value <= 1 for value in metrics["table"].values())
        lines = (base / "forget~10" / "eval" / variant / "predictions.jsonl").read_text().splitlines()
        assert len(lines) >= sum(c["n"] for c in counts.values())
    assert (base / "vanilla" / "model.safetensors").exists()
    assert json.loads((base / "vanilla" / "finetune_manifest.json").read_text())["lora"]["r"] == 4
    assert (study / "logs" / "timings" / "evaluate" / "mini" / "mini_llava" / "forget~10" / "vanilla.tsv").exists()

    ratio = base / "forget~10"
    fisher = json.loads((ratio / "fisher" / "retain_vqa.safetensors.index.json").read_text())
    # Each retain person's image pairs: who they are, and each face fact openly and lettered.
    assert fisher["metadata"]["sample_count"] == str(18 * VQA_PAIRS_PER_PERSON)
    instrument = json.loads((base / "instrument" / "instrument.json").read_text())
    assert set(instrument["columns"]) == {"base (forget 10%)", "vanilla (forget 10%)", "oracle (forget 10%)"}
    assert instrument["diagnostics"]["vanilla"]["coupling"]["likelihood"]["n"] == 20 * (
        len(ATTRIBUTES) - VQA_TAUGHT_ATTRIBUTES)
    stats = json.loads((ratio / "masks" / "beta~1.0" / "modules~all" / "mask_stats.json").read_text())
    assert 0 < stats["overall"]["fraction"] < 1
    unlearned = ("ga", "ga_diff", "kl_min", "npo", "mmunlearner/beta~1.0/modules~all")
    for variant in unlearned:
        manifest = json.loads((ratio / "unlearn" / variant / "manifest.json").read_text())
        assert manifest["method"] == variant.split("/")[0]
        metrics = json.loads((ratio / "eval" / variant / "metrics.json").read_text())
        assert set(metrics["table"]) >= {"forget_vqa", "retain_qa"}
    assert (ratio / "reference" / "model.safetensors").exists()

    tables, figures = study / "results" / "tables", study / "results" / "figures" / "mini" / "mini_llava"
    table1 = (tables / "table1_forget~10.md").read_text()
    for row in ("Vanilla", "Oracle (retain only)", "GA", "GA_Diff", "KL_Min", "NPO", "MMUnlearner"):
        assert f"| {row} |" in table1
    assert " ± " in table1  # every value with its interval
    equal = (tables / "equal_forgetting_forget~10.md").read_text()
    assert "| MMUnlearner |" in equal and "reported on the other half" in equal
    assert (tables / "table1_forget~10.tex").exists() and (tables / "table1_forget~10.csv").exists()
    assert (tables / "mini" / "mini_llava" / "case_studies_forget~10.md").exists()
    for figure in ("layer_heatmap_forget~10", "tradeoff"):
        assert (figures / f"{figure}.png").stat().st_size > 10_000 and (figures / f"{figure}.pdf").exists()
    heatmap = json.loads((ratio / "changes" / "ga.json").read_text())
    assert heatmap["requested"] == stats["overall"]["selected"]

    assert "Nothing to be done" in snakemake(study, "-n").stdout
    # Deleting one figure rebuilds that figure's job and nothing else.
    (figures / "layer_heatmap_forget~10.png").unlink()
    assert planned_jobs(snakemake(study, "-n")) == {"render_heatmaps": 1, "all": 1}
    assert snakemake(study, "--cores", "2").returncode == 0
    report = snakemake(study, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    assert (study / "report.html").stat().st_size > 100_000

    sweep = copy.deepcopy(SMALL)
    sweep["saliency"]["betas"] = [1.0, 2.0]
    write_config(study, sweep)
    # A beta sweep adds masks and what uses them; no Fisher, fine-tuning or baseline job.
    assert planned_jobs(snakemake(study, "-n")) == {"build_mask": 1, "unlearn": 1, "evaluate": 1,
                                                       "render_sweep_table": 1, "all": 1}

    # One method's own setting reruns that method's jobs and what reads them, no other method's.
    npo = copy.deepcopy(SMALL)
    npo["experiments"][0]["unlearn"]["npo"]["beta"] = 0.2
    write_config(study, npo)
    planned = snakemake(study, "-n")
    assert planned_jobs(planned) == {"unlearn": 1, "evaluate": 1, "locate_changes": 1, "render_table1": 1,
                                     "render_equal_forgetting": 1, "render_case_studies": 1, "render_tradeoffs": 1,
                                     "render_heatmaps": 1, "all": 1}
    assert "output: results/mini/mini_llava/forget~10/unlearn/npo/weights" in planned.stdout

    changed = copy.deepcopy(SMALL)
    changed["evaluation"]["max_new_tokens"] = 5
    write_config(study, changed)
    evaluations = 3 + len(unlearned)  # base, vanilla, the oracle and the unlearned variants
    # The reports, and the instrument diagnostics, which list base, vanilla and the oracle's columns.
    renders = {"render_table1": 1, "render_equal_forgetting": 1, "render_case_studies": 1, "render_tradeoffs": 1,
               "measure_instrument": 1}
    assert planned_jobs(snakemake(study, "-n")) == {"evaluate": evaluations, **renders, "all": 1}
    write_config(study, SMALL)

    # Editing a stage's code reruns that stage and what depends on it, nothing upstream.
    scoring = study / "pipeline_steps" / "evaluation" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\n# edited\n")
    assert planned_jobs(snakemake(study, "-n")) == {"evaluate": evaluations, **renders, "all": 1}
    # (The base model's evaluation is still pending from the scoring edit, a dry run changes nothing.)
    finetune = study / "pipeline_steps" / "finetune.py"
    finetune.write_text(finetune.read_text() + "\n# edited\n")
    assert planned_jobs(snakemake(study, "-n")) == {
        "finetune_vanilla": 1, "finetune_reference": 1, "compute_fisher": 4, "build_mask": 1,
        "unlearn": len(unlearned), "evaluate": evaluations, "locate_changes": len(unlearned) + 1, **renders,
        "render_heatmaps": 1, "all": 1}


@pytest.mark.slow
def test_adding_a_sweep_value_plans_only_the_new_points_and_the_reports(tmp_path):
    """A learning-rate axis of one value, pretended run; appending a second value plans the new
    points' unlearning and evaluation (one per method) and the reports that read every point, and
    renames, reruns or re-reports nothing else (Table 1 stays at the protocol point)."""
    config = copy.deepcopy(SMALL)
    config["experiments"][0]["unlearn"]["shared"]["learning_rate"] = [1.0e-3]
    workspace(tmp_path, config)
    pretend_run(tmp_path)
    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout
    config["experiments"][0]["unlearn"]["shared"]["learning_rate"] = [1.0e-3, 3.0e-4]
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "-n")
    methods = len(config["experiments"][0]["unlearn"]["methods"])
    assert planned_jobs(planned) == {"unlearn": methods, "evaluate": methods, "render_equal_forgetting": 1,
                                     "render_tradeoffs": 1, "all": 1}
    assert "output: results/mini/mini_llava/forget~10/unlearn/ga_diff/lr~0.0003/weights" in planned.stdout
    assert "unlearn/mmunlearner/beta~1.0/modules~all/lr~0.0003/weights" in planned.stdout


def test_pretraining_takes_its_own_thread_count_and_no_other_job_does(tmp_path):
    """``tiny.pretrain.threads`` reaches the build_base job (Snakemake's threads and the stage's
    --threads, not the pretraining flags twice); every other job keeps the model's ``threads``."""
    config = copy.deepcopy(SMALL)
    config["models"]["mini_llava"]["tiny"]["pretrain"]["threads"] = 2
    workspace(tmp_path, config)
    planned = snakemake(tmp_path, "-n", "-p", "--cores", "2", "results/mini/mini_llava/vanilla")
    assert planned.returncode == 0, planned.stderr[-3000:]
    commands = [line for line in planned.stdout.splitlines() if line.startswith("Shell command: python -m")]
    build = [c for c in commands if "pipeline_steps.build_base" in c]
    assert len(build) == 1 and build[0].count("--threads") == 1 and "--threads 2" in build[0]
    others = [c for c in commands if "pipeline_steps.build_base" not in c and "--threads" in c]
    assert others and all("--threads 1" in c for c in others)


@pytest.mark.slow
def test_the_study_config_is_the_embedded_default_with_a_larger_sweep(tmp_path):
    """config/study.yaml, layered on the embedded default: the same experiment but for its unlearn
    block, and a dry run plans 4 learning rates x 2 epoch counts x 3 seeds per method, each point
    evaluated once, with the same single-point reports."""
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study = yaml.safe_load((REPO / "config" / "study.yaml").read_text())
    assert set(study) == {"experiments", "saliency"} and set(study["saliency"]) == {"controls"}
    # The study sweeps unlearning and attacks nothing (its 365 jobs are the unlearning sweep).
    strip = [{k: v for k, v in e.items() if k not in ("unlearn", "attacks")}
             for e in (default["experiments"][0], study["experiments"][0])]
    assert strip[0] == strip[1]
    workspace(tmp_path, default)
    shutil.copy(REPO / "config" / "study.yaml", tmp_path / "config" / "study.yaml")
    planned = snakemake(tmp_path, "-n", "--configfile", "config/study.yaml")
    assert planned.returncode == 0, planned.stderr[-3000:]
    jobs = planned_jobs(planned)
    # MANU takes no gradient step: its own axis (pruned fraction) replaces the loop's 24 points.
    block = study["experiments"][0]["unlearn"]
    rows = len(block["methods"]) - 1 + len(study["saliency"]["controls"])
    # And the default's calibrated runs: every row (MANU's too) at its protocol point, once per seed.
    calibrated = (rows + 1) * len(default["comparison"]["calibration"]["seeds"])
    assert jobs["unlearn"] == rows * 4 * 2 * 3 + len(block["manu"]["prune_fraction"]) + calibrated
    assert jobs["evaluate"] == jobs["unlearn"] + 3  # base, vanilla, oracle
    assert jobs["build_mask"] == 1 and jobs["build_control_mask"] == 2
    assert jobs["render_table1"] == jobs["render_equal_forgetting"] == jobs["render_tradeoffs"] == 1
    assert "unlearn/mmunlearner/beta~1.0/modules~all/epochs~4/lr~0.0001/seed~2/weights" in planned.stdout
    assert "unlearn/mmunlearner/beta~1.0/modules~all/control~random/epochs~2/lr~0.0003/seed~0/weights" in planned.stdout
    assert "unlearn/calibrated/mmunlearner/beta~1.0/modules~all/epochs~2/lr~0.0003/seed~2/weights" in planned.stdout


@pytest.mark.slow
def test_salun_plans_its_gradient_its_mask_and_its_own_jobs(tmp_path):
    """SalUn added to the small config: a dry run plans the forget split's summed-gradient job (the
    Fisher stage's ``gradient`` estimator), SalUn's mask from it, and SalUn's unlearn and evaluate
    jobs reading that mask; a second mask fraction adds one mask and its variant's jobs."""
    config = copy.deepcopy(SMALL)
    block = config["experiments"][0]["unlearn"]
    block["methods"].append("salun")
    workspace(tmp_path, config)
    planned = snakemake(tmp_path, "-n", "--printshellcmds")
    assert planned.returncode == 0, planned.stderr[-3000:]
    jobs, methods = planned_jobs(planned), len(block["methods"])
    assert jobs["compute_gradient"] == 1 and jobs["build_salun_mask"] == 1 and jobs["compute_fisher"] == 4
    assert jobs["build_mask"] == 1 and jobs["unlearn"] == methods and jobs["evaluate"] == methods + 3
    run = "results/mini/mini_llava/forget~10"
    assert (f"--split forget_vqa --out {run}/gradient/forget_vqa --estimator gradient" in planned.stdout)
    assert (f"build_mask --salun 0.5 --target {run}/gradient/forget_vqa.safetensors.index.json"
            in planned.stdout)
    assert "--method salun" in planned.stdout and f"--mask {run}/masks/salun/fraction~0.5" in planned.stdout
    assert f"{run}/eval/salun/metrics.json" in planned.stdout

    block["salun"] = {"mask_fraction": [0.5, 0.2]}
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "-n", "--printshellcmds")
    jobs = planned_jobs(planned)
    assert jobs["compute_gradient"] == 1 and jobs["build_salun_mask"] == 2 and jobs["unlearn"] == methods + 1
    assert f"{run}/masks/salun/fraction~0.2/mask_stats.json" in planned.stdout
    assert f"{run}/eval/salun/mask_fraction~0.2/metrics.json" in planned.stdout
IDENTITY_ATTACK = '''"""A test's attack kind: the model as it is (what the evaluation of an attacked model reads)."""
from dataclasses import dataclass

from . import Attack, register


@dataclass(frozen=True)
class NoSettings:
    pass


@register
class Identity(Attack):
    kind, label = "identity", "Identity"
    Settings = NoSettings
    produces_model = True

    def run(self, target, settings, scratch):
        return {}
'''


@pytest.mark.slow
def test_adding_an_attack_kind_is_one_module_and_one_config_entry(tmp_path):
    """With membership inference configured and a pretended run, a new attack kind (a module in
    pipeline_steps/attacks/) and its config entry plan that kind's jobs (vanilla, the oracle and
    every method at its protocol point, each attacked and evaluated) and the robustness table,
    nothing else; changing its settings plans its jobs again and no other attack's."""
    config = copy.deepcopy(SMALL)
    config["benchmarks"]["mini"]["synthetic"]["holdout_profiles"] = 4
    attacks = config["experiments"][0]["attacks"] = {"mia": {"variants": "protocol"}}
    workspace(tmp_path, config)
    planned = snakemake(tmp_path, "-n")
    assert planned.returncode == 0, planned.stderr[-3000:]
    rows = 2 + len(config["experiments"][0]["unlearn"]["methods"])  # vanilla, the oracle, each method
    jobs = planned_jobs(planned)
    assert jobs["attack"] == rows and "evaluate_attack" not in jobs and jobs["render_robustness"] == 1
    assert "results/mini/mini_llava/forget~10/attacks/mia/oracle/attack.json" in planned.stdout
    pretend_run(tmp_path)
    (tmp_path / "pipeline_steps" / "attacks" / "identity.py").write_text(IDENTITY_ATTACK)
    attacks["identity"] = {}
    write_config(tmp_path, config)
    planned = snakemake(tmp_path, "-n")
    assert planned_jobs(planned) == {"attack": rows, "evaluate_attack": rows, "render_robustness": 1, "all": 1}
    assert "attacks/identity/eval/mmunlearner/beta~1.0/modules~all/metrics.json" in planned.stdout
    assert "output: results/mini/mini_llava/forget~10/attacks/mia/" not in planned.stdout

    # Another entry of an existing kind, with its own settings: its jobs only.
    attacks["relearn_retain"] = {"kind": "relearn", "data": "retain"}
    write_config(tmp_path, config)
    jobs = planned_jobs(snakemake(tmp_path, "-n"))
    assert jobs == {"attack": 2 * rows, "evaluate_attack": 2 * rows, "render_robustness": 1, "all": 1}
