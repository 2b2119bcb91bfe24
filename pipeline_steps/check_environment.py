"""Stage: a pre-flight check of one experiment (benchmark + model), before its first job.

    python -m pipeline_steps.check_environment --benchmark-name clear --format clear \\
        --dataset therem/CLEAR --forget-ratios 1 5 10 --model-name llava --model llava-hf/llava-1.5-7b-hf \\
        --device auto --dtype bfloat16 --finetune-lora-r 16 --finetune-batch-size 3 --fisher-batch-size 2 \\
        --unlearn-batch-size 4 --eval-batch-size 16 --methods ga ga_diff kl_min npo mmunlearner \\
        --out results/clear/llava/preflight.json

It reports, all at once and naming the config key and the fix:

* the benchmark: a hub dataset must be reachable, or, when the hub is off (``HF_HUB_OFFLINE`` /
  ``HF_DATASETS_OFFLINE``) or unreachable, every config the run reads must be in the local
  ``datasets`` cache (probed offline with the same ``datasets`` call the stage makes); a local copy
  (``path:``) must have every config;
* the model: a hub model must be reachable or fully in the local hub cache (config, every weight
  shard, tokenizer); a local directory must hold the same files;
* the GPU: when the model's ``device`` is not ``cpu``, a GPU must be visible and hold the
  estimated peak memory of every GPU stage for the model's parameter count and precision
  (``memory_estimates``; the count comes from the model's ``config.json``, built on the meta
  device). These are estimates, not measurements: ``MMUNLEARNER_SKIP_MEMORY_CHECK=1`` turns a
  shortfall into a warning, and ``--gpu-memory-gib`` plans for a GPU other than the visible one.

The JSON written on success records what was found and the per-stage estimates.

Why a first rule (``check_environment``, which ``prepare_benchmark`` waits for) and not a check
while Snakemake parses the workflow: parsing happens for every Snakemake command (``-n``,
``--lint``, ``--report``) and again inside every cluster job, on machines that are not where the
work runs: the login node of a SLURM cluster has no GPU to measure and may reach the network when
the compute nodes do not. As a job, the check runs where the GPU stages run (it asks the scheduler
for the same ``gpu`` resource), once per experiment, before any download or training; a dry run
lists it first, its findings land in its log like any stage's, and a failure stops the run before
hours of work instead of in the middle. Checks that need neither network nor GPU (schema, names,
forget ratios, local paths) stay at parse time in ``workflow/rules/common.smk``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .cli import StageError, run_stage, stage_parser
from .storage import write_json

log = logging.getLogger("check_environment")
HUB_TIMEOUT_S = 15
SKIP_MEMORY_CHECK = "MMUNLEARNER_SKIP_MEMORY_CHECK"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024 ** 3
# Assumptions of the memory model (see memory_estimates).
TOKENS_PER_EXAMPLE = 1024  # LLaVA-1.5: 576 image tokens + question and answer; Qwen2-VL: depends on the image size
ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER = 34  # 16-bit activations kept for backward, per token x width x layer
LORA_PARAMETERS_PER_RANK = 0.0004  # LoRA on every linear layer: about 0.04 % of the parameters per unit of rank
OVERHEAD = 0.10  # CUDA context, allocator fragmentation, temporary buffers
REFERENCE_METHODS = ("kl_min", "npo")  # hold a frozen second model
MASKED_METHODS = ("mmunlearner",)  # hold a boolean mask of every weight


@dataclass
class Finding:
    subject: str
    problem: str
    fix: str
    warning: bool = False


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden: int  # width of the language model
    layers: int  # depth of the language model


@dataclass(frozen=True)
class RunPlan:
    """What the experiment will run, as far as GPU memory goes."""

    finetune_lora_r: int
    finetune_batch_size: int
    fisher_batch_size: int
    unlearn_batch_size: int
    eval_batch_size: int
    methods: tuple[str, ...]
    tokens: int = TOKENS_PER_EXAMPLE
    gradient_checkpointing: bool = False
    unlearn_gpus: int = 1  # an unlearning job shards its model over this many GPUs


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_off(datasets_too: bool = False) -> bool:
    return _env_flag("HF_HUB_OFFLINE") or (datasets_too and _env_flag("HF_DATASETS_OFFLINE"))


def hub_status(repo_id: str, repo_type: str) -> tuple[str, str]:
    """("reachable" | "denied" | "unreachable", detail), asking the hub with a short timeout."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "denied", "it is gated: accept its terms on its hub page and set HF_TOKEN"
    except RepositoryNotFoundError:
        return "denied", "the hub does not know it (a misspelt id, or a private repository without HF_TOKEN)"
    except Exception as error:  # noqa: BLE001 - any failure to connect means the same here
        return "unreachable", f"{type(error).__name__}: {str(error)[:200]}"
    return "reachable", ""


# --- the benchmark ------------------------------------------------------------------------------

_DATASET_PROBE = """
import json, sys
import datasets
source, configs, cache_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] or None
missing = {}
for config in configs:
    try:
        datasets.load_dataset_builder(source, config, cache_dir=cache_dir)
    except Exception as error:
        missing[config] = type(error).__name__ + ": " + str(error)[:300]
print(json.dumps(missing))
"""


def unreadable_configs(source: str, configs: list[str], local: bool) -> dict[str, str]:
    """Configs ``datasets`` cannot open without the network (config -> why), probed in a child
    process with the hub switched off so this process's settings do not matter."""
    import tempfile

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run([sys.executable, "-c", _DATASET_PROBE, source, json.dumps(configs),
                                 scratch if local else ""], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {config: result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "probe failed"
                for config in configs}
    return json.loads(result.stdout.strip().splitlines()[-1])


def required_configs(fmt: str, ratios: list[int]) -> list[str]:
    from .benchmarks.formats import benchmark_format

    return benchmark_format(fmt).required_configs(ratios)


def check_dataset(name: str, source: str, local: bool, configs: list[str]) -> list[Finding]:
    key = f"benchmarks.{name}"
    if local:
        missing = unreadable_configs(source, configs, local=True)
        subject = f"benchmark '{name}' (local copy {source})"
        return [Finding(subject, f"the copy has no readable config {', '.join(sorted(missing))} "
                                 f"({next(iter(missing.values()))})",
                        f"make it a complete copy of the hub dataset (`hf download --repo-type dataset <id> "
                        f"--local-dir {source}`), or point {key}.path elsewhere")] if missing else []
    subject = f"benchmark '{name}' (hub dataset '{source}')"
    status, detail = ("off", "") if hub_off(datasets_too=True) else hub_status(source, "dataset")
    if status == "reachable":
        return []
    missing = unreadable_configs(source, configs, local=False)
    if not missing:
        reason = {"off": "the hub is switched off", "denied": detail, "unreachable": "the hub is unreachable"}[status]
        return [Finding(subject, f"{reason}; the run will read the copy in the local datasets cache", "", True)]
    from datasets import config as datasets_config

    reason = {"off": "HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE) is set, so the hub is not asked,",
              "denied": f"the hub refuses it ({detail}),",
              "unreachable": f"the hub cannot be reached ({detail}),"}[status]
    return [Finding(
        subject,
        f"{reason} and the local datasets cache ({datasets_config.HF_DATASETS_CACHE}) has no copy of the "
        f"config(s) {', '.join(sorted(missing))}",
        f"on a machine with network run `hf download --repo-type dataset {source} --local-dir <dir>` and set "
        f"{key}.path: <dir> instead of hub:, or run once with network (HF_HUB_OFFLINE unset) so that "
        f"prepare_benchmark fills the cache")]


# --- the model ----------------------------------------------------------------------------------

def model_files_problem(directory: Path) -> str | None:
    """What a saved model directory lacks to be loaded, or None."""
    if not (directory / "config.json").is_file():
        return "config.json is missing"
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            return f"{len(missing)} of {len(shards)} weight shards are missing ({missing[0]}, ...)"
    elif not (directory / "model.safetensors").is_file():
        return "there are no safetensors weights"
    if not any((directory / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
        return "there are no tokenizer files"
    return None


def cached_model(repo_id: str) -> tuple[Path | None, str]:
    """The model's snapshot in the local hub cache and what it lacks ("" if complete)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        directory = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None, f"the local hub cache ({constants.HF_HUB_CACHE}) has no copy of it"
    problem = model_files_problem(directory)
    return directory, f"its copy in the local hub cache ({directory}) is incomplete: {problem}" if problem else ""


def check_model(name: str, source: str, local: bool) -> tuple[list[Finding], str | None]:
    """Findings, and where the model's config can be read from (None: nowhere)."""
    key = f"models.{name}"
    if local:
        problem = model_files_problem(Path(source))
        return ([Finding(f"model '{name}' (local directory {source})", f"it cannot be loaded: {problem}",
                         f"save the model there with save_pretrained (and its processor), or fix {key}.path")]
                if problem else []), (None if problem and "config.json" in problem else source)
    subject = f"model '{name}' (hub model '{source}')"
    status, detail = ("off", "") if hub_off() else hub_status(source, "model")
    if status == "reachable":
        return [], source
    directory, problem = cached_model(source)
    if not problem:
        reason = {"off": "the hub is switched off", "denied": detail, "unreachable": "the hub is unreachable"}[status]
        return [Finding(subject, f"{reason}; the run will load the copy in the local hub cache", "", True)], str(directory)
    reason = {"off": "HF_HUB_OFFLINE is set, so the hub is not asked,",
              "denied": f"the hub refuses it ({detail}),",
              "unreachable": f"the hub cannot be reached ({detail}),"}[status]
    has_config = directory is not None and (directory / "config.json").is_file()
    return [Finding(subject, f"{reason} and {problem}",
                    f"on a machine with network run `hf download {source}` (fills the cache; point HF_HOME at "
                    f"storage the jobs share), or `hf download {source} --local-dir <dir>` and set "
                    f"{key}.path: <dir> instead of hub:")], (str(directory) if has_config else None)


def model_shape(config_source: str) -> ModelShape:
    """Parameter count and language-model shape from the model's config alone (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(config_source)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    text = config.get_text_config()
    return ModelShape(sum(p.numel() for p in model.parameters()), text.hidden_size, text.num_hidden_layers)


# --- GPU memory ---------------------------------------------------------------------------------

def memory_estimates(shape: ModelShape, dtype: str, plan: RunPlan) -> dict[str, dict]:
    """Estimated peak GPU memory of each GPU stage: stage -> {"bytes", "parts": {what: bytes}}.

    From the parameter count P and the bytes per stored weight b of ``dtype``:

    * ``evaluate``: the weights (P b) and the generation cache of a batch (2 x tokens x width x
      layers x b per sequence);
    * ``finetune`` (vanilla and NPO's reference model): the stored weights, and what trains in
      float32 with its gradient and AdamW's two moments (16 bytes per trained entry,
      ``training/precision.py``): the LoRA adapters (about 0.04 % of P per unit of rank), or
      every weight without LoRA (16 P, which replaces the stored copy);
    * ``compute_fisher``: the weights, their gradients, fp32 sums of every weight (4 P) and the
      activations of a batch;
    * ``unlearn``, per GPU: every weight trained in float32 (16 P) and the largest extra of the
      configured methods, a frozen second model for KL_Min / NPO (P b) or MMUnlearner's boolean
      mask (P bytes), all divided by ``plan.unlearn_gpus`` when sharded (FSDP), plus the
      activations of a batch. The copy of the starting weights is in host memory.

    Activations kept for backward: 34 bytes x tokens x width x layers per example in 16 bit
    (Korthikanti et al. 2022 without the attention scores, which SDPA does not store; twice that
    in fp32); with gradient checkpointing, each layer's input (2 bytes x tokens x width) plus one
    layer's activations. Every total carries 10 % for the CUDA context and fragmentation; tokens
    per example are ``plan.tokens`` (1,024 by default). Estimates, to catch a run that cannot fit,
    not to size one to the last gigabyte.
    """
    b = DTYPE_BYTES[dtype]
    weights = shape.parameters * b
    per_layer = ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER * plan.tokens * shape.hidden * b / 2
    kept = per_layer * shape.layers
    if plan.gradient_checkpointing:
        kept = (b * plan.tokens * shape.hidden) * shape.layers + per_layer
    activations = "activations (checkpointed)" if plan.gradient_checkpointing else "activations"
    cache_per_sequence = 2 * plan.tokens * shape.hidden * shape.layers * b
    float32_training = 16 * shape.parameters
    if plan.finetune_lora_r:
        tuned = {"weights": weights, "LoRA adapters, gradients and AdamW moments (fp32)":
                 16 * LORA_PARAMETERS_PER_RANK * plan.finetune_lora_r * shape.parameters}
    else:
        tuned = {"fp32 weights, gradients and AdamW moments": float32_training}
    extras = {}
    if any(m in REFERENCE_METHODS for m in plan.methods):
        extras["frozen reference model (KL_Min, NPO)"] = weights
    if any(m in MASKED_METHODS for m in plan.methods):
        extras["saliency mask (MMUnlearner)"] = shape.parameters
    largest_extra = dict([max(extras.items(), key=lambda item: item[1])]) if extras else {}
    stages = {
        "evaluate": {"weights": weights, "generation cache": plan.eval_batch_size * cache_per_sequence},
        "finetune": {**tuned, activations: plan.finetune_batch_size * kept},
        "compute_fisher": {"weights": weights, "gradients": weights, "fp32 Fisher sums": 4 * shape.parameters,
                           "activations": plan.fisher_batch_size * per_layer * shape.layers},
        "unlearn": {**{part: value / plan.unlearn_gpus for part, value in
                       {"fp32 weights, gradients and AdamW moments": float32_training, **largest_extra}.items()},
                    activations: plan.unlearn_batch_size * kept},
    }
    return {stage: {"bytes": int(sum(parts.values()) * (1 + OVERHEAD)), "parts": {k: int(v) for k, v in parts.items()}}
            for stage, parts in stages.items()}


def visible_gpu(device: str) -> tuple[str, int] | None:
    """(description, total bytes) of the GPU ``device`` names (``auto``: the first), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    properties = torch.cuda.get_device_properties(index)
    return f"cuda:{index} ({properties.name})", properties.total_memory


def gpus_to_fit(shape: ModelShape, dtype: str, plan: RunPlan, total: int) -> int:
    """The fewest GPUs of ``total`` bytes the unlearning stage fits on, sharded (at most 64)."""
    return next((n for n in range(1, 65)
                 if memory_estimates(shape, dtype, replace(plan, unlearn_gpus=n))["unlearn"]["bytes"] <= total), 64)


def check_gpu(name: str, device: str, dtype: str, shape: ModelShape | None, estimates: dict | None,
              gpu: tuple[str, int] | None, plan: RunPlan | None = None) -> list[Finding]:
    key = f"models.{name}"
    if device == "cpu":
        return []
    subject = f"model '{name}' on device '{device}'"
    if gpu is None:
        return [Finding(subject, "no GPU is visible here (torch.cuda.is_available() is False), so every GPU stage "
                                 "would fail or, with device auto, crawl on the CPU",
                        f"run on a GPU node (snakemake --workflow-profile profiles/slurm), check CUDA_VISIBLE_DEVICES "
                        f"and the CUDA build of torch, or set {key}.device: cpu if a CPU run is meant")]
    if estimates is None:
        return [Finding(subject, "GPU memory cannot be estimated without the model's config.json (see above)", "",
                        True)]
    label, total = gpu
    short = {stage: e["bytes"] for stage, e in estimates.items() if e["bytes"] > total}
    if not short:
        return []
    needs = ", ".join(f"{stage} ~{value / GIB:.0f} GiB" for stage, value in short.items())
    fixes = [f"a GPU with at least {max(short.values()) / GIB:.0f} GiB"]
    if dtype == "float32":
        fixes.append(f"{key}.dtype: bfloat16 (half the weight memory)")
    if plan and not plan.gradient_checkpointing and {"finetune", "unlearn"} & set(short):
        fixes.append(f"{key}.gradient_checkpointing: true")
    if "unlearn" in short:
        fixes.append(f"{key}.unlearn_gpus: {gpus_to_fit(shape, dtype, plan, total)} (shards unlearning over that "
                     "many GPUs)" if plan else "a smaller unlearn.batch_size, or running KL_Min / NPO separately")
    skip = _env_flag(SKIP_MEMORY_CHECK)
    return [Finding(subject, f"{label} has {total / GIB:.1f} GiB, but {shape.parameters / 1e9:.2f} B parameters in "
                             f"{dtype} need an estimated {needs} (estimates: see config/README.md)",
                    "; or ".join(fixes) + f"; set {SKIP_MEMORY_CHECK}=1 to try anyway", warning=skip)]


# --- the stage ----------------------------------------------------------------------------------

def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--benchmark-name", help="the benchmark's name in the config (for messages)")
    parser.add_argument("--format", help="benchmark format, to know which configs the run reads")
    parser.add_argument("--dataset", help="hub dataset id or local copy to check (none: skip)")
    parser.add_argument("--forget-ratios", type=int, nargs="*", default=[])
    parser.add_argument("--model-name", required=True, help="the model's name in the config (for messages)")
    parser.add_argument("--model", help="hub model id or local directory to check (none: a tiny model, skip)")
    parser.add_argument("--config-source", help="where to read the model's config.json when --model is not given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="float32")
    parser.add_argument("--finetune-lora-r", type=int, default=0)
    parser.add_argument("--finetune-batch-size", type=int, default=4)
    parser.add_argument("--fisher-batch-size", type=int, default=4)
    parser.add_argument("--unlearn-batch-size", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--tokens-per-example", type=int, default=TOKENS_PER_EXAMPLE)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--unlearn-gpus", type=int, default=1)
    parser.add_argument("--gpu-memory-gib", type=float,
                        help="check against a GPU of this size instead of the visible one (planning)")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def is_local(source: str) -> bool:
    return Path(source).expanduser().is_dir() or source.startswith((".", "/", "~"))


def main(args) -> None:
    findings: list[Finding] = []
    if args.dataset:
        local = is_local(args.dataset)
        findings += check_dataset(args.benchmark_name, str(Path(args.dataset).expanduser()) if local else args.dataset,
                                  local, required_configs(args.format, args.forget_ratios))
    config_source = args.config_source
    if args.model:
        local = is_local(args.model)
        model_findings, config_source = check_model(args.model_name, args.model, local)
        findings += model_findings
    shape = estimates = plan = None
    if config_source:
        try:
            shape = model_shape(config_source)
        except Exception as error:  # noqa: BLE001 - reported, and the rest of the check goes on
            findings.append(Finding(f"model '{args.model_name}'", f"its config cannot be read ({error})", "", True))
    if shape:
        plan = RunPlan(args.finetune_lora_r, args.finetune_batch_size, args.fisher_batch_size, args.unlearn_batch_size,
                       args.eval_batch_size, tuple(args.methods), args.tokens_per_example,
                       args.gradient_checkpointing, args.unlearn_gpus)
        estimates = memory_estimates(shape, args.dtype, plan)
        for stage, estimate in estimates.items():
            log.info("estimated GPU memory of %s: %.1f GiB", stage, estimate["bytes"] / GIB)
    gpu = ("planned GPU", int(args.gpu_memory_gib * GIB)) if args.gpu_memory_gib else (
        visible_gpu(args.device) if args.device != "cpu" else None)
    findings += check_gpu(args.model_name, args.device, args.dtype, shape, estimates, gpu, plan)

    for finding in findings:
        if finding.warning:
            log.warning("%s: %s", finding.subject, finding.problem)
    problems = [f for f in findings if not f.warning]
    if problems:
        lines = [f"the pre-flight check found {len(problems)} problem(s); nothing was started:"]
        for number, finding in enumerate(problems, start=1):
            lines += [f"  {number}. {finding.subject}: {finding.problem}.", f"     Fix: {finding.fix}."]
        raise StageError("\n".join(lines))
    report = {"benchmark": args.dataset, "model": args.model or config_source, "device": args.device,
              "dtype": args.dtype, "gpu": {"name": gpu[0], "bytes": gpu[1]} if gpu else None,
              "shape": asdict(shape) if shape else None, "memory_estimates": estimates,
              "warnings": [asdict(f) for f in findings]}
    write_json(args.out, report)


if __name__ == "__main__":
    run_stage(main, build_parser())
