"""The Snakemake workflow: config checks before any job, and a small end-to-end run."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from pipeline_steps.benchmarks.synthetic.world import ATTRIBUTES

SMALL = {
    "benchmarks": {"mini": {"format": "mllmu_bench", "test_image_seed": 0,
                            "synthetic": {"seed": 1, "fictitious_profiles": 20, "real_profiles": 4,
                                          "image_size": 32, "test_images": 2}}},
    "models": {"mini_llava": {
        "tiny": {"family": "llava", "seed": 0,
                 "architecture": {"image_size": 32, "patch_size": 8, "vision_hidden": 32, "vision_layers": 2,
                                  "vision_heads": 2, "text_hidden": 64, "text_layers": 2, "text_heads": 2,
                                  "vocab_size": 600},
                 "pretrain": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "views": 1,
                              "perception_faces": 8}},
        "device": "cpu", "dtype": "float32", "threads": 1}},
    "experiments": [{"benchmark": "mini", "model": "mini_llava", "forget_ratios": [10],
                     "finetune": {"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "lora_r": 4,
                                  "lora_alpha": 8, "lora_dropout": 0.0, "modalities": ["vqa", "text"]}}],
    "evaluation": {"scoring": ["likelihood", "generate"], "primary": "likelihood", "batch_size": 32,
                   "max_new_tokens": 3, "seed": 0},
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the workflow of ``workdir`` (a copy of the repository) from that directory."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True, env=env,
                          cwd=workdir)


def workspace(root: Path, config: dict) -> Path:
    """A copy of the workflow and the package, which a test may edit, with ``config`` as default."""
    for part in ("workflow", "pipeline_steps"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "environment.yml", root)
    write_config(root, config)
    return root


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from a dry run's summary table."""
    jobs, in_table = {}, False
    for line in result.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            jobs[parts[0]] = int(parts[1])
    return jobs


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
])
def test_bad_config_stops_before_any_job(tmp_path, config, message):
    workspace(tmp_path, config)
    result = snakemake(tmp_path, "-n")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_end_to_end_small_config(tmp_path):
    workspace(tmp_path, SMALL)
    result = snakemake(tmp_path, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    base = tmp_path / "results" / "mini" / "mini_llava"
    for variant in ("base", "vanilla"):
        metrics = json.loads((base / "forget~10" / "eval" / variant / "metrics.json").read_text())
        assert metrics["primary_scoring"] == "likelihood"
        assert set(metrics["table"]) == {"forget_vqa", "forget_qa", "retain_vqa", "retain_qa", "real_vqa",
                                         "real_qa", "test_vqa"}
        counts = metrics["multiple_choice"]["likelihood"]
        assert counts["forget_vqa"]["n"] == 2 * len(ATTRIBUTES) and counts["retain_qa"]["n"] == 18 * len(ATTRIBUTES)
        assert all(0 <= value <= 1 for value in metrics["table"].values())
        lines = (base / "forget~10" / "eval" / variant / "predictions.jsonl").read_text().splitlines()
        assert len(lines) >= sum(c["n"] for c in counts.values())
    assert (base / "vanilla" / "model.safetensors").exists()
    assert json.loads((base / "vanilla" / "finetune_manifest.json").read_text())["lora"]["r"] == 4
    assert (tmp_path / "logs" / "timings" / "evaluate" / "mini" / "mini_llava" / "forget~10" / "vanilla.tsv").exists()

    assert "Nothing to be done" in snakemake(tmp_path, "-n").stdout

    changed = copy.deepcopy(SMALL)
    changed["evaluation"]["max_new_tokens"] = 5
    write_config(tmp_path, changed)
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"evaluate": 2, "all": 1}
    write_config(tmp_path, SMALL)

    # Editing a stage's code reruns that stage and what depends on it, nothing upstream.
    scoring = tmp_path / "pipeline_steps" / "evaluation" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\n# edited\n")
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"evaluate": 2, "all": 1}
    finetune = tmp_path / "pipeline_steps" / "finetune.py"
    finetune.write_text(finetune.read_text() + "\n# edited\n")
    assert planned_jobs(snakemake(tmp_path, "-n")) == {"finetune_vanilla": 1, "evaluate": 2, "all": 1}
