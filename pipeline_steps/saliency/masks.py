"""The MMUnlearner mask m = 1[S_T >= beta * S_P] (paper Eq. 7), tensor by tensor.

S_T and S_P are Fisher means: a file holds the sum of squared gradients and the number of terms,
so the Fisher of a union of splits is exact (sum of sums over sum of counts), each tensor's mean
taken over the examples that reach it (``reach.py``: text-only examples do not count for the vision
tower and the connector). The comparison never divides:

    selected  <=>  sum_T * n_P >= beta * n_T * sum_P   and   sum_T > 0

which fixes what the ratio form leaves undefined (the authors' code adds 1e-15 to both sides,
which vanishes in half precision, so 0/0 gives NaN and x/0 gives inf):

* zero target saliency (0 vs anything, 0 vs 0 included): not selected; ascent there does nothing;
* positive target, zero preserve saliency (x/0): selected;
* ties (S_T == beta * S_P): selected;
* infinities compare as IEEE numbers (inf >= beta * finite; inf vs inf is a tie, selected);
* NaN anywhere is an error naming the tensor.

A larger beta never selects more. Tensors outside the chosen module group are never selected.

**Controls.** What MMUnlearner's result owes to *which* entries the Fisher ratio picks is measured
against masks that pick as many entries of every tensor, differently (``CONTROLS``):

* ``random``: the same number of entries of each tensor, uniformly at random (seeded by the
  tensor's name, so a rebuild gives the same mask);
* ``gradient_magnitude``: the same number of entries of each tensor with the largest target
  saliency S_T alone, the forget set's Fisher diagonal, i.e. the root-mean-square per-sample
  gradient of the forget answers: a "where does forgetting push hardest" mask that ignores what the
  preserved set needs. It is *not* SalUn's saliency, |mean gradient| over the forget set: E[g^2] =
  (E g)^2 + Var g, so it also ranks entries whose per-example gradients are large but cancel, and
  it keeps MMUnlearner's per-tensor sparsity. SalUn's exact mask is its own (below, from the
  Fisher stage's ``gradient`` estimator); this control reuses what the Fisher-ratio mask already
  read. Ties are broken by ``torch.topk``.

A control keeps the Fisher mask's per-tensor sparsity exactly, so the two differ only in where the
entries lie within each tensor.

**SalUn's mask** (``salun_keep`` and ``MagnitudeSelection``): m = 1[|G| >= gamma], G the signed
gradient of the forget set's summed loss (the Fisher stage's ``gradient`` estimator), gamma set so
that exactly ``floor(fraction * N)`` of the N entries of the *whole model* are kept (the official
code's count, ``int(len(all_elements) * fraction)``, over every tensor at once). Ties at gamma are
broken by position: every entry with |G| > gamma, then the entries with |G| == gamma in the file's
tensor order and row-major order within a tensor, until the count is reached (a tie at 0 included,
where the forget gradient is zero and masking changes nothing). gamma is found exactly in two
streamed passes (a radix selection on the float bits, ``kth_largest_magnitude``), so memory does
not grow with the model. The official code ranks with ``torch.argsort``, whose order among ties is
unspecified; its classification script ranks ascending (keeping the *smallest* entries) while its
diffusion scripts negate first (the largest), as the paper defines: we keep the largest.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict
from typing import Callable, Iterable

import torch

LAYER = re.compile(r"\.(?:layers|blocks)\.(\d+)\.")


def select(target_sum: torch.Tensor, target_count: int, preserve_sum: torch.Tensor, preserve_count: int,
           beta: float) -> torch.Tensor:
    """Boolean mask of entries whose target saliency is at least beta times the preserve saliency."""
    if beta <= 0:
        raise ValueError(f"beta must be positive, not {beta}")
    target = target_sum.double()
    preserve = preserve_sum.double()
    return (target * preserve_count >= beta * target_count * preserve) & (target > 0)


CONTROLS = ("random", "gradient_magnitude")


def control_mask(control: str, name: str, selected: int, target_sum: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A flat boolean mask of ``selected`` entries of one tensor, by a control's rule (above).
    ``target_sum``: the tensor's flat target Fisher sum (only ``gradient_magnitude`` reads its values)."""
    total = target_sum.numel()
    chosen = torch.zeros(total, dtype=torch.bool)
    if not selected:
        return chosen
    if control == "random":
        generator = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(name.encode()))
        chosen[torch.randperm(total, generator=generator)[:selected]] = True
    elif control == "gradient_magnitude":
        chosen[torch.topk(target_sum.double(), selected, sorted=False).indices] = True
    else:
        raise ValueError(f"no mask control '{control}' (known: {', '.join(CONTROLS)})")
    return chosen


def salun_keep(total: int, fraction: float) -> int:
    """How many of ``total`` entries SalUn's mask keeps at ``fraction`` (the official code's floor)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"the mask fraction must be in (0, 1], not {fraction}")
    return int(fraction * total)


_BINS = 1 << 16


def _magnitude_bits(chunk: torch.Tensor) -> torch.Tensor:
    """|x| of float32 values as their bit patterns, which order as the values do (no NaN)."""
    return chunk.float().abs().view(torch.int32).long()


def _top_bin(histogram: torch.Tensor, k: int) -> tuple[int, int]:
    """The highest bin b whose entries and those of every bin above it number at least k, and how
    many entries lie above it."""
    above = histogram.flip(0).cumsum(0)  # above[j]: entries in bins >= _BINS - 1 - j
    j = int(torch.searchsorted(above, k))
    return _BINS - 1 - j, int(above[j - 1]) if j else 0


def kth_largest_magnitude(chunks: Callable[[], Iterable[torch.Tensor]], k: int) -> tuple[float, int]:
    """The k-th largest |x| over every value ``chunks()`` yields (it is called twice, and must
    yield the same values each time), and how many values are strictly larger: an exact radix
    selection on the high, then the low, 16 bits of the float32 patterns."""
    high = torch.zeros(_BINS, dtype=torch.long)
    total = 0
    for chunk in chunks():
        high += torch.bincount(_magnitude_bits(chunk) >> 16, minlength=_BINS)
        total += chunk.numel()
    if not 1 <= k <= total:
        raise ValueError(f"cannot take the {k}-th largest of {total} values")
    bucket, larger = _top_bin(high, k)
    low = torch.zeros(_BINS, dtype=torch.long)
    for chunk in chunks():
        bits = _magnitude_bits(chunk)
        low += torch.bincount(bits[(bits >> 16) == bucket] & (_BINS - 1), minlength=_BINS)
    rest, more = _top_bin(low, k - larger)
    value = torch.tensor([(bucket << 16) | rest], dtype=torch.int32).view(torch.float32)
    return float(value), larger + more


class MagnitudeSelection:
    """SalUn's mask, chunk by chunk in file order: |x| > gamma, and of the ties |x| == gamma the
    first ``ties`` met (``kth_largest_magnitude`` gives both for a count k)."""

    def __init__(self, gamma: float, ties: int):
        self.gamma = torch.tensor(gamma, dtype=torch.float32)
        self.ties = ties

    def __call__(self, chunk: torch.Tensor) -> torch.Tensor:
        magnitude = chunk.float().abs()
        chosen = magnitude > self.gamma
        tied = torch.nonzero(magnitude == self.gamma).flatten()[:self.ties]
        chosen[tied] = True
        self.ties -= len(tied)
        return chosen


def salun_selection(chunks: Callable[[], Iterable[torch.Tensor]], total: int, fraction: float) -> MagnitudeSelection:
    """The selection that keeps ``salun_keep(total, fraction)`` of the values ``chunks()`` yields."""
    keep = salun_keep(total, fraction)
    if keep == 0:  # nothing above an infinite threshold, no tie kept
        return MagnitudeSelection(float("inf"), 0)
    gamma, larger = kth_largest_magnitude(chunks, keep)
    return MagnitudeSelection(gamma, keep - larger)


def module_type(name: str) -> str:
    """The kind of module a parameter belongs to: q_proj, fc1, embed_tokens, lm_head, ..."""
    parts = name.split(".")
    if parts[-1] in ("weight", "bias") and len(parts) > 1:
        parts = parts[:-1]
    if parts[-1].isdigit():  # Qwen2-VL's merger: mlp.0, mlp.2
        return ".".join(parts[-2:])
    return parts[-1]


def layer_index(name: str) -> int | None:
    match = LAYER.search(name)
    return int(match.group(1)) if match else None


class MaskStats:
    """Selected and total entries per tensor, per (part, layer), per (part, module type), overall."""

    def __init__(self):
        self.tensors: dict[str, dict] = {}

    def add(self, name: str, part: str, selected: int, total: int) -> None:
        self.tensors[name] = {"part": part, "layer": layer_index(name), "module_type": module_type(name),
                              "selected": selected, "total": total}

    def summary(self) -> dict:
        def fraction(entry):
            return {**entry, "fraction": entry["selected"] / entry["total"] if entry["total"] else 0.0}

        groups: dict[str, dict] = {"part": defaultdict(lambda: {"selected": 0, "total": 0}),
                                   "layer": defaultdict(lambda: {"selected": 0, "total": 0}),
                                   "module_type": defaultdict(lambda: {"selected": 0, "total": 0})}
        overall = {"selected": 0, "total": 0}
        for entry in self.tensors.values():
            keys = {"part": entry["part"],
                    "layer": f"{entry['part']}.{entry['layer']}" if entry["layer"] is not None else f"{entry['part']}.other",
                    "module_type": f"{entry['part']}.{entry['module_type']}"}
            for kind, key in keys.items():
                groups[kind][key]["selected"] += entry["selected"]
                groups[kind][key]["total"] += entry["total"]
            overall["selected"] += entry["selected"]
            overall["total"] += entry["total"]
        return {"overall": fraction(overall),
                "per_part": {k: fraction(v) for k, v in sorted(groups["part"].items())},
                "per_layer": {k: fraction(v) for k, v in sorted(groups["layer"].items())},
                "per_module_type": {k: fraction(v) for k, v in sorted(groups["module_type"].items())},
                "per_tensor": {k: fraction(v) for k, v in self.tensors.items()}}
