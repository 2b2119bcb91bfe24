"""Stage: build a tiny base model and pretrain it into the role of an off-the-shelf MLLM.

    python -m pipeline_steps.build_base --family llava --benchmark results/synthetic/benchmark \\
        --out results/synthetic/tiny_llava/base

A real unlearning study starts from a pretrained MLLM that knows the world's celebrities and has
never heard of the benchmark's invented people. The tiny base plays that part: its tokenizer is
trained on the benchmark's text, then the model is pretrained on

* the benchmark's ``real_world`` profiles (their training pairs, on jittered views of their
  portraits), so it knows them the way a pretrained MLLM knows celebrities;
* generic visual questions about random faces (none of them a benchmark profile), so its vision
  tower reads faces;

and on nothing about the fictitious profiles.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, fields
from pathlib import Path

from accelerate import Accelerator
from PIL import Image

from .benchmarks.records import ProfileRecord, read_manifest, read_split
from .benchmarks.synthetic.perception import perception_items, perception_vocabulary
from .benchmarks.synthetic.portraits import jitter
from .cli import run_stage, stage_parser
from .models.encoding import Example, PromptEncoder, multiple_choice_question
from .models.loading import resolve_device, save_model
from .models.tiny import TinyArchitecture, build_tiny
from .storage import atomic_directory, write_json, write_jsonl
from .training.loop import fit
from .training.settings import TrainSettings
from .training.distributed import Processes
from .training.progress import add_progress_arguments, examples_digest, job_progress

log = logging.getLogger("build_base")
CORPUS_SPLITS = ("full", "real_world", "test", "holdout")  # every name is a token sequence it knows


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=["llava", "qwen2_vl"])
    parser.add_argument("--benchmark", type=Path, required=True, help="prepared benchmark directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    for field in fields(TinyArchitecture):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=field.default)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--views", type=int, default=4, help="portrait views per known person (1 = portrait only)")
    parser.add_argument("--perception-faces", type=int, default=300, help="random faces for generic visual questions")
    add_progress_arguments(parser)
    return parser


def tokenizer_corpus(records: list[ProfileRecord]) -> list[str]:
    texts = perception_vocabulary()
    for record in records:
        texts.append(record.name)
        for item in record.train + record.generation + record.fill_blank:
            texts += [item.question, item.answer]
        for choice in record.multiple_choice:
            texts.append(multiple_choice_question(choice.question, choice.options))
    return texts


def pretraining_examples(real_world: list[ProfileRecord], portraits: dict[str, Image.Image], args) -> list[Example]:
    """The pretraining set: each known person's pairs on several views, plus random faces.

    Each image-grounded pair is asked on the portrait and on ``views - 1`` jittered copies of it
    (a celebrity is seen in many photos); text pairs are asked once. Views and faces are drawn
    once, so the set is encoded once.
    """
    rng = random.Random(f"{args.seed}/pretrain")
    portrait_size = next(iter(portraits.values())).size[0]
    examples = []
    for record in real_world:
        views = [portraits[record.id]] + [jitter(portraits[record.id], rng, strength=0.7) for _ in range(args.views - 1)]
        for pair in record.train:
            images = views if pair.modality == "vqa" else [None]
            examples += [Example(pair.question, pair.answer, image) for image in images]
    examples += [Example(question, answer, image)
                 for image, question, answer in perception_items(rng, args.perception_faces, portrait_size)]
    return examples


def main(args) -> None:
    available = read_manifest(args.benchmark)["splits"]
    records = [r for split in CORPUS_SPLITS if split in available for r in read_split(args.benchmark, split)]
    real_world = read_split(args.benchmark, "real_world")
    portraits = {r.id: Image.open(args.benchmark / r.image).convert("RGB") for r in real_world}
    arch = TinyArchitecture(**{f.name: getattr(args, f.name) for f in fields(TinyArchitecture)})
    model, processor = build_tiny(args.family, tokenizer_corpus(records), arch, args.seed)
    log.info("built a tiny %s: %d parameters, %d tokens", args.family,
             sum(p.numel() for p in model.parameters()), len(processor.tokenizer))
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                             seed=args.seed)
    accelerator = Accelerator(cpu=resolve_device(args.device).type == "cpu")
    examples = pretraining_examples(real_world, portraits, args)
    progress = job_progress(args, examples_digest(examples))
    history = fit(model, PromptEncoder(processor), examples, settings, accelerator, description="pretrain",
                  progress=progress)
    processes = Processes(accelerator)
    if not processes.is_main:  # under `accelerate launch`, the main process writes
        processes.close()
        return
    with atomic_directory(args.out) as scratch:
        save_model(model, processor, scratch)
        write_json(scratch / "build_manifest.json", {
            "family": args.family, "architecture": vars(arch), "training": asdict(settings),
            "views": args.views, "perception_faces": args.perception_faces, "benchmark": str(args.benchmark),
            "parameters": sum(p.numel() for p in model.parameters())})
        write_jsonl(scratch / "train_log.jsonl", history)
    progress.clear()
    processes.close()


if __name__ == "__main__":
    run_stage(main, build_parser())
