"""Stage: fine-tuning on a benchmark's profiles (LoRA, merged; or all parameters).

    python -m pipeline_steps.finetune --base llava-hf/llava-1.5-7b-hf \\
        --benchmark results/mllmu/benchmark --split full --out results/mllmu/llava/vanilla

Two rules run it: ``finetune_vanilla`` teaches the base model every fictitious profile (split
``full``; the model unlearning starts from), and ``finetune_reference`` teaches it the retain
profiles only (NPO's reference model). As in the paper, LoRA adapters sit on every linear layer of
the vision tower, the connector and the language model; they are merged before saving, so every
later stage sees a plain checkpoint with the base model's parameter names.

``--rehearsal`` mixes other splits' training pairs in. The tiny embedded models rehearse the
``real_world`` profiles their base was pretrained on: a 7B model fine-tuned with LoRA keeps what it
knew, a tiny one fine-tuned in full does not (measured: real-world accuracy 0.995 -> 0.28 without
rehearsal), and a vanilla model that has forgotten the real world leaves the Realworld columns of
Table 1 nothing to measure.

``--lora-r 0`` trains every parameter instead. The tiny embedded models use it: at their size
LoRA learns new facts about ten times more slowly than full fine-tuning (measured on 180 text
facts: answer loss 1.8 after 200 steps with rank 32, full-rank 128, PiSSA or rsLoRA alike, against
0.1 with all parameters), which no CPU time budget can absorb.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from .benchmarks.records import MODALITIES
from .cli import run_stage, stage_parser
from .models.encoding import PromptEncoder
from .models.loading import DTYPES, load_model, model_fingerprint, save_model
from .storage import atomic_directory, write_json, write_jsonl
from .training.adapters import ALL_LINEAR, attach_lora, lora_record, merge_lora
from .training.loop import fit
from .training.settings import TrainSettings
from .training.distributed import Processes
from .training.examples import split_examples
from .training.precision import TRAINING_DTYPES, enable_gradient_checkpointing, training_accelerator
from .training.progress import add_progress_arguments, examples_digest, job_progress

log = logging.getLogger("finetune")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="model directory or hub id")
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--split", required=True, help="canonical split whose profiles are learned")
    parser.add_argument("--rehearsal", nargs="*", default=[], help="further splits whose training pairs are mixed in")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=list(MODALITIES),
                        help="which training pairs to learn: image-grounded (vqa) and/or text-only")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank; 0 fine-tunes every parameter")
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=TRAINING_DTYPES, default="float32",
                        help="the model's storage dtype; bfloat16 trains in float32 under bfloat16 autocast")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    add_progress_arguments(parser)
    return parser


def main(args) -> None:
    examples = split_examples(args.benchmark, [args.split, *args.rehearsal], args.modalities)
    # Under `accelerate launch --num_processes N` each process gets its own device and a share of
    # every batch (training/distributed.py); the main process writes the outputs.
    accelerator = training_accelerator(args.device, args.dtype)
    processes = Processes(accelerator)
    loaded = load_model(args.base, dtype=args.dtype, device=str(accelerator.device))
    model = loaded.model
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if args.lora_r:
        model = attach_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%d training pairs; %d trainable parameters", len(examples), trainable)
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             seed=args.seed)
    base_identity = model_fingerprint(args.base) if Path(args.base).is_dir() else args.base
    progress = job_progress(args, base_identity, examples_digest(examples))
    history = fit(model, PromptEncoder(loaded.processor), examples, settings, accelerator,
                  description=f"finetune {args.split}", progress=progress)
    if not processes.is_main:
        processes.close()
        return
    # Back to the storage dtype (the loop trained in float32); LoRA merges into the stored weights.
    merged = (merge_lora(model) if args.lora_r else model).to(DTYPES[args.dtype])
    with atomic_directory(args.out) as scratch:
        save_model(merged, loaded.processor, scratch)
        write_json(scratch / "finetune_manifest.json", {
            "base": args.base, "benchmark": str(args.benchmark), "split": args.split, "rehearsal": args.rehearsal,
            "modalities": args.modalities, "training_pairs": len(examples), "training": asdict(settings),
            "lora": (lora_record(args.lora_r, args.lora_alpha, args.lora_dropout, ALL_LINEAR) if args.lora_r else None),
            "trainable_parameters": trainable})
        write_jsonl(scratch / "train_log.jsonl", history)
    progress.clear()
    processes.close()


if __name__ == "__main__":
    run_stage(main, build_parser())
