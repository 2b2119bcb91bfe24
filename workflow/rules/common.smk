"""Helpers of the workflow: config checks, paths, per-stage settings and code dependencies.

Everything here runs when Snakemake parses the workflow, before any job: a config that names an
unknown model, a forget ratio its benchmark does not have or a local path that does not exist
stops the run here with a message naming the key to fix. What needs the network or the GPU (is the
hub reachable, is the dataset or model cached, does the model fit the GPU) is checked by the first
job of a real run instead, ``check_environment`` (``pipeline_steps/check_environment.py`` says why).
"""

import ast
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

validate(config, workflow.source_path("../schemas/config.schema.yaml"))

REPO = Path(workflow.basedir).parent
FORGET_RATIOS = {"mllmu_bench": (5, 10, 15), "clear": (1, 5, 10)}
FISHER_SPLITS = ("forget_vqa", "forget_text", "retain_vqa", "retain_text", "real_vqa", "real_text")
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
    for name, entry in benchmarks.items():
        if "synthetic" in entry and entry["format"] != "mllmu_bench":
            raise ConfigError(f"benchmarks.{name}: only format mllmu_bench can be synthesized; give '{entry['format']}' "
                              "a hub: id or a local path:")
        if "seed" in entry and "test_image_seed" in entry:
            raise ConfigError(f"benchmarks.{name} sets both seed and test_image_seed (the same setting); keep seed")
    for kind, entries in (("benchmarks", benchmarks), ("models", models)):
        for name, entry in entries.items():
            if "path" in entry and not Path(entry["path"]).expanduser().is_dir():
                raise ConfigError(f"{kind}.{name}.path: '{entry['path']}' is not a directory; point it at a "
                                  f"local copy or use 'hub:' instead")
    saliency = config["saliency"]
    for key in ("target", "preserve", "preserve_vision"):
        for split in [saliency[key]] if key == "target" else saliency.get(key, []):
            if split not in saliency["fisher_splits"]:
                raise ConfigError(f"saliency.{key} uses Fisher split '{split}', which is not in saliency.fisher_splits "
                                  f"{saliency['fisher_splits']}; add it there")
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


def training_flags(model):
    """Device, precision and memory flags of the stages that train ``model`` (finetune, unlearn)."""
    settings = model_settings(model)
    return cli_flags({key: settings.get(key, False) for key in ("device", "dtype", "gradient_checkpointing")})


def gpus(model, processes=1):
    """GPU count a job of this model asks the scheduler for (one per process)."""
    return 0 if config["models"][model]["device"] == "cpu" else processes


def unlearn_processes(model):
    return model_settings(model).get("unlearn_gpus", 1)


def unlearn_launcher(model):
    """How an unlearning job starts: one process, or one per GPU with the model sharded across them
    (FSDP; ``pipeline_steps/training/distributed.py``)."""
    processes = unlearn_processes(model)
    if processes == 1:
        return "python -m"
    fsdp = REPO / "profiles" / "accelerate" / "fsdp.yaml"
    return f"accelerate launch --config_file {shlex.quote(str(fsdp))} --num_processes {processes} -m"


def benchmark_source(benchmark):
    entry = config["benchmarks"][benchmark]
    if "synthetic" in entry:
        return f"results/{benchmark}/raw"
    return entry.get("hub") or str(Path(entry["path"]).expanduser())


def benchmark_seed(benchmark):
    """Seed of the benchmark reader's random choices (``test_image_seed`` is MLLMU-Bench's older name)."""
    entry = config["benchmarks"][benchmark]
    return entry.get("seed", entry.get("test_image_seed", 0))


def needs_preflight(benchmark, model):
    """A real run, which ``check_environment`` checks first: a hub or local model, or a hub benchmark."""
    return not is_tiny(model) or "hub" in config["benchmarks"][benchmark]


def preflight(benchmark, model):
    """The pre-flight check of an experiment, as an input of the jobs that must wait for it.
    ``ancient``: a check that runs again (new code or settings) does not make the pipeline rerun."""
    return ancient(f"results/{benchmark}/{model}/preflight.json")


def preflight_checks(wildcards):
    """The pre-flight checks ``prepare_benchmark`` waits for: one per experiment on this benchmark."""
    return [preflight(entry["benchmark"], entry["model"]) for entry in config["experiments"]
            if entry["benchmark"] == wildcards.benchmark and needs_preflight(entry["benchmark"], entry["model"])]


def preflight_flags(wildcards):
    """Command-line flags of ``check_environment`` for one experiment: what to check, and what will run."""
    entry = experiment(wildcards.benchmark, wildcards.model)
    benchmark, model = config["benchmarks"][wildcards.benchmark], config["models"][wildcards.model]
    flags = {"benchmark_name": wildcards.benchmark, "format": benchmark["format"], "model_name": wildcards.model,
             "device": model["device"], "dtype": model["dtype"], "finetune_lora_r": entry["finetune"]["lora_r"],
             "finetune_batch_size": entry["finetune"]["batch_size"], "fisher_batch_size": config["saliency"]["batch_size"],
             "unlearn_batch_size": entry["unlearn"]["batch_size"], "eval_batch_size": config["evaluation"]["batch_size"],
             "methods": entry["unlearn"]["methods"], "gradient_checkpointing": model.get("gradient_checkpointing", False),
             "unlearn_gpus": unlearn_processes(wildcards.model)}
    if "synthetic" not in benchmark:
        flags |= {"dataset": benchmark_source(wildcards.benchmark), "forget_ratios": entry["forget_ratios"]}
    if not is_tiny(wildcards.model):
        flags["model"] = base_model_source(wildcards.model, wildcards.benchmark)
    return cli_flags(flags)


def base_model(wildcards):
    """Input files of a stage that starts from the base model: a tiny model's directory, or for a
    hub or local model its pre-flight check (so a model added to a prepared benchmark is checked
    before its first job too)."""
    if is_tiny(wildcards.model):
        return f"results/{wildcards.benchmark}/{wildcards.model}/base"
    return [preflight(wildcards.benchmark, wildcards.model)]


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
    """The files a variant's evaluation reads: the base model ([] for a hub model), the vanilla
    model, or the vanilla model and an unlearned variant's changes."""
    if wildcards.variant == "base":
        return base_model(wildcards)
    vanilla = f"results/{wildcards.benchmark}/{wildcards.model}/vanilla"
    if wildcards.variant == "vanilla":
        return vanilla
    return [vanilla, f"results/{wildcards.benchmark}/{wildcards.model}/forget~{wildcards.ratio}/unlearn/"
                     f"{wildcards.variant}/weights.safetensors.index.json"]


def evaluated_model_source(wildcards):
    if wildcards.variant == "base":
        return base_model_source(wildcards.model, wildcards.benchmark)
    return f"results/{wildcards.benchmark}/{wildcards.model}/vanilla"


def cli_flags(settings):
    """``{"batch_size": 4, "modalities": ["vqa"], "fast": True}`` -> ``--batch-size 4 --modalities vqa
    --fast`` (values quoted for the shell where they need it; a False switch is left out)."""
    parts = []
    for key, value in settings.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):  # a switch: given or not
            parts += [flag] if value else []
            continue
        values = value if isinstance(value, list) else [value]
        parts.append(f"{flag} " + " ".join(shlex.quote(str(v)) for v in values))
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


def fisher_file(wildcards, split):
    return (f"results/{wildcards.benchmark}/{wildcards.model}/forget~{wildcards.ratio}/fisher/"
            f"{split}.safetensors.index.json")


def beta_label(beta):
    """The directory label of a beta: the config's number as written (1.0 -> "1.0")."""
    return repr(float(beta))


MASKED_METHODS = ("mmunlearner",)
VARIANT = re.compile(r"^(?P<method>[a-z_]+)(/beta~(?P<beta>[^/]+)/modules~(?P<modules>[a-z]+))?$")


def variant_method(variant):
    return VARIANT.match(variant).group("method")


def unlearned_variants(benchmark, model):
    """Every unlearned variant an experiment asks for: baselines by name, masked methods per
    beta and module group (``mmunlearner/beta~1.0/modules~all``)."""
    for method in experiment(benchmark, model)["unlearn"]["methods"]:
        if method in MASKED_METHODS:
            for beta in config["saliency"]["betas"]:
                for modules in config["saliency"]["module_groups"]:
                    yield f"{method}/beta~{beta_label(beta)}/modules~{modules}"
        else:
            yield method


def unlearn_mask(wildcards):
    match = VARIANT.match(wildcards.variant)
    if match.group("method") not in MASKED_METHODS:
        return []
    return [f"results/{wildcards.benchmark}/{wildcards.model}/forget~{wildcards.ratio}/masks/"
            f"beta~{match.group('beta')}/modules~{match.group('modules')}/mask.safetensors.index.json"]


def unlearn_reference(wildcards):
    if variant_method(wildcards.variant) != "npo":
        return []
    return [f"results/{wildcards.benchmark}/{wildcards.model}/forget~{wildcards.ratio}/reference"]


def unlearn_settings(wildcards):
    """The experiment's unlearning hyper-parameters, shared by every method (paper Table 5)."""
    settings = dict(experiment(wildcards.benchmark, wildcards.model)["unlearn"])
    settings.pop("methods")
    return settings


def forget_ratio_dirs():
    """Every (benchmark, model, ratio) the config asks for."""
    for entry in config["experiments"]:
        for ratio in entry["forget_ratios"]:
            yield entry["benchmark"], entry["model"], ratio


# --- What the report stages compare -------------------------------------------------------------


def reference_mask():
    """The (beta, module group) at which MMUnlearner enters Table 1 and the figures, and whose
    mask size sets n in the heatmaps: the first configured beta, module group ``all`` if
    configured (the paper's main setting), else the first one."""
    groups = config["saliency"]["module_groups"]
    return beta_label(config["saliency"]["betas"][0]), "all" if "all" in groups else groups[0]


def compared_variants(benchmark, model):
    """Table 1's unlearned rows: every baseline, and masked methods at the reference mask."""
    beta, modules = reference_mask()
    return [v for v in unlearned_variants(benchmark, model)
            if VARIANT.match(v).group("beta") in (None, beta) and VARIANT.match(v).group("modules") in (None, modules)]


def sweep_variants(benchmark, model, sweep):
    """MMUnlearner variants of a sweep table: over module groups at the reference beta, or over
    betas at the reference module group."""
    beta, modules = reference_mask()
    if "mmunlearner" not in experiment(benchmark, model)["unlearn"]["methods"]:
        return []
    if sweep == "modules":
        return [f"mmunlearner/beta~{beta}/modules~{g}" for g in config["saliency"]["module_groups"]]
    return [f"mmunlearner/beta~{beta_label(b)}/modules~{modules}" for b in config["saliency"]["betas"]]


def sweeps():
    """Sweep tables worth drawing: those whose sweep list has more than one entry."""
    return [s for s, key in (("modules", "module_groups"), ("beta", "betas")) if len(config["saliency"][key]) > 1]


def table1_cells(wildcards):
    """Table 1 at one forget ratio: models as row groups, benchmarks as column groups."""
    cells = {}
    for benchmark, model, ratio in forget_ratio_dirs():
        if str(ratio) == wildcards.ratio:
            for variant in ("vanilla", *compared_variants(benchmark, model)):
                cells[f"{model}|{variant}|{benchmark}"] = eval_path(benchmark, model, ratio, variant)
    return cells


def sweep_cells(wildcards):
    return {f"{wildcards.model}|{variant}|{wildcards.benchmark}": eval_path(wildcards.benchmark, wildcards.model,
                                                                             wildcards.ratio, variant)
            for variant in ("vanilla", *sweep_variants(wildcards.benchmark, wildcards.model, wildcards.sweep))}


def eval_path(benchmark, model, ratio, variant, name="metrics.json"):
    return f"results/{benchmark}/{model}/forget~{ratio}/eval/{variant}/{name}"


def all_ratios():
    return sorted({ratio for _, _, ratio in forget_ratio_dirs()})


def report_outputs():
    """Every table and figure of the report stages, for ``rule all``."""
    outputs = [f"results/tables/table1_forget~{ratio}.{suffix}" for ratio in all_ratios() for suffix in ("csv", "md", "tex")]
    for benchmark, model, ratio in forget_ratio_dirs():
        outputs += [f"results/figures/{benchmark}/{model}/layer_heatmap_forget~{ratio}.{s}" for s in ("png", "pdf")]
        outputs.append(f"results/tables/{benchmark}/{model}/case_studies_forget~{ratio}.md")
        outputs += [f"results/tables/{benchmark}/{model}/{sweep}_sweep_forget~{ratio}.{suffix}"
                    for sweep in sweeps() if sweep_variants(benchmark, model, sweep) for suffix in ("csv", "md", "tex")]
    for entry in config["experiments"]:
        outputs += [f"results/figures/{entry['benchmark']}/{entry['model']}/tradeoff.{s}" for s in ("png", "pdf")]
    return outputs


def labelled_flags(flag, pairs):
    """``--cell 'label=path' ...`` for the report stages, quoted for the shell."""
    return " ".join(f"{flag} {shlex.quote(f'{label}={path}')}" for label, path in pairs)
