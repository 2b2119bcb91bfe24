"""Stage: the environment check of one experiment (benchmark + model), before its first job.

    python -m pipeline_steps.check_environment --benchmark-name clear --format clear --dataset-hub therem/CLEAR \\
        --forget-ratios 1 5 10 --model-name llava --model-hub llava-hf/llava-1.5-7b-hf --device auto \\
        --dtype bfloat16 --methods ga ga_diff kl_min npo mmunlearner --out results/clear/llava/check_environment.json

It reports at once, each with its config key and fix, what would stop the run: a benchmark or
model that cannot be read (``benchmarks/availability.py``, ``models/availability.py``), no GPU, or
one smaller than a GPU stage's estimated peak (``models/memory.py``). The caller names each source
a hub id or a local path, since a guess from the string takes a mistyped directory for a hub id.

Why a first rule (``check_environment``, which ``prepare_benchmark`` waits for) and not a check
while Snakemake parses the workflow: parsing happens for every Snakemake command (``-n``,
``--report``) and inside every cluster job, on machines that are not where the work runs (a SLURM
login node has no GPU to measure and may reach the network when the compute nodes do not). As a
job, the check runs where the GPU stages run (same ``gpu`` resource), once per experiment, before
any download or training; a dry run lists it first, its findings land in its log, and a failure
stops the run before hours of work. Checks that need neither network nor GPU (schema, names,
forget ratios, local paths) stay at parse time in ``workflow/rules/common.smk``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from .benchmarks.availability import check_dataset
from .benchmarks.formats import benchmark_format
from .cli import run_stage, stage_parser
from .hub import Finding, env_flag, stop_on_problems
from .models.availability import check_model
from .models.memory import DTYPE_BYTES, GIB, ModelShape, RunPlan, gpus_to_fit, memory_estimates
from .storage import write_json

log = logging.getLogger("check_environment")
SKIP_MEMORY_CHECK = "MMUNLEARNER_SKIP_MEMORY_CHECK"


def visible_gpu(device: str) -> tuple[str, int] | None:
    """(description, total bytes) of the GPU ``device`` names (``auto``: the first), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    properties = torch.cuda.get_device_properties(index)
    return f"cuda:{index} ({properties.name})", properties.total_memory


def check_gpu(name: str, device: str, dtype: str, shape: ModelShape | None, estimates: dict | None,
              gpu: tuple[str, int] | None, plan: RunPlan) -> list[Finding]:
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
    if not plan.gradient_checkpointing and {"finetune", "unlearn", "attack"} & set(short):
        fixes.append(f"{key}.gradient_checkpointing: true")
    if "attack" in short and plan.attack_lora_r == 0:
        fixes.append("LoRA for the relearning attacks (experiments[].attacks.<name>.lora_r: 16)")
    if "unlearn" in short:
        fixes.append(f"{key}.unlearn_gpus: {gpus_to_fit(shape, dtype, plan, total)} (shards unlearning over that "
                     "many GPUs)")
    return [Finding(subject, f"{label} has {total / GIB:.1f} GiB, but {shape.parameters / 1e9:.2f} B parameters in "
                             f"{dtype} need an estimated {needs} (estimates: see config/README.md)",
                    "; or ".join(fixes) + f"; set {SKIP_MEMORY_CHECK}=1 to try anyway",
                    warning=env_flag(SKIP_MEMORY_CHECK))]


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--benchmark-name", help="the benchmark's name in the config (for messages)")
    parser.add_argument("--format", help="benchmark format, to know which configs the run reads")
    dataset = parser.add_mutually_exclusive_group()
    dataset.add_argument("--dataset-hub", metavar="ID", help="hub dataset to check (neither: skip)")
    dataset.add_argument("--dataset-path", metavar="DIR", type=Path, help="local copy of the dataset to check")
    parser.add_argument("--forget-ratios", type=int, nargs="*", default=[])
    parser.add_argument("--model-name", required=True, help="the model's name in the config (for messages)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model-hub", metavar="ID", help="hub model to check (neither: a tiny model, skip)")
    model.add_argument("--model-path", metavar="DIR", type=Path, help="local model directory to check")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPE_BYTES), default="float32")
    parser.add_argument("--finetune-lora-r", type=int, default=0)
    parser.add_argument("--finetune-batch-size", type=int, default=4)
    parser.add_argument("--fisher-batch-size", type=int, default=4)
    parser.add_argument("--unlearn-batch-size", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--methods", nargs="*", default=[])
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--unlearn-gpus", type=int, default=1)
    parser.add_argument("--attack-lora-r", type=int, help="LoRA rank of the largest attack that trains "
                        "(relearning; 0: every parameter); unset: no attack trains")
    parser.add_argument("--attack-batch-size", type=int, default=0)
    parser.add_argument("--gpu-memory-gib", type=float, help="plan for a GPU of this size, not the visible one "
                        f"(a shortfall is an estimate: {SKIP_MEMORY_CHECK}=1 makes it a warning)")
    parser.add_argument("--out", type=Path, required=True, help="the environment check's report (JSON; written "
                        "only when nothing stops the run): what was found, and the estimates")
    return parser


def chosen(hub: str | None, path: Path | None) -> tuple[str | None, bool]:
    """(source, is a local path) of a ``--*-hub`` / ``--*-path`` pair; (None, False): skip."""
    return (hub, False) if hub else ((str(path.expanduser()), True) if path else (None, False))


def main(args) -> None:
    dataset, dataset_local = chosen(args.dataset_hub, args.dataset_path)
    model, model_local = chosen(args.model_hub, args.model_path)
    findings = check_dataset(args.benchmark_name, dataset, dataset_local, benchmark_format(
        args.format).required_configs(args.forget_ratios)) if dataset else []
    model_findings, shape = check_model(args.model_name, model, model_local) if model else ([], None)
    findings += model_findings
    plan = RunPlan(args.finetune_lora_r, args.finetune_batch_size, args.fisher_batch_size, args.unlearn_batch_size,
                   args.eval_batch_size, tuple(args.methods), gradient_checkpointing=args.gradient_checkpointing,
                   unlearn_gpus=args.unlearn_gpus, attack_lora_r=args.attack_lora_r,
                   attack_batch_size=args.attack_batch_size)
    estimates = None
    if shape:
        estimates = memory_estimates(shape, args.dtype, plan)
        for stage, estimate in estimates.items():
            log.info("estimated GPU memory of %s: %.1f GiB", stage, estimate["bytes"] / GIB)
    gpu = ("planned GPU", int(args.gpu_memory_gib * GIB)) if args.gpu_memory_gib else (
        visible_gpu(args.device) if args.device != "cpu" else None)
    findings += check_gpu(args.model_name, args.device, args.dtype, shape, estimates, gpu, plan)

    stop_on_problems(findings, "the environment check", log)
    write_json(args.out, {"benchmark": dataset, "model": model, "device": args.device, "dtype": args.dtype,
                          "gpu": {"name": gpu[0], "bytes": gpu[1]} if gpu else None,
                          "shape": asdict(shape) if shape else None, "memory_estimates": estimates,
                          "warnings": [asdict(f) for f in findings]})


if __name__ == "__main__":
    run_stage(main, build_parser())
