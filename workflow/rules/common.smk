"""Lookups of the workflow: the config, validated, and what each job reads from it.

The config is checked while Snakemake parses the workflow, before any job: the schema fixes each
key's type and range, ``pipeline_steps/study/config_check.py`` what depends on other keys or on
the method and benchmark registries, and a bad config stops here with the key to fix. What needs
the network or a GPU is checked by the first job of a real run (``check_environment``). Variant
names, artifact paths, flags and code dependencies are plain Python in ``pipeline_steps/study/``.
"""

import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

# The package beside this workflow, whichever copy of it is installed: the jobs run it from here too.
REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO))

from pipeline_steps.benchmarks.records import retain_split
from pipeline_steps.study import code_dependencies
from pipeline_steps.study.artifacts import path as artifact, pattern
from pipeline_steps.study.config_check import ConfigError, check_config
from pipeline_steps.study.flags import cli_flags, hyperparameter_flags, labelled_flags
from pipeline_steps.study.variants import Variant, beta_label, unlearned_variants
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.unlearning.settings import resolve as method_settings

validate(config, workflow.source_path("../schemas/config.schema.yaml"))
try:
    check_config(config)
except ConfigError as error:
    sys.exit(f"Configuration error: {error}")


def stage_sources(module):
    return code_dependencies.stage_sources(module, REPO)


def experiment(benchmark, model):
    return next(e for e in config["experiments"] if (e["benchmark"], e["model"]) == (benchmark, model))


def runs():
    """Every (benchmark, model, forget ratio) the config asks for."""
    for entry in config["experiments"]:
        for ratio in entry["forget_ratios"]:
            yield entry["benchmark"], entry["model"], ratio


def model_settings(model):
    return config["models"][model]


def is_tiny(model):
    return "tiny" in model_settings(model)


def gpus(model, processes=1):
    """GPU count a job of this model asks the scheduler for (one per process)."""
    return 0 if model_settings(model)["device"] == "cpu" else processes


def source_flags(entry, prefix=""):
    """``--<prefix>hub ID`` or ``--<prefix>path DIR``: where a benchmark or model comes from, as the
    config says it (never guessed from the string)."""
    kind = "hub" if "hub" in entry else "path"
    value = entry[kind] if kind == "hub" else str(Path(entry[kind]).expanduser())
    return f"--{prefix}{kind} {shlex.quote(value)}"


def benchmark_source_flags(benchmark):
    entry = config["benchmarks"][benchmark]
    return f"--path {artifact('raw_benchmark', benchmark=benchmark)}" if "synthetic" in entry else source_flags(entry)


def needs_environment_check(benchmark, model):
    """A real run, which ``check_environment`` checks first: a hub or local model, or a hub benchmark."""
    return not is_tiny(model) or "hub" in config["benchmarks"][benchmark]


def environment_check(benchmark, model):
    """The environment check of an experiment, as an input of the jobs that wait for it.
    ``ancient``: a check that runs again (new code or settings) does not make the pipeline rerun."""
    return ancient(artifact("environment_check", benchmark=benchmark, model=model))


def base_model(wildcards):
    """Inputs of a stage that starts from the base model: a tiny model's directory, or for a hub
    or local model its environment check."""
    if is_tiny(wildcards.model):
        return artifact("base", wildcards)
    return [environment_check(wildcards.benchmark, wildcards.model)]


def base_model_source(wildcards):
    entry = model_settings(wildcards.model)
    if is_tiny(wildcards.model):
        return artifact("base", wildcards)
    return entry.get("hub") or str(Path(entry["path"]).expanduser())


def training_flags(model):
    """Device, precision and memory flags of the stages that train ``model`` (finetune, unlearn)."""
    settings = model_settings(model)
    return cli_flags({key: settings.get(key, False) for key in ("device", "dtype", "gradient_checkpointing")})


def variant_names(benchmark, model):
    """Every unlearned variant an experiment asks for, by name."""
    methods = experiment(benchmark, model)["unlearn"]["methods"]
    saliency = config["saliency"]
    return [v.name for v in unlearned_variants(methods, saliency["betas"], saliency["module_groups"])]


def unlearn_job(wildcards):
    """The method of an unlearn job and its resolved settings (only its own)."""
    method = get_method(Variant.parse(wildcards.variant).method)
    return method, method_settings(method.name, experiment(wildcards.benchmark, wildcards.model)["unlearn"])
