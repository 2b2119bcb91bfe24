"""The MMUnlearner mask m = 1[S_T >= beta * S_P] (paper Eq. 7), tensor by tensor.

S_T and S_P are Fisher means: a file holds the sum of squared gradients and the number of terms,
so the Fisher of a union of splits is exact (sum of sums over sum of counts). The comparison
never divides:

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
  (E g)^2 + Var g, so it also ranks entries whose per-example gradients are large but cancel. The
  Fisher stage stores only squared gradients, so SalUn's exact criterion would need a stage of its
  own; this one reuses what is on disk. Ties are broken by ``torch.topk``.

A control keeps the Fisher mask's per-tensor sparsity exactly, so the two differ only in where the
entries lie within each tensor.
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict

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
