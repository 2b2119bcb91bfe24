"""Stage: where one unlearned variant moved the vanilla model (input of the layer heatmaps).

    python -m pipeline_steps.locate_changes --vanilla results/.../vanilla \\
        --changes results/.../unlearn/ga/weights --mask-stats results/.../masks/beta~1.0/modules~all/mask_stats.json \\
        --out results/.../changes/ga.json

Counts the n entries with the largest |unlearned - vanilla| per tensor and per (part, layer,
module type), n = the number of entries the mask selects (paper Figs. 5/6), streaming tensor by
tensor (``reporting/parameter_changes.py``). With ``--mask-stats`` alone it writes the same
counts for the mask itself, so figures draw both from one format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import torch

from .cli import StageError, run_stage, stage_parser
from .models.loading import load_model, model_fingerprint
from .reporting.parameter_changes import cell_counts, count_top_changes
from .saliency.tensor_files import TensorFile
from .storage import read_json, write_json

log = logging.getLogger("locate_changes")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--vanilla", type=Path, required=True, help="the vanilla model directory")
    parser.add_argument("--mask-stats", type=Path, required=True, help="mask_stats.json of the mask giving n")
    parser.add_argument("--changes", type=Path, help="unlearn's weights (stem or index); omit for the mask itself")
    parser.add_argument("--variant", default="mask", help="label stored in the output")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def streamed_deltas(vanilla: Mapping[str, torch.Tensor], changes: TensorFile):
    """A callable yielding (name, unlearned - vanilla) for every stored tensor, one at a time."""
    names = sorted({name.split("::")[0] for name in changes.names()})
    missing = [name for name in names if name not in vanilla]
    if missing:
        raise StageError(f"tensor '{missing[0]}' of {changes.index_path} is not a parameter of the vanilla model")

    def deltas():
        for name in names:
            before = vanilla[name].detach().float()
            if f"{name}::indices" in changes:
                delta = torch.zeros_like(before).view(-1)
                indices = changes.get(f"{name}::indices")
                delta[indices] = changes.get(f"{name}::values").float() - before.view(-1)[indices]
            else:
                delta = changes.get(name).float() - before
            yield name, delta
    return deltas


def mask_cells(stats: dict) -> dict:
    """The mask's own selection in the format of ``count_top_changes``."""
    per_tensor = {name: entry["selected"] for name, entry in stats["per_tensor"].items() if entry["selected"]}
    return {"requested": stats["overall"]["selected"], "selected": stats["overall"]["selected"], "threshold": None,
            "per_tensor": per_tensor, "cells": cell_counts(per_tensor, lambda name: stats["per_tensor"][name]["part"])}


def main(args) -> None:
    stats = read_json(args.mask_stats)
    fingerprint = model_fingerprint(args.vanilla)
    if stats.get("model_fingerprint") != fingerprint:
        raise StageError(f"{args.mask_stats} describes a mask of another model (fingerprint "
                         f"{stats.get('model_fingerprint')}, vanilla {fingerprint})")
    if args.changes is None:
        counts = mask_cells(stats)
    else:
        changes = TensorFile(args.changes)
        if changes.metadata.get("vanilla_fingerprint") != fingerprint:
            raise StageError(f"{changes.index_path} was not computed from the vanilla model {args.vanilla}")
        n = stats["overall"]["selected"]
        if n == 0:
            raise StageError(f"the mask of {args.mask_stats} selects nothing; there is no top-n to locate")
        # Parameter names are the model's, not the checkpoint's (transformers 5 saves LLaVA under
        # its legacy keys), so the vanilla model is loaded; deltas are still formed one at a time.
        loaded = load_model(str(args.vanilla))
        vanilla = dict(loaded.model.named_parameters())
        counts = count_top_changes(streamed_deltas(vanilla, changes), n, loaded.family.module_of)
    total = stats["overall"]["total"]
    # Every cell of the model with its size, so a figure can draw the cells nothing landed in.
    layout = cell_counts({name: entry["total"] for name, entry in stats["per_tensor"].items()},
                         lambda name: stats["per_tensor"][name]["part"])
    write_json(args.out, {"variant": args.variant, "mask_stats": str(args.mask_stats), "total_entries": total,
                          **counts, "layout": layout})
    log.info("%s: %d of %d entries located (n = %d)", args.variant, counts["selected"], total, counts["requested"])


if __name__ == "__main__":
    run_stage(main, build_parser())
