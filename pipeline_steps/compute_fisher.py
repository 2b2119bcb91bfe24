"""Stage: the diagonal Fisher of the vanilla model on one split of one forget ratio.

    python -m pipeline_steps.compute_fisher --model results/.../vanilla --benchmark results/.../benchmark \\
        --forget-ratio 5 --split forget_vqa --out results/.../forget~5/fisher/forget_vqa

Splits are ``{forget,retain,real}_{vqa,text}``: the image-grounded or text-only training pairs of
the forget profiles, the retain profiles or the real-world profiles. Writes
``<out>.safetensors`` (sharded behind ``<out>.safetensors.index.json`` past ``--max-shard-gb``):
for every trainable tensor, under the model's own parameter name, the fp32 sum of squared
gradients; the metadata holds the sample count and how many of the samples reach each part of
the model (``sample_count_by_part``: a text-only split never reaches the vision tower or the
connector, ``saliency/reach.py``), estimator, loss definition, dtypes and the model's
fingerprint. With ``--estimator gradient`` the file holds instead the signed gradient of the
split's summed loss (kind ``gradient_sum``), SalUn's saliency (``saliency/fisher.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import Accelerator

from .cli import run_stage, stage_parser
from .models.encoding import PromptEncoder
from .models.loading import DTYPES, load_model, model_fingerprint, resolve_device
from .saliency import reach
from .saliency.fisher import ESTIMATORS, LOSS_DEFINITION, estimate_fisher
from .saliency.tensor_files import write_tensors
from .training.distributed import Processes
from .training.examples import FISHER_SPLITS, fisher_split_source, split_examples
from .training.progress import add_progress_arguments, examples_digest, job_progress

log = logging.getLogger("compute_fisher")
KINDS = {"gradient": "gradient_sum"}  # what the file holds, by estimator (else a Fisher diagonal's sum)


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the (local) vanilla model directory")
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--forget-ratio", type=int, required=True)
    parser.add_argument("--split", choices=FISHER_SPLITS, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output stem (without .safetensors)")
    parser.add_argument("--estimator", choices=ESTIMATORS, default="per_sample")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-shard-gb", type=float, default=4.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    add_progress_arguments(parser)
    return parser


def main(args) -> None:
    canonical, modality = fisher_split_source(args.split, args.forget_ratio)
    examples = split_examples(args.benchmark, [canonical], [modality])
    fingerprint = model_fingerprint(args.model)
    # Under `accelerate launch --num_processes N`, each process takes every N-th batch.
    accelerator = Accelerator(cpu=resolve_device(args.device).type == "cpu")
    processes = Processes(accelerator)
    loaded = load_model(str(args.model), dtype=args.dtype, device=str(accelerator.device))
    log.info("%s: %d examples, estimator %s", args.split, len(examples), args.estimator)
    # Each process saves its own partial sums; a rerun must use as many processes to resume.
    progress = job_progress(args, fingerprint, examples_digest(examples),
                            state_file=f"state-{processes.rank}-of-{processes.count}.pt")
    result = estimate_fisher(loaded.model, PromptEncoder(loaded.processor), examples, batch_size=args.batch_size,
                             estimator=args.estimator, description=f"fisher {args.split}", progress=progress,
                             processes=processes)
    if not processes.is_main:
        processes.close()
        return
    metadata = {
        "kind": KINDS.get(args.estimator, "fisher_diagonal_sum"), "split": args.split,
        "forget_ratio": str(args.forget_ratio),
        "sample_count": str(result.count),
        reach.COUNTS: reach.encode(reach.counts_by_part(result.count, result.images)),
        "count_unit": "batches" if args.estimator == "batch" else "examples",
        "examples": str(len(examples)), "estimator": args.estimator, "batch_size": str(args.batch_size),
        "loss": LOSS_DEFINITION, "accumulation_dtype": "float32", "model_dtype": args.dtype,
        "model_type": loaded.model.config.model_type, "model_fingerprint": fingerprint,
        "benchmark": str(args.benchmark),
    }
    specs = {name: (torch.float32, tuple(t.shape)) for name, t in result.sums.items()}
    write_tensors(args.out, specs, result.sums.__getitem__, metadata, max_shard_bytes=int(args.max_shard_gb * 2**30))
    progress.clear()
    processes.close()


if __name__ == "__main__":
    run_stage(main, build_parser())
