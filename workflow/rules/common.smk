"""Lookups of the workflow: the config, validated, and what each job reads from it.

The config is checked while Snakemake parses the workflow, before any job: the schema fixes each
key's type and range, ``pipeline_steps/study/config_check.py`` what depends on other keys or on
the method and benchmark registries, and a bad config stops here with the key to fix. What needs
the network or a GPU is checked by the first job of a real run (``check_environment``). What the
config asks for (``study/plan.py``), which variants each report compares
(``study/report_selection.py``), variant names and artifact paths are plain Python in
``pipeline_steps/study/``; the functions here only hand them Snakemake's wildcards.
"""

import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

# The package beside this workflow, whichever copy of it is installed: the jobs run it from here too.
REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO))

from pipeline_steps.benchmarks.records import FISHER_SPLITS, retain_split
from pipeline_steps.study import code_dependencies
from pipeline_steps.study.artifacts import path as artifact, pattern
from pipeline_steps.study.config_check import ConfigError, check_config
from pipeline_steps.study.flags import cli_flags, labelled_flags
from pipeline_steps.study.plan import StudyPlan
from pipeline_steps.study.report_selection import SWEEPS, ReportSelection, evaluation_files
from pipeline_steps.study.variants import Variant, beta_label

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    check_config(config)
except ConfigError as error:
    sys.exit(f"Configuration error: {error}")

plan = StudyPlan(config)
reports = ReportSelection(plan)
FSDP_CONFIG = REPO / "profiles" / "accelerate" / "fsdp.yaml"


def stage_sources(module):
    return code_dependencies.stage_sources(module, REPO)


def attack_sources(wc):
    """The code an attack entry's jobs run: the attack stage and its kind's own module (the
    package finds the kinds by listing itself, so no import names the module)."""
    kind_module = type(plan.attack_kind(wc.benchmark, wc.model, wc.attack)).__module__
    return sorted(set(stage_sources("pipeline_steps.attack")) | set(stage_sources(kind_module)))


def unlearn_sources(wc):
    """The code an unlearn job runs: the stage, and for a calibrated run the measurement it stops
    on (the evaluation's scoring, loaded by name), so editing the evaluation reruns only those."""
    sources = set(stage_sources("pipeline_steps.unlearn"))
    if Variant.parse(wc.variant).calibrated:
        sources |= set(stage_sources("pipeline_steps.unlearning.forgetting_probe"))
    return sorted(sources)


def threads(wc):
    return plan.model(wc.model)["threads"]


def pretrain_threads(wc):
    """A tiny model's pretraining may take more threads than the model's other jobs: every later
    stage needs the base model, so nothing runs beside it."""
    return plan.model(wc.model).get("tiny", {}).get("pretrain", {}).get("threads", threads(wc))


def device(wc):
    return plan.model(wc.model)["device"]


def dtype(wc):
    return plan.model(wc.model)["dtype"]


def gpu(wc):
    return plan.gpus(wc.model)


def environment_check(benchmark, model):
    """The environment check of an experiment, as an input of the jobs that wait for it.
    ``ancient``: a check that runs again (new code or settings) does not make the pipeline rerun."""
    return ancient(artifact("environment_check", benchmark=benchmark, model=model))


def environment_checks(wc):
    """Every real experiment on a benchmark is checked before anything is downloaded."""
    return [environment_check(e["benchmark"], e["model"]) for e in config["experiments"]
            if e["benchmark"] == wc.benchmark and plan.needs_environment_check(e["benchmark"], e["model"])]


def base_model(wc):
    """Inputs of a stage that starts from the base model: a tiny model's directory, or for a hub
    or local model its environment check."""
    if plan.is_tiny(wc.model):
        return artifact("base", wc)
    return [environment_check(wc.benchmark, wc.model)]


def evaluated_model(wc):
    """The files a variant's evaluation reads: the base model, the vanilla model, the oracle (the
    retain-only model), or the vanilla model and an unlearned variant's changes."""
    if wc.variant == "base":
        return base_model(wc)
    if wc.variant in ("vanilla", "oracle"):
        return plan.evaluated_model(wc.benchmark, wc.model, wc.ratio, wc.variant)
    return [artifact("vanilla", wc), artifact("unlearned", wc)]


def saliency_fisher_files(wc, key):
    """The Fisher files of a saliency set (``target``, ``preserve`` or ``preserve_vision``)."""
    splits = config["saliency"].get(key, [])
    return [artifact("fisher", wc, split=s) for s in ([splits] if isinstance(splits, str) else splits)]


def unlearn_launcher(wc):
    """How an unlearning job starts: one process, or one per GPU with the model sharded across them
    (FSDP; ``pipeline_steps/training/distributed.py``); one for a method that does not train."""
    processes = plan.unlearn_job_processes(wc.benchmark, wc.model, wc.variant)
    if processes == 1:
        return "python -m"
    return f"accelerate launch --config_file {shlex.quote(str(FSDP_CONFIG))} --num_processes {processes} -m"
