"""Stage: score one model on one forget ratio of a prepared benchmark.

    python -m pipeline_steps.evaluate --model results/synthetic/tiny_llava/vanilla \\
        --benchmark results/synthetic/benchmark --forget-ratio 5 --out results/.../eval/vanilla

Writes ``metrics.json`` and ``predictions.jsonl`` (every item, what the model answered, and
whether it was right). The items come in groups (a split asked in one modality) and the ``table``
entry holds the paper's Table 1 columns of the benchmark's family (``benchmarks/layouts.py``):
for MLLMU-Bench six multiple-choice accuracies plus the Test split; for CLEAR four accuracies and
the ROUGE-L of the Forget and Retain text questions. Multiple choice is reported for every scoring
mode, with counts.

``generate`` follows the benchmark's protocol (``evaluation/protocols.py``, named by the prepared
benchmark's manifest): its prompt and its strict parse, which is what ``multiple_choice.generate``
and the table report. ``generate_lenient`` holds the same items read leniently
(``scoring.parse_choice``, an option's text anywhere counts) and ``generate_parse_rules`` counts
the lenient rules that read them: a diagnostic of how much leniency would inflate a score, never
a table's number. ``generate_rejected`` counts the outputs the strict rule read no option from.

``--outputs`` chooses which of the three item kinds are scored: multiple choice (by every
``--scoring`` mode), open generation (ROUGE-L) and fill-in-the-blank. Open answers are the
expensive part (greedy decoding), and a sweep point that reports only Table 1's accuracies need
not pay for them; the default is all three, and ``metrics.json`` records the choice (``outputs``)
so a table can say where each number comes from. A kind left out has no entry (its table
columns are null), never a number from another kind.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch

from .benchmarks.layouts import layout_of
from .benchmarks.records import forget_ratios, read_manifest
from .cli import StageError, run_stage, stage_parser
from .evaluation.images import ImageFeatures
from .evaluation.protocols import protocol_of
from .evaluation.scoring import accuracy, asked_items, fills_blank, generate_answers, rouge_l, score_multiple_choice
from .models.encoding import Example, PromptEncoder
from .models.loading import DTYPES, load_model, model_fingerprint
from .storage import atomic_directory, write_json, write_jsonl
from .unlearning.weights import apply_changes

log = logging.getLogger("evaluate")
SCORING_MODES = ("likelihood", "generate")
OUTPUTS = ("multiple_choice", "generation", "fill_blank")  # the record fields of the item kinds


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory or hub id")
    parser.add_argument("--changes", type=Path, help="unlearned weights (unlearn's weights.safetensors stem) to "
                        "apply to --model first")
    parser.add_argument("--benchmark", type=Path, required=True)
    parser.add_argument("--forget-ratio", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scoring", nargs="+", choices=SCORING_MODES, default=list(SCORING_MODES))
    parser.add_argument("--primary", choices=SCORING_MODES, default="likelihood",
                        help="scoring mode reported in the table")
    parser.add_argument("--outputs", nargs="+", choices=OUTPUTS, default=list(OUTPUTS),
                        help="item kinds to score: multiple choice (by every --scoring mode), open generation "
                        "(ROUGE-L), fill-in-the-blank; recorded in metrics.json")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    return parser


def main(args) -> None:
    if "multiple_choice" in args.outputs and args.primary not in args.scoring:
        raise StageError(f"primary scoring '{args.primary}' is not among the computed modes {args.scoring}")
    if args.forget_ratio not in forget_ratios(args.benchmark):
        raise StageError(f"benchmark {args.benchmark} has no forget ratio {args.forget_ratio} "
                         f"(it has {forget_ratios(args.benchmark)})")
    manifest = read_manifest(args.benchmark)
    layout = layout_of(manifest)
    try:
        protocol = protocol_of(manifest)
    except ValueError as error:
        raise StageError(f"benchmark {args.benchmark}: {error}") from None
    torch.manual_seed(args.seed)
    loaded = load_model(args.model, dtype=args.dtype, device=args.device)
    if args.changes:
        apply_changes(loaded.model, args.changes, model_fingerprint(args.model))
    model = loaded.model.eval()
    encoder = PromptEncoder(loaded.processor)
    predictions: list[dict] = []
    choice: dict[str, dict] = {mode: {} for mode in args.scoring}
    generation, blanks, parse_rules, lenient, rejected = {}, {}, Counter(), {}, Counter()

    images = ImageFeatures(model, args.batch_size)
    for column, (records, modality) in layout.records(args.benchmark, args.forget_ratio).items():
        opened: dict = {}
        images.clear()  # one column's images at a time: the next column shows other ones
        asked = (asked_items(records, modality, "multiple_choice", args.benchmark, opened)
                 if "multiple_choice" in args.outputs else [])
        rows = score_multiple_choice(model, encoder, asked, args.scoring, args.batch_size, args.max_new_tokens,
                                     images, column, protocol)
        for mode in args.scoring:
            if asked:
                choice[mode][column] = accuracy(row[mode]["correct"] for row in rows)
        generated = [row["generate"] for row in rows if "generate" in row]
        if generated:
            lenient[column] = accuracy(reading["lenient"]["correct"] for reading in generated)
            rejected[column] = sum(reading["prediction"] is None for reading in generated)
        parse_rules.update(reading["lenient"]["parse"] for reading in generated)
        predictions += rows

        for kind, store in (("generation", generation), ("fill_blank", blanks)):
            asked = asked_items(records, modality, kind, args.benchmark, opened) if kind in args.outputs else []
            if not asked:
                continue
            outputs = generate_answers(model, encoder, [Example(a.item.question, None, a.image) for a in asked],
                                       args.batch_size, args.max_new_tokens, desc=f"{column} {kind}",
                                       images=images)
            scored = []
            for a, output in zip(asked, outputs):
                row = {"column": column, "kind": kind, "profile": a.profile, "question": a.item.question,
                       "answer": a.item.answer, "output": output}
                if kind == "generation":
                    row["rouge_l"] = rouge_l(output, a.item.answer)
                else:
                    row["correct"] = fills_blank(output, a.item.answer)
                scored.append(row)
            predictions += scored
            store[column] = ({"rouge_l": sum(r["rouge_l"] for r in scored) / len(scored), "n": len(scored)}
                             if kind == "generation" else accuracy(r["correct"] for r in scored))
        log.info("%s: %s", column, {mode: choice[mode].get(column, {}).get("accuracy") for mode in args.scoring}
                 | ({"rouge_l": generation[column]["rouge_l"]} if column in generation else {}))

    measures = {"choice": lambda group: choice[args.primary].get(group, {}).get("accuracy"),
                "rouge_l": lambda group: generation.get(group, {}).get("rouge_l")}

    metrics = {
        "model": args.model, "changes": str(args.changes or ""), "benchmark": str(args.benchmark), "forget_ratio": args.forget_ratio,
        "seed": args.seed, "primary_scoring": args.primary, "outputs": args.outputs,
        "scoring_modes": args.scoring if "multiple_choice" in args.outputs else [],
        "protocol": protocol.name, "generate_rule": protocol.rule,
        "table": {key: measures[column.measure](column.group) for key, column in layout.columns.items()},
        "multiple_choice": choice, "generate_lenient": lenient, "generate_rejected": dict(rejected),
        "generate_parse_rules": dict(parse_rules),
        "generation_rouge_l": generation, "fill_blank": blanks,
    }
    with atomic_directory(args.out) as scratch:
        write_json(scratch / "metrics.json", metrics)
        write_jsonl(scratch / "predictions.jsonl", predictions)


if __name__ == "__main__":
    run_stage(main, build_parser())
