"""What several test modules share: running a stage or the workflow as a user would, the small
end-to-end config, hand-made examples and masks, and edits of parquet shards.

Fixtures live in ``conftest.py``; plain helpers here, imported by name (``from helpers import ...``).


"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import torch
import yaml
from PIL import Image

from pipeline_steps import cli
from pipeline_steps.benchmarks.synthetic.mllmu_writer import LETTERED_DRAWS
from pipeline_steps.benchmarks.synthetic.world import VQA_TAUGHT_ATTRIBUTES
from pipeline_steps.models.encoding import IGNORE_INDEX, Example
from pipeline_steps.saliency.tensor_files import write_tensors
from pipeline_steps.training.progress import Progress

# A synthetic person's image-grounded training pairs: who they are, then each face fact in two
# wordings and in LETTERED_DRAWS lettered draws (benchmarks/synthetic/mllmu_writer.vqa_pairs).
VQA_PAIRS_PER_PERSON = 1 + (2 + LETTERED_DRAWS) * VQA_TAUGHT_ATTRIBUTES

REPO = Path(__file__).resolve().parents[1]


def run_stage(module: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``python -m pipeline_steps.<module>`` as a user would; fail the test with its stderr."""
    result = subprocess.run([sys.executable, "-m", f"pipeline_steps.{module}", *map(str, args)],
                            capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise AssertionError(f"{module} failed:\n{result.stderr[-4000:]}")
    return result


def call_stage(module: str, *args) -> None:
    """Run a stage's command line in this process: the parsing, checks and work of ``run_stage``
    without starting an interpreter and importing torch again (seconds a call). A refusal raises
    ``SystemExit`` with the one line the user reads (``pytest.raises(SystemExit, match=...)``).
    For what a stage computes or refuses; ``run_stage`` and the workflow tests cover how it starts."""
    stage = importlib.import_module(f"pipeline_steps.{module}")
    cli.run_stage(stage.main, stage.build_parser(), [str(a) for a in args])


def stage_output(module: str, *args) -> str:
    """What ``call_stage`` prints to standard output (a summary stage's report)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        call_stage(module, *args)
    return printed.getvalue()


def copy_without_config(raw: Path, copy: Path, config: str) -> Path:
    """A copy of a hub-style dataset directory with one config removed (its folder and card entry)."""
    shutil.copytree(raw, copy)
    shutil.rmtree(copy / config)
    readme = copy / "README.md"
    readme.write_text(readme.read_text().replace(
        f"- config_name: {config}\n  data_files:\n  - split: train\n    path: {config}/train-*\n", ""))
    return copy


SMALL = yaml.safe_load((REPO / "config" / "small.yaml").read_text())


def workflow_env(cluster: bool = False) -> dict[str, str]:
    """The environment a test runs Snakemake in: this interpreter's tools first and, unless
    ``cluster``, no SLURM controller to ask (``tests/no_cluster/scontrol``)."""
    path = [str(Path(sys.executable).parent), os.environ["PATH"]]
    return dict(os.environ, PATH=os.pathsep.join(path if cluster else [str(REPO / "tests" / "no_cluster"), *path]))


def snakemake(workdir: Path, *args: str, cluster: bool = False) -> subprocess.CompletedProcess:
    """Run the workflow of ``workdir`` (a copy of the repository) from that directory."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], capture_output=True, text=True,
                          env=workflow_env(cluster), cwd=workdir)


def refusal(config: dict) -> str:
    """What the workflow stops with for ``config`` while Snakemake parses it (``common.smk``: the
    schema, then the cross-checks), found in this process in milliseconds; '' for a config it runs."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from pipeline_steps.study.config_check import ConfigError, check_config

    config = copy.deepcopy(config)  # the schema's defaults are filled in
    try:
        validate(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
        check_config(config)
    except (WorkflowError, ConfigError) as error:
        return str(error)
    return ""


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


# Rules whose output is a directory(): a pretended run makes them directories.
DIRECTORY_RULES = {"synthesize_benchmark", "prepare_benchmark", "build_base", "finetune_vanilla", "finetune_reference"}


def pretend_run(workdir: Path) -> None:
    """Make the workflow of ``workdir`` look complete without running a job: every planned output
    created empty, then ``--touch`` orders their times and records Snakemake's metadata. A dry run
    afterwards plans exactly what a config change makes stale, in seconds instead of a full run."""
    summary = snakemake(workdir, "--summary")
    assert summary.returncode == 0, summary.stderr[-3000:]
    for line in summary.stdout.splitlines()[1:]:
        output, _, rule, *_ = line.split("\t")
        target = workdir / output
        if rule in DIRECTORY_RULES:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    touched = snakemake(workdir, "--touch", "--cores", "1")
    assert touched.returncode == 0, touched.stderr[-3000:]


COLOURS = ("red", "blue", "green", "white", "black", "purple")


def forget_examples():
    return [Example("What is the profession of the person in the image?", answer, Image.new("RGB", (32, 32), colour))
            for answer, colour in zip(("chef", "pilot", "nurse", "baker", "a judge", "ox"), COLOURS)]


def retain_examples():
    return [Example("Which city is the person in the image from?", answer, Image.new("RGB", (32, 32), colour))
            for answer, colour in zip(("Oslo", "Lima", "Riga", "Porto", "Perth", "Kyoto"), reversed(COLOURS))]


def single_inputs(encoded: dict) -> dict:
    """One encoded example as a batch of one, without its labels."""
    return {k: (v.unsqueeze(0) if k in ("input_ids", "attention_mask", "mm_token_type_ids") else v)
            for k, v in encoded.items() if k != "labels"}


def full_logprobs(model, encoder, examples):
    """Per-example answer log-probabilities from full logits, one example at a time (no padding,
    no ``logits_to_keep``): what the methods' batched losses are checked against."""
    result = []
    for example in examples:
        encoded = encoder.encode(example)
        logits = model(**single_inputs(encoded)).logits[0, :-1].float()
        targets = encoded["labels"][1:]
        keep = targets != IGNORE_INDEX
        result.append((torch.log_softmax(logits[keep], -1), targets[keep]))
    return result


def random_mask(model, fraction=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(p.shape, generator=generator) < fraction for name, p in model.named_parameters()}


def mask_file(out, model, fingerprint, change=None):
    tensors = {name: torch.ones(p.shape, dtype=torch.bool) for name, p in model.named_parameters()}
    if change:
        change(tensors)
    out.mkdir(parents=True)
    write_tensors(out / "mask", {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}, tensors.__getitem__,
                  {"kind": "saliency_mask", "modules": "all", "model_fingerprint": fingerprint})
    return out


def shard(root: Path, config: str, index: int = 0) -> Path:
    return sorted((root / config).glob("*.parquet"))[index]


def rewrite(path: Path, change) -> None:
    """Rewrite one parquet shard through ``change(rows) -> rows``, keeping the columns' features."""
    table = datasets.Dataset.from_parquet(str(path), cache_dir=str(path.parent.parent.parent / "rewrite-cache"))
    original = dict(table.features)
    for column, feature in original.items():
        if isinstance(feature, datasets.Image):
            table = table.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            table = table.cast_column(column, datasets.List(datasets.Image(decode=False)))
    rows = change(table.to_list())
    features = datasets.Features({k: original[k] for k in rows[0]}) if set(rows[0]) <= set(original) else None
    path.unlink()
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


def edit_rows(config: str, change, index: int = 0):
    return lambda root: rewrite(shard(root, config, index), change)


class Killed(Exception):
    """What ``KilledAfter`` raises: the job was killed."""


class KilledAfter(Progress):
    """Progress that saves after every step and stops the run right after its ``n``-th save: a job
    killed at a known point, to resume from what it saved."""

    def __init__(self, folder, identity: dict, n: int):
        super().__init__(folder, identity, every_minutes=0)
        self.saves_left = n

    def maybe_save(self, state):
        super().maybe_save(state)
        self.saves_left -= 1
        if self.saves_left == 0:
            raise Killed
