"""Long stages survive being killed: a rerun resumes from saved progress and ends bit-identical."""

import json
import math
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pipeline_steps.models.encoding import PromptEncoder
from pipeline_steps.models.loading import load_model
from pipeline_steps.saliency.fisher import estimate_fisher
from pipeline_steps.saliency.tensor_files import TensorFile
from pipeline_steps.training.examples import split_examples
from pipeline_steps.training.progress import Progress

from helpers import REPO, Killed, KilledAfter


def command(module, *args):
    return [sys.executable, "-m", f"pipeline_steps.{module}", *map(str, args)]


def run_to_end(cmd, log):
    with open(log, "w") as handle:
        result = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
    assert result.returncode == 0, log.read_text()[-3000:]


def kill_part_way(cmd, progress_dir, total_steps, log):
    """Start ``cmd``, SIGKILL it once its saved progress reaches a random step, as a cluster would."""
    target = random.Random().randint(2, total_steps - 2)
    state = progress_dir / "state.pt"
    with open(log, "w") as handle:
        process = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 600
        while process.poll() is None and time.monotonic() < deadline:
            if state.exists():
                try:
                    step = torch.load(state, weights_only=False)["step"]
                except (EOFError, RuntimeError):  # replaced while being read
                    continue
                if step >= target:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return step
            time.sleep(0.02)
    pytest.fail(f"the job ended (rc {process.returncode}) before reaching step {target}: {log.read_text()[-2000:]}")


def resumed_step(log) -> int:
    match = re.search(r"resuming from step (\d+)", log.read_text())
    assert match, f"the rerun did not resume: {log.read_text()[-2000:]}"
    return int(match.group(1))


@pytest.mark.slow
def test_killed_finetune_resumes_bit_identically(tiny_models, benchmark, tmp_path):
    args = ["--base", tiny_models["llava"], "--benchmark", benchmark, "--split", "forget_10", "--modalities", "vqa",
            "text", "--epochs", "3", "--batch-size", "8", "--learning-rate", "1e-3", "--lora-r", "4",
            "--lora-dropout", "0.1", "--device", "cpu"]  # LoRA dropout: the torch RNG must be restored too
    run_to_end(command("finetune", *args, "--out", tmp_path / "straight", "--progress-dir", "none"),
               tmp_path / "straight.log")
    pairs = json.loads((tmp_path / "straight" / "finetune_manifest.json").read_text())["training_pairs"]
    resumed = tmp_path / "resumed"
    cmd = command("finetune", *args, "--out", resumed, "--save-every-minutes", "0")
    killed_at = kill_part_way(cmd, tmp_path / "resumed.progress", 3 * math.ceil(pairs / 8), tmp_path / "killed.log")
    assert not resumed.exists(), "a killed job must not leave an output that looks complete"
    run_to_end(cmd, tmp_path / "resume.log")
    assert resumed_step(tmp_path / "resume.log") >= killed_at
    straight, again = load_file(tmp_path / "straight" / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert straight.keys() == again.keys()
    assert all(torch.equal(straight[k], again[k]) for k in straight)
    assert not (tmp_path / "resumed.progress").exists(), "progress is removed once the output is in place"


@pytest.mark.slow
@pytest.mark.parametrize("schedule, epochs, batch", [("one_per_step", 3, 2), ("all_per_epoch", 1, 4)])
def test_killed_unlearning_resumes_bit_identically(tiny_models, benchmark, tmp_path, schedule, epochs, batch):
    """Under the authors' retain schedule too (about 9 retain-only steps per forget step here; one
    epoch, as it costs about as much as three of the default: test_unlearning resumes it across an
    epoch's end): a step, and so saved progress, is a forget batch with all its retain batches."""
    args = ["--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10", "--method", "ga_diff",
            "--epochs", epochs, "--batch-size", batch, "--learning-rate", "1e-3", "--weight-decay", "0.01",
            "--retain-schedule", schedule, "--device", "cpu"]
    run_to_end(command("unlearn", *args, "--out", tmp_path / "straight", "--progress-dir", "none"),
               tmp_path / "straight.log")
    forget = json.loads((tmp_path / "straight" / "manifest.json").read_text())["forget_examples"]
    resumed = tmp_path / "resumed"
    cmd = command("unlearn", *args, "--out", resumed, "--save-every-minutes", "0")
    killed_at = kill_part_way(cmd, tmp_path / "resumed.progress", epochs * math.ceil(forget / batch),
                              tmp_path / "killed.log")
    assert not resumed.exists()
    run_to_end(cmd, tmp_path / "resume.log")
    assert resumed_step(tmp_path / "resume.log") >= killed_at
    straight, again = TensorFile(tmp_path / "straight" / "weights"), TensorFile(resumed / "weights")
    assert straight.names() == again.names() and straight.names()
    assert all(torch.equal(straight.get(name), again.get(name)) for name in straight.names())
    assert (tmp_path / "straight" / "train_log.jsonl").read_text() == (resumed / "train_log.jsonl").read_text()
    if schedule == "all_per_epoch":  # every retain batch once per epoch
        manifest = json.loads((tmp_path / "straight" / "manifest.json").read_text())
        log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
        assert sum(entry["retain_batches"] for entry in log) == epochs * math.ceil(manifest["retain_examples"] / batch)


@pytest.mark.slow
def test_progress_of_other_settings_is_ignored(tiny_models, benchmark, tmp_path):
    base = ["--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10", "--method", "ga",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", tmp_path / "out"]
    progress = tmp_path / "out.progress"
    kill_part_way(command("unlearn", *base, "--learning-rate", "1e-3", "--save-every-minutes", "0"), progress, 5,
                  tmp_path / "killed.log")
    run_to_end(command("unlearn", *base, "--learning-rate", "1e-4"), tmp_path / "other.log")
    assert "belongs to other settings or inputs" in (tmp_path / "other.log").read_text()


@pytest.mark.parametrize("estimator", ["per_sample", "batch"])
def test_interrupted_fisher_resumes_bit_identically(tiny_models, benchmark, tmp_path, estimator):
    loaded = load_model(str(tiny_models["qwen2_vl"]))
    encoder = PromptEncoder(loaded.processor)
    examples = split_examples(benchmark, ["forget_10"], ["vqa"])
    straight = estimate_fisher(loaded.model, encoder, examples, batch_size=3, estimator=estimator)
    with pytest.raises(Killed):
        estimate_fisher(loaded.model, encoder, examples, batch_size=3, estimator=estimator,
                        progress=KilledAfter(tmp_path / "progress", {"job": "fisher"}, 4))
    assert torch.load(tmp_path / "progress" / "state.pt", weights_only=False)["next"] == 12  # 4 batches of 3
    resumed = estimate_fisher(loaded.model, encoder, examples, batch_size=3, estimator=estimator,
                              progress=Progress(tmp_path / "progress", {"job": "fisher"}, every_minutes=0))
    assert resumed.count == straight.count
    assert all(torch.equal(resumed.sums[name], straight.sums[name]) for name in straight.sums)
