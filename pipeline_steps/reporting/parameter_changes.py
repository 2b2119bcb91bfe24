"""Where unlearning moved a model: the n entries that changed most, counted by layer and module.

The paper's Figures 5 and 6 compare methods by where their largest updates land, with n the
number of entries MMUnlearner's mask selects. A 7B model has 7e9 deltas, so they are never held
at once: for non-negative float32 numbers the bit pattern read as an integer orders like the
value, so the n-th largest |delta| is found exactly by a two-pass radix select (a histogram of the
high 16 bits, then of the low 16 bits inside the bin that holds the n-th entry), streaming one
tensor at a time with 2**16 counters of memory.

Entries equal to the threshold are all counted, so a tie at the boundary can select a few more
than n (``selected`` is reported next to ``requested``); unchanged entries are never selected,
so a method that moved fewer than n entries selects all of them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import torch

from ..saliency.masks import layer_index, module_type

HALF = 16
BINS = 1 << HALF


def _bits(magnitudes: torch.Tensor) -> torch.Tensor:
    """float32 magnitudes as int64 keys ordered like the values."""
    return magnitudes.float().contiguous().view(torch.int32).long()


def nth_largest(tensors: Callable[[], Iterable[torch.Tensor]], n: int) -> float | None:
    """The n-th largest value among the positive entries of the streamed non-negative tensors
    (the smallest positive one if there are fewer than n); None if none is positive.

    ``tensors`` is called once per pass and must yield the same tensors each time."""
    if n < 1:
        raise ValueError(f"n must be positive, not {n}")
    high = torch.zeros(BINS, dtype=torch.long)
    for values in tensors():
        keys = _bits(values[values > 0])
        high += torch.bincount(keys >> HALF, minlength=BINS)
    positive = int(high.sum())
    if positive == 0:
        return None
    rank = min(n, positive)  # 1-based rank from the top
    from_top = high.flip(0).cumsum(0)
    bin_from_top = int(torch.searchsorted(from_top, torch.tensor(rank)))
    top_bin = BINS - 1 - bin_from_top
    above = int(from_top[bin_from_top - 1]) if bin_from_top else 0
    low = torch.zeros(BINS, dtype=torch.long)
    for values in tensors():
        keys = _bits(values[values > 0])
        low += torch.bincount(keys[(keys >> HALF) == top_bin] & (BINS - 1), minlength=BINS)
    low_from_top = low.flip(0).cumsum(0)
    low_bin = BINS - 1 - int(torch.searchsorted(low_from_top, torch.tensor(rank - above)))
    key = torch.tensor([(top_bin << HALF) | low_bin], dtype=torch.int32)
    return float(key.view(torch.float32))


def count_top_changes(deltas: Callable[[], Iterable[tuple[str, torch.Tensor]]], n: int,
                      part_of: Callable[[str], str]) -> dict:
    """Counts of the n largest |delta| entries per tensor and per (part, layer, module type).

    ``deltas`` yields (parameter name, delta) and is called three times (two radix passes, one
    count); ``part_of`` maps a parameter name to vision / connector / language."""
    threshold = nth_largest(lambda: (delta.abs() for _, delta in deltas()), n)
    per_tensor: dict[str, int] = {}
    if threshold is not None:
        for name, delta in deltas():
            selected = int((delta.abs().float() >= threshold).sum())
            if selected:
                per_tensor[name] = selected
    return {"requested": n, "selected": sum(per_tensor.values()), "threshold": threshold,
            "per_tensor": per_tensor, "cells": cell_counts(per_tensor, part_of)}


def cell_counts(per_tensor: dict[str, int], part_of: Callable[[str], str]) -> list[dict]:
    """Per-tensor counts summed per (part, layer, module type): the heatmap's cells."""
    cells: dict[tuple, int] = defaultdict(int)
    for name, count in per_tensor.items():
        layer = layer_index(name)
        cells[(part_of(name), -1 if layer is None else layer, module_type(name))] += count
    return [{"part": part, "layer": None if layer < 0 else layer, "module_type": kind, "count": count}
            for (part, layer, kind), count in sorted(cells.items())]
