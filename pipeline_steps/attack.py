"""Stage: one attack (``attacks/``: membership inference, relearning, quantization) on one model variant.

    python -m pipeline_steps.attack --kind mia --model results/.../vanilla \\
        --changes results/.../unlearn/ga/weights --benchmark results/.../benchmark --forget-ratio 10 \\
        --out results/.../attacks/mia/ga

The variant's model is loaded exactly as its evaluation loads it (``--model``: the vanilla model,
or for the oracle the retain-only model; ``--changes``: an unlearned variant's stored changes,
applied to it first), so an attack sees what the evaluation scored. ``--settings`` holds the
kind's own settings as JSON (unset ones keep their defaults; ``--help`` lists them).

Writes ``attack.json`` (the kind, its settings, what it attacked and its result summary) and
whatever the kind writes beside it (membership inference: ``scores.jsonl``). A kind that produces
a model (relearning, quantization) also writes ``weights.safetensors``: every tensor that differs
from ``--model``, the variant's own changes included, so ``evaluate --model <the same> --changes
<this>/weights`` scores the attacked model with the unchanged evaluation stage.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from .attacks import REGISTRY, Target, get_attack, parse_settings
from .benchmarks.records import forget_ratios
from .cli import StageError, run_stage, stage_parser
from .models.loading import DTYPES, load_model, model_fingerprint
from .storage import atomic_directory, write_json
from .unlearning.weights import apply_changes, save_changes

log = logging.getLogger("attack")


def describe_settings() -> str:
    lines = ["settings of each attack kind (--settings JSON):"]
    for kind, attack in sorted(REGISTRY.items()):
        own = [f"{f.name}={f.default!r} ({f.metadata.get('description', '')})" for f in attack.setting_fields()]
        lines.append(f"  {kind}: {'; '.join(own) or 'none'}")
    return "\n".join(lines)


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0], epilog=describe_settings())
    parser.add_argument("--kind", choices=sorted(REGISTRY), required=True)
    parser.add_argument("--settings", default="{}", help="the kind's settings as a JSON object")
    parser.add_argument("--name", help="the config entry's name, recorded in attack.json (default: the kind)")
    parser.add_argument("--model", required=True, help="the model the variant's evaluation loads (a directory)")
    parser.add_argument("--changes", type=Path, help="an unlearned variant's stored changes, applied to --model first")
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--forget-ratio", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=32, help="scoring batch size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="for an attack that trains")
    return parser


def main(args) -> None:
    attack = get_attack(args.kind)
    settings = parse_settings(attack, args.settings)
    if args.forget_ratio not in forget_ratios(args.benchmark):
        raise StageError(f"benchmark {args.benchmark} has no forget ratio {args.forget_ratio} "
                         f"(it has {forget_ratios(args.benchmark)})")
    torch.manual_seed(args.seed)
    fingerprint = model_fingerprint(args.model)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    # What the stored changes of a model attack are relative to: --model itself, as evaluate loads it.
    start_values = ({name: p.detach().to("cpu", copy=True) for name, p in loaded.model.named_parameters()}
                    if attack.produces_model else None)
    if args.changes:
        apply_changes(loaded.model, args.changes, fingerprint)
    target = Target(loaded.model.eval(), loaded.processor, loaded.family, args.benchmark, args.forget_ratio,
                    args.device, args.dtype, args.batch_size, args.seed, args.gradient_checkpointing)
    with atomic_directory(args.out) as scratch:
        result = attack.run(target, settings, scratch)
        record = {"attack": args.name or args.kind, "kind": args.kind, "settings": dataclasses.asdict(settings),
                  "model": args.model, "model_fingerprint": fingerprint, "changes": str(args.changes or ""),
                  "benchmark": str(args.benchmark), "forget_ratio": args.forget_ratio, "result": result}
        if attack.produces_model:
            record["stored"] = save_changes(dict(target.model.named_parameters()), start_values, scratch / "weights",
                                            {"kind": "attacked_changes", "attack": args.kind,
                                             "vanilla_fingerprint": fingerprint})
        write_json(scratch / "attack.json", record)


if __name__ == "__main__":
    run_stage(main, build_parser())
