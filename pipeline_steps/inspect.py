"""Command: summarise any artifact of the pipeline, without writing code.

    python -m pipeline_steps.inspect results/.../forget~5/fisher/forget_vqa.safetensors.index.json
    python -m pipeline_steps.inspect results/.../forget~5/unlearn/ga --json

Results are safetensors shards and JSON records meant for the next stage, not for reading; this
tells what one holds: a Fisher file (sample count, estimator, each part's / layer's / module's
share of the Fisher mass; for SalUn's summed gradient, of the |gradient| mass), a mask (selected
share, beta, module group, or SalUn's fraction), an unlearned variant
(which tensors moved, how many entries, by how much), a ``metrics.json`` (the table row as the
tables print it), a prepared benchmark (split sizes), a model directory (family, parameter count,
dtype) or ``changes/<variant>.json``. ``results/README.md`` lists every artifact.

The kind is read from the artifact itself (a tensor file's ``kind`` metadata, a JSON record's
keys, the files a directory holds), never from where it lies, so a copied or renamed artifact is
still recognised; anything else is refused in one line with exit code 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from .cli import run_stage, stage_parser
from .reporting.record_summaries import (benchmark_summary, located_summary, metrics_summary, model_summary,
                                         not_known, variant_summary)
from .reporting.summaries import Summary, fisher_summary, mask_summary
from .saliency.tensor_files import INDEX_SUFFIX, TensorFile, index_path

TENSOR_KINDS = {"fisher_diagonal_sum": fisher_summary, "gradient_sum": fisher_summary, "saliency_mask": mask_summary}


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="an artifact: a file, a tensor file's stem, or a directory")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--vanilla", type=Path,
                        help="for an unlearned variant: the vanilla model (default: the one its manifest names)")
    return parser


def is_tensor_file(path: Path) -> bool:
    return (path.name.endswith(INDEX_SUFFIX) or path.suffix == ".safetensors") and path.is_file()


def summarise_tensors(path: Path, vanilla: Path | None) -> Summary:
    tensors = TensorFile(path)
    kind = tensors.metadata.get("kind")
    if kind in TENSOR_KINDS:
        return TENSOR_KINDS[kind](tensors)
    if kind == "unlearned_changes":
        return variant_summary(tensors.index_path, vanilla)
    if kind is None and (tensors.index_path.parent / "config.json").is_file():
        return summarise_directory(tensors.index_path.parent, vanilla)  # a model's own checkpoint
    raise not_known(path, f"a tensor file of kind '{kind}'" if kind else "a tensor file without a 'kind'")


def summarise_json(path: Path, vanilla: Path | None) -> Summary:
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise not_known(path, "not a JSON file") from None
    keys = set(data) if isinstance(data, dict) else set()
    if {"table", "primary_scoring"} <= keys:
        return metrics_summary(path, data)
    if {"variant", "requested", "cells", "layout"} <= keys:
        return located_summary(path, data)
    if {"format", "forget_ratios", "splits"} <= keys:
        return benchmark_summary(path.parent)
    if {"method", "vanilla_fingerprint"} <= keys:  # an unlearned variant's manifest
        return summarise_directory(path.parent, vanilla)
    if {"overall", "per_tensor", "beta"} <= keys and index_path(path.parent / "mask").is_file():
        return mask_summary(TensorFile(path.parent / "mask"))  # mask_stats.json: the mask beside it
    if keys & {"training_pairs", "architecture"} or "model_type" in keys:  # a model's manifest or config
        return summarise_directory(path.parent, vanilla)
    raise not_known(path, "a JSON record of no known stage")


def summarise_directory(path: Path, vanilla: Path | None) -> Summary:
    """A directory is known by the files its stage writes, each then read for its content."""
    config = path / "config.json"
    if config.is_file() and "model_type" in json.loads(config.read_text()):
        return model_summary(path)
    if (path / "manifest.json").is_file() and (path / "splits").is_dir():
        return benchmark_summary(path)
    for stem in ("weights", "mask"):
        if index_path(path / stem).is_file() or (path / f"{stem}.safetensors").is_file():
            return summarise_tensors(index_path(path / stem) if index_path(path / stem).is_file()
                                     else path / f"{stem}.safetensors", vanilla)
    if (path / "metrics.json").is_file():
        return summarise_json(path / "metrics.json", vanilla)
    raise not_known(path, "a directory holding none of the files a stage writes")


def summarise(path: Path, vanilla: Path | None = None) -> Summary:
    if path.is_dir():
        return summarise_directory(path, vanilla)
    if is_tensor_file(path):
        return summarise_tensors(path, vanilla)
    if not path.exists() and index_path(path).is_file():  # a stem, as the stages take them
        return summarise_tensors(index_path(path), vanilla)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    return summarise_json(path, vanilla)


def cell(value, spec: str | None) -> str:
    if value is None:
        return "-"
    if spec and isinstance(value, (int, float)):
        return spec.format(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def to_text(summary: Summary) -> str:
    """Facts as ``key  value`` lines, then each table with aligned columns (numbers to the right)."""
    lines = [f"{summary.kind.replace('_', ' ')}: {summary.path}"]
    width = max((len(key) for key in summary.facts), default=0)
    lines += [f"  {key:<{width}}  {cell(value, summary.formats.get(key))}" for key, value in summary.facts.items()]
    for table in summary.tables:
        cells = [table.columns] + [[cell(v, table.formats.get(c)) for c, v in zip(table.columns, row)]
                                   for row in table.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
        numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in table.rows)
                   for i in range(len(table.columns))]
        lines += ["", table.title]
        for row in cells:
            lines.append("  " + "  ".join(text.rjust(w) if number else text.ljust(w)
                                          for text, w, number in zip(row, widths, numeric)).rstrip())
    lines += [""] + [f"note: {note}" for note in summary.notes] if summary.notes else []
    return "\n".join(lines)


def main(args) -> None:
    summary = summarise(args.path, args.vanilla)
    try:
        print(json.dumps(summary.to_dict(), indent=2) if args.json else to_text(summary), flush=True)
    except BrokenPipeError:  # `inspect ... | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    # A viewer, not a job: no log lines around the summary; a refusal is still one ``error:`` line
    # (run_stage's sys.exit) with exit code 1.
    logging.getLogger().addHandler(logging.NullHandler())
    run_stage(main, build_parser())
