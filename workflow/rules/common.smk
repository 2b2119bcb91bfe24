"""Helpers of the workflow: config checks, paths, per-stage settings and code dependencies.

Everything here runs when Snakemake parses the workflow, before any job: a config that names an
unknown model, a forget ratio its benchmark does not have or a local path that does not exist
stops the run here with a message naming the key to fix.
"""

import ast
import os
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

REPO = Path(workflow.basedir).parent
FORGET_RATIOS = {"mllmu_bench": (5, 10, 15)}
GPU_DEVICES = ("auto", "cuda")


class ConfigError(Exception):
    pass


def _check_config():
    benchmarks, models = config["benchmarks"], config["models"]
    seen = set()
    for index, experiment in enumerate(config["experiments"], start=1):
        where = f"experiments[{index}]"
        for kind, known in (("benchmark", benchmarks), ("model", models)):
            if experiment[kind] not in known:
                raise ConfigError(f"{where} names {kind} '{experiment[kind]}', which is not defined under "
                                  f"'{kind}s' (defined: {', '.join(sorted(known))})")
        pair = (experiment["benchmark"], experiment["model"])
        if pair in seen:
            raise ConfigError(f"{where} repeats the pair benchmark '{pair[0]}' / model '{pair[1]}'; "
                              "merge the two entries")
        seen.add(pair)
        allowed = FORGET_RATIOS[benchmarks[experiment["benchmark"]]["format"]]
        for ratio in experiment["forget_ratios"]:
            if ratio not in allowed:
                raise ConfigError(f"{where}: benchmark '{experiment['benchmark']}' has no forget ratio {ratio} "
                                  f"(its format offers {', '.join(map(str, allowed))})")
    for kind, entries in (("benchmarks", benchmarks), ("models", models)):
        for name, entry in entries.items():
            if "path" in entry and not Path(entry["path"]).expanduser().is_dir():
                raise ConfigError(f"{kind}.{name}.path: '{entry['path']}' is not a directory; point it at a "
                                  f"local copy or use 'hub:' instead")
    if config["evaluation"]["primary"] not in config["evaluation"]["scoring"]:
        raise ConfigError(f"evaluation.primary '{config['evaluation']['primary']}' is not one of "
                          f"evaluation.scoring {config['evaluation']['scoring']}")


try:
    _check_config()
except ConfigError as error:
    sys.exit(f"Configuration error: {error}")


def experiment(benchmark, model):
    for entry in config["experiments"]:
        if entry["benchmark"] == benchmark and entry["model"] == model:
            return entry
    raise ValueError(f"no experiment pairs benchmark '{benchmark}' with model '{model}'")


def is_tiny(model):
    return "tiny" in config["models"][model]


def model_settings(model):
    return config["models"][model]


def gpus(model):
    """GPU count a job of this model asks the scheduler for."""
    return 0 if config["models"][model]["device"] == "cpu" else 1


def benchmark_source(benchmark):
    entry = config["benchmarks"][benchmark]
    if "synthetic" in entry:
        return f"results/{benchmark}/raw"
    return entry.get("hub") or str(Path(entry["path"]).expanduser())


def base_model(wildcards):
    """Input files of a stage that starts from the base model (none for hub models)."""
    if is_tiny(wildcards.model):
        return f"results/{wildcards.benchmark}/{wildcards.model}/base"
    return []


def base_model_source(model, benchmark):
    if is_tiny(model):
        return f"results/{benchmark}/{model}/base"
    entry = config["models"][model]
    return entry.get("hub") or str(Path(entry["path"]).expanduser())


def tiny_flags(model):
    tiny = config["models"][model]["tiny"]
    flags = {"family": tiny["family"], "seed": tiny["seed"], **tiny["architecture"], **tiny["pretrain"]}
    return cli_flags(flags)


def evaluated_model(wildcards):
    """The checkpoint directory of a variant, or [] for a hub base model."""
    if wildcards.variant == "base":
        return base_model(wildcards)
    return f"results/{wildcards.benchmark}/{wildcards.model}/{wildcards.variant}"


def evaluated_model_source(wildcards):
    if wildcards.variant == "base":
        return base_model_source(wildcards.model, wildcards.benchmark)
    return f"results/{wildcards.benchmark}/{wildcards.model}/{wildcards.variant}"


def cli_flags(settings):
    """``{"batch_size": 4, "modalities": ["vqa"]}`` -> ``--batch-size 4 --modalities vqa``."""
    parts = []
    for key, value in settings.items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"--{key.replace('_', '-')} " + " ".join(str(v) for v in values))
    return " ".join(parts)


def stage_sources(module):
    """The package's source files a stage module imports, directly or not.

    Listed as inputs of the stage's rule, they make Snakemake rerun a stage (and what follows)
    when its code changes, and only then.
    """
    package = REPO / "pipeline_steps"
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = package.joinpath(*name.split(".")[1:])
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if path in seen or not path.exists():
            continue
        seen.add(path)
        tree = ast.parse(path.read_text())
        base = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parent = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    target = f"{parent}.{node.module}" if node.module else parent
                elif node.module and node.module.startswith("pipeline_steps"):
                    target = node.module
                else:
                    continue
                todo.append(target)
                todo += [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names if alias.name.startswith("pipeline_steps")]
    return sorted(str(p) for p in seen)


def forget_ratio_dirs():
    """Every (benchmark, model, ratio) the config asks for."""
    for entry in config["experiments"]:
        for ratio in entry["forget_ratios"]:
            yield entry["benchmark"], entry["model"], ratio
