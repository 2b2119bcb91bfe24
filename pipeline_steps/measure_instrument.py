"""Stage: the synthetic benchmark's instrument diagnostics, measured on the models it was built for.

    python -m pipeline_steps.measure_instrument --raw results/synthetic/raw \\
        --benchmark results/synthetic/benchmark --model vanilla=results/.../vanilla \\
        --metrics base=results/.../eval/base/metrics.json --out results/.../instrument

The synthetic world is a measuring instrument, so before any unlearning method is run on it, it
has to show that it measures what the paper is about (``benchmarks/synthetic/instrument.py``):

* every Table 1 column on the base model (knows only the well-known people), the vanilla model
  (knows everyone) and the retain-only model, under both scoring modes (read from their
  ``metrics.json``);
* the cross-modal coupling: facts taught by name only, asked with the face;
* the paraphrase gap: training wordings against evaluation wordings, overall and per attribute.

Writes ``instrument.json`` and a readable ``instrument.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .benchmarks.synthetic.instrument import GROUPS, attribute_of, diagnostic_items, read_world
from .cli import labelled_paths, run_stage, stage_parser
from .evaluate import SCORING_MODES
from .benchmarks.records import read_manifest
from .evaluation.images import ImageFeatures
from .evaluation.protocols import protocol_of
from .evaluation.scoring import accuracy, score_multiple_choice
from .models.encoding import PromptEncoder
from .models.loading import load_model
from .storage import atomic_directory, write_json, write_jsonl

CHANCE = 0.25  # four options
WORDING_GROUPS = ("face_train", "face_eval", "text_train", "text_eval")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="the synthetic benchmark as written (world.json)")
    parser.add_argument("--benchmark", type=Path, required=True, help="the prepared benchmark")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=DIR",
                        help="a model to ask the diagnostic questions (repeatable)")
    parser.add_argument("--metrics", action="append", default=[], metavar="NAME=FILE",
                        help="an evaluated model's metrics.json, whose columns the report lists (repeatable)")
    parser.add_argument("--people", type=int, default=100, help="fictitious people the diagnostics ask about")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    return parser


def measure(model_dir: str, groups, args) -> tuple[dict, list[dict]]:
    protocol = protocol_of(read_manifest(args.benchmark))  # generate: the synthetic benchmark's strict rule
    loaded = load_model(model_dir, device=args.device)
    model, encoder = loaded.model.eval(), PromptEncoder(loaded.processor)
    images = ImageFeatures(model, args.batch_size)
    results, rows = {}, []
    with torch.no_grad():
        for group, asked in groups.items():
            scored = score_multiple_choice(model, encoder, asked, SCORING_MODES, args.batch_size,
                                           args.max_new_tokens, images, group, protocol)
            results[group] = {mode: accuracy(row[mode]["correct"] for row in scored) for mode in SCORING_MODES}
            rows += scored
    return results, rows


def summary(diagnostics: dict) -> dict:
    """The instrument's headline numbers per model and scoring mode."""
    def acc(model, group, mode):
        return diagnostics[model][group][mode]["accuracy"]

    return {model: {mode: {
        "coupling": acc(model, "coupling", mode), "coupling_ceiling": acc(model, "coupling_text", mode),
        "coupling_over_chance": acc(model, "coupling", mode) - CHANCE,
        "paraphrase_gap_vqa": acc(model, "face_train", mode) - acc(model, "face_eval", mode),
        "paraphrase_gap_text": acc(model, "text_train", mode) - acc(model, "text_eval", mode)}
        for mode in SCORING_MODES} for model in diagnostics}


def per_attribute(rows: list[dict], attributes: dict[str, str]) -> dict:
    """Attribute -> wording group -> scoring mode -> accuracy, from one model's scored rows."""
    flags: dict = {}
    for row in rows:
        if row["column"] in WORDING_GROUPS:
            for mode in SCORING_MODES:
                flags.setdefault(attributes[row["question"]], {}).setdefault(row["column"], {}).setdefault(
                    mode, []).append(row[mode]["correct"])
    return {key: {group: {mode: accuracy(f) for mode, f in modes.items()} for group, modes in groups.items()}
            for key, groups in flags.items()}


def report(columns: dict, diagnostics: dict, headline: dict, attributes: dict) -> str:
    lines = ["# Instrument diagnostics", "", "## Table 1 columns (multiple-choice accuracy)", ""]
    column_names = sorted({c for metrics in columns.values() for c in metrics["multiple_choice"].get("likelihood", {})})
    lines += ["| model | scoring | " + " | ".join(column_names) + " |", "|---|---|" + "---|" * len(column_names)]
    for name, metrics in columns.items():
        for mode in metrics["scoring_modes"]:
            cells = [metrics["multiple_choice"][mode].get(c, {}).get("accuracy") for c in column_names]
            lines.append(f"| {name} | {mode} | " + " | ".join("" if v is None else f"{v:.2f}" for v in cells) + " |")
    lines += ["", "## Diagnostic groups (accuracy, n)", "", "| model | scoring | " + " | ".join(GROUPS) + " |",
              "|---|---|" + "---|" * len(GROUPS)]
    for name, groups in diagnostics.items():
        for mode in SCORING_MODES:
            lines.append(f"| {name} | {mode} | " + " | ".join(
                f"{groups[g][mode]['accuracy']:.2f} ({groups[g][mode]['n']})" for g in GROUPS) + " |")
    lines += ["", f"Chance is {CHANCE:.2f}. Coupling: facts taught by name only, asked with the face; its ceiling "
              "is the same facts asked by name. Paraphrase gap: training wording minus evaluation wording.", ""]
    for name, modes in headline.items():
        for mode, h in modes.items():
            lines.append(f"- {name}, {mode}: coupling {h['coupling']:.2f} (ceiling {h['coupling_ceiling']:.2f}), "
                         f"paraphrase gap {h['paraphrase_gap_vqa']:+.2f} (image), {h['paraphrase_gap_text']:+.2f} (text)")
    lines += ["", "## Per attribute (accuracy, n)", "", "| model | attribute | scoring | " + " | ".join(WORDING_GROUPS)
              + " |", "|---|---|---|" + "---|" * len(WORDING_GROUPS)]
    for name, by_attribute in attributes.items():
        for key, groups in sorted(by_attribute.items()):
            for mode in SCORING_MODES:
                cells = [groups.get(g, {}).get(mode) for g in WORDING_GROUPS]
                lines.append(f"| {name} | {key} | {mode} | " + " | ".join(
                    "" if c is None else f"{c['accuracy']:.2f} ({c['n']})" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(args) -> None:
    world = read_world(args.raw)
    groups = diagnostic_items(world, args.benchmark, args.people)
    models = labelled_paths(args.model, "NAME=DIR")
    columns = {name: json.loads(path.read_text()) for name, path in labelled_paths(args.metrics, "NAME=FILE")}
    questions = attribute_of(world)
    diagnostics, attributes, predictions = {}, {}, []
    for name, model_dir in models:
        diagnostics[name], rows = measure(str(model_dir), groups, args)
        attributes[name] = per_attribute(rows, questions)
        predictions += [{"model": name, **row} for row in rows]
    headline = summary(diagnostics)
    with atomic_directory(args.out) as scratch:
        write_json(scratch / "instrument.json", {
            "chance": CHANCE, "people": args.people, "summary": headline, "diagnostics": diagnostics,
            "per_attribute": attributes,
            "columns": {name: {"table": m["table"], "multiple_choice": m["multiple_choice"]} for name, m in columns.items()}})
        (scratch / "instrument.md").write_text(report(columns, diagnostics, headline, attributes))
        write_jsonl(scratch / "predictions.jsonl", predictions)


if __name__ == "__main__":
    run_stage(main, build_parser())
