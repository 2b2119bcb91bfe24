"""What an artifact holds, summarised for ``python -m pipeline_steps.inspect``: the tensor files.

A Fisher file, a mask or a stored change is hundreds of tensors under a model's parameter names;
what a user wants to know is where its mass, its selection or its movement sits. Each summary is
grouped the way ``mask_stats.json`` and the layer heatmaps group parameters (part, then layer or
module type: ``saliency/masks.py``), with the group keys taken from ``MaskStats`` itself so the
numbers here can be laid next to ``mask_stats.json`` key by key.

Tensors are read one at a time (Fisher and masks in flat chunks, as ``build_mask`` reads them),
so summarising a 7B model's 28 GB Fisher file needs the memory of one chunk, not of the file.
Summaries are plain data (``Summary``), printed as text or JSON by the command.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..cli import StageError
from ..models.families import Family, family_of
from ..saliency import reach
from ..saliency.masks import MaskStats
from ..saliency.tensor_files import TensorFile

CHUNK = 1 << 22  # elements read at a time
GROUPINGS = ("part", "layer", "module_type")


@dataclass
class SummaryTable:
    """Rows of one grouping; ``formats`` (column -> format spec) is for the text rendering only."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"title": self.title, "rows": [dict(zip(self.columns, row)) for row in self.rows]}


@dataclass
class Summary:
    """One artifact: what it is, its headline facts (ordered), its tables and any caveats."""

    kind: str
    path: str
    facts: dict[str, object] = field(default_factory=dict)
    tables: list[SummaryTable] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # fact -> format spec, for the text rendering

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "facts": self.facts,
                "tables": [table.to_dict() for table in self.tables], "notes": self.notes}


def group_keys(name: str, part: str) -> dict[str, str]:
    """The (part, layer, module type) keys of a parameter, exactly as ``mask_stats.json`` has them."""
    stats = MaskStats()
    stats.add(name, part, 0, 1)
    summary = stats.summary()
    return {grouping: next(iter(summary[f"per_{grouping}"])) for grouping in GROUPINGS}


def grouped(values: dict[str, dict[str, float]], part_of: Callable[[str], str],
            maxima: Iterable[str] = ()) -> dict[str, dict[str, dict[str, float]]]:
    """Per-tensor numbers summed (or, for ``maxima``, maxed) per part, layer and module type."""
    maxima = set(maxima)
    groups: dict[str, dict[str, dict[str, float]]] = {grouping: {} for grouping in GROUPINGS}
    for name, numbers in values.items():
        for grouping, key in group_keys(name, part_of(name)).items():
            into = groups[grouping].setdefault(key, {})
            for column, value in numbers.items():  # an unknown (None) number makes its group's unknown
                if column not in into:
                    into[column] = value
                elif value is None or into[column] is None:
                    into[column] = None
                else:
                    into[column] = max(into[column], value) if column in maxima else into[column] + value
    return {grouping: dict(sorted(rows.items())) for grouping, rows in groups.items()}


def number(text: str | None):
    """A metadata value (safetensors metadata are strings) as the number it spells, if it is one."""
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    return text


def chunks(tensors: TensorFile, name: str) -> Iterable[torch.Tensor]:
    total = math.prod(tensors.spec(name)[1])
    for start in range(0, total, CHUNK):
        yield tensors.read_flat(name, start, min(CHUNK, total - start))


def model_family(tensors: TensorFile) -> Family:
    try:
        return family_of(tensors.metadata.get("model_type", ""))
    except ValueError as error:
        raise StageError(f"{tensors.index_path}: {error}") from None


def fisher_summary(tensors: TensorFile) -> Summary:
    """Sample count and estimator, and each part's, layer's and module type's share of the Fisher
    mass (sum of squared gradients): where the split's loss is most sensitive. For SalUn's summed
    gradient (kind ``gradient_sum``) the mass is the sum of |gradient|, what its mask ranks."""
    meta = tensors.metadata
    family = model_family(tensors)
    gradient = meta.get("kind") == "gradient_sum"
    what = "|gradient|" if gradient else "Fisher"
    values = {}
    for name in tensors.names():
        mass = sum(float((chunk.double().abs() if gradient else chunk.double()).sum())
                   for chunk in chunks(tensors, name))
        values[name] = {"entries": math.prod(tensors.spec(name)[1]), "mass": mass}
    total = sum(v["mass"] for v in values.values())
    summary = Summary("gradient" if gradient else "fisher", str(tensors.index_path), {
        "split": meta.get("split"), "forget ratio": number(meta.get("forget_ratio")),
        "sample count": number(meta.get("sample_count")), "count unit": meta.get("count_unit"),
        "count by part": meta.get(reach.COUNTS),
        "examples": number(meta.get("examples")), "estimator": meta.get("estimator"),
        "batch size": number(meta.get("batch_size")),
        "model": f"{meta.get('model_type')} (fingerprint {meta.get('model_fingerprint')})",
        "tensors": len(values), "entries": sum(v["entries"] for v in values.values()), "total mass": total,
        "loss": meta.get("loss")})
    for grouping, rows in grouped(values, family.module_of).items():
        table = SummaryTable(f"{what} mass per {grouping.replace('_', ' ')}", [grouping, "entries", "mass", "share"],
                             formats={"mass": "{:.4g}", "share": "{:.2%}"})
        table.rows = [[key, row["entries"], row["mass"], row["mass"] / total if total else 0.0]
                      for key, row in rows.items()]
        summary.tables.append(table)
    if not total:
        summary.notes.append(f"the {what} mass is zero everywhere")
    return summary


def mask_summary(tensors: TensorFile) -> Summary:
    """The share of entries the mask selects, overall and per part, layer and module type, with the
    beta (or SalUn's fraction) and module group it was built with (``MaskStats``, as ``build_mask``
    counts)."""
    meta = tensors.metadata
    family = model_family(tensors)
    stats = MaskStats()
    for name in tensors.names():
        selected = sum(int(chunk.sum()) for chunk in chunks(tensors, name))
        stats.add(name, family.module_of(name), selected, math.prod(tensors.spec(name)[1]))
    counted = stats.summary()
    overall = counted["overall"]
    # SalUn's mask has a kept fraction and a |gradient| threshold where MMUnlearner's has a beta.
    built = ({"mask": "salun", "fraction": number(meta.get("fraction")), "threshold": number(meta.get("threshold"))}
             if meta.get("mask") == "salun" else
             {"beta": number(meta.get("beta")), "preserve count by part": meta.get("preserve_count_by_part")})
    summary = Summary("mask", str(tensors.index_path), {
        **built, "module group": meta.get("modules"), "estimator": meta.get("estimator"),
        "model": f"{meta.get('model_type')} (fingerprint {meta.get('model_fingerprint')})",
        "target": meta.get("target"), "preserve": meta.get("preserve"),
        "selected": overall["selected"], "entries": overall["total"], "selected share": overall["fraction"]},
        formats={"selected share": "{:.2%}"})
    for grouping in GROUPINGS:
        table = SummaryTable(f"Selected per {grouping.replace('_', ' ')}", [grouping, "selected", "entries", "share"],
                             formats={"share": "{:.2%}"})
        table.rows = [[key, row["selected"], row["total"], row["fraction"]]
                      for key, row in counted[f"per_{grouping}"].items()]
        summary.tables.append(table)
    return summary


def stored_names(changes: TensorFile) -> dict[str, str]:
    """Parameter name -> ``dense`` or ``sparse``, for every tensor a change file stores."""
    return {name.split("::")[0]: "sparse" if name.endswith("::indices") else "dense"
            for name in changes.names() if not name.endswith("::values")}


def change_summary(changes: TensorFile, vanilla: dict[str, torch.Tensor] | None, family: Family | None,
                   facts: dict, notes: list[str]) -> Summary:
    """Which tensors an unlearned variant moved, how many entries and by how much.

    The file holds the new values, not the deltas (``unlearning/weights.py``), so sizes need the
    vanilla model's tensors (``vanilla``: parameter name -> tensor); without them the summary
    still names the moved tensors and counts the entries of the sparse ones."""
    from ..locate_changes import streamed_deltas

    meta = changes.metadata
    storage = stored_names(changes)
    summary = Summary("unlearned_variant", str(changes.index_path), {
        **facts, "method": meta.get("method"), "vanilla fingerprint": meta.get("vanilla_fingerprint"),
        "changed tensors": number(meta.get("changed_tensors")), "stored sparse": number(meta.get("sparse_tensors")),
        "changed entries": number(meta.get("changed_entries"))}, notes=notes)
    values: dict[str, dict] = {}
    if vanilla is not None:
        for name, delta in streamed_deltas(vanilla, changes)():
            size = delta.abs()
            moved = int((size > 0).sum())
            values[name] = {"changed": moved, "entries": delta.numel(), "max |delta|": float(size.max()),
                            "sum |delta|": float(size.double().sum())}
    else:
        for name, kind in storage.items():
            sparse = kind == "sparse"
            values[name] = {"changed": changes.spec(f"{name}::indices")[1][0] if sparse else None,
                            "entries": None if sparse else math.prod(changes.spec(name)[1]),
                            "max |delta|": None, "sum |delta|": None}
    columns = ["changed", "entries", "changed share", "max |delta|", "mean |delta|"]
    formats = {"changed share": "{:.2%}", "max |delta|": "{:.3e}", "mean |delta|": "{:.3e}"}

    def row(key, numbers):
        changed, entries, total = numbers["changed"], numbers["entries"], numbers["sum |delta|"]
        share = changed / entries if changed is not None and entries else None
        mean = total / changed if total is not None and changed else None
        return [key, changed, entries, share, numbers["max |delta|"], mean]

    tensors = SummaryTable("Stored tensors (mean |delta| over the changed entries)",
                           ["tensor", "stored", *columns], formats=formats)
    tensors.rows = [[name, storage[name], *row(name, values[name])[1:]] for name in sorted(values)]
    summary.tables.append(tensors)
    if family is not None:
        for grouping, rows in grouped(values, family.module_of, maxima=["max |delta|"]).items():
            if grouping == "part" or vanilla is not None:
                table = SummaryTable(f"Changes per {grouping.replace('_', ' ')} (stored tensors only)",
                                     [grouping, *columns], formats=formats)
                table.rows = [row(key, numbers) for key, numbers in rows.items()]
                summary.tables.append(table)
    if values and vanilla is not None:
        summary.facts["max |delta|"] = max(v["max |delta|"] for v in values.values())
        summary.formats["max |delta|"] = "{:.3e}"
    return summary


def read_changes(path: Path) -> TensorFile:
    changes = TensorFile(path)
    if changes.metadata.get("kind") != "unlearned_changes":
        raise StageError(f"{changes.index_path} is not an unlearned variant's weights (kind "
                         f"'{changes.metadata.get('kind')}')")
    return changes
