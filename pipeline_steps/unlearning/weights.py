"""Unlearned weights stored as what changed from the vanilla model, and applied back onto it.

A sweep over betas or methods would write a full checkpoint per point; instead only the tensors
that differ from the vanilla model are stored, each either whole or, when at most a third of its
entries moved (masked unlearning without a retain term), as ``<name>::indices`` and
``<name>::values``. The file records the vanilla model's fingerprint, and applying it to another
model is refused. It is written one tensor at a time (``write_changes``): a sharded run gathers
each tensor to the main process only when it is written, never the whole model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from ..saliency.tensor_files import TensorFile, write_tensors

SPARSE_LIMIT = 1 / 3


def save_changes(final: Mapping[str, torch.Tensor], start_values: Mapping[str, torch.Tensor], stem,
                 metadata: dict[str, str]) -> dict:
    """Write the tensors of ``final`` (name -> tensor) that differ from ``start_values`` in its dtypes;
    return counts."""

    def pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        # In the dtype the model is stored in: a float32 training copy is written back rounded.
        return final[name].detach().to("cpu", start_values[name].dtype), start_values[name].cpu()

    changed = {}
    for name in final:
        value, start = pair(name)
        changed[name] = int((value != start).sum())
    specs = {name: (start_values[name].dtype, tuple(final[name].shape)) for name in final}
    return write_changes(specs, changed, pair, stem, metadata)


def write_changes(specs: dict[str, tuple[torch.dtype, tuple[int, ...]]], changed: dict[str, int],
                  pair: Callable[[str], tuple[torch.Tensor, torch.Tensor] | None], stem,
                  metadata: dict[str, str]) -> dict:
    """Write what changed, holding one tensor at a time; return counts.

    ``specs`` are every tensor's storage dtype and shape, ``changed`` how many of its entries moved,
    and ``pair(name)`` gives (its final value, its start value), whole, in the storage dtype; it is
    called once for each tensor that moved, in ``specs`` order. With ``stem`` None nothing is written
    and ``pair`` is only called in that order: the other processes of a sharded run take part in
    gathering each tensor to the main process this way (``pair`` returns None there)."""
    moved_names = [name for name in specs if changed[name]]
    counts = {"changed_tensors": len(moved_names), "sparse_tensors": 0,
              "changed_entries": sum(changed[name] for name in moved_names)}
    if stem is None:
        for name in moved_names:
            pair(name)
        return counts
    entries: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
    sparse = set()
    for name in moved_names:
        dtype, shape = specs[name]
        if changed[name] <= SPARSE_LIMIT * math.prod(shape):
            entries[f"{name}::indices"] = (torch.int64, (changed[name],))
            entries[f"{name}::values"] = (dtype, (changed[name],))
            sparse.add(name)
        else:
            entries[name] = (dtype, shape)
    counts["sparse_tensors"] = len(sparse)
    held: dict[str, torch.Tensor] = {}  # the entries of the one tensor being written

    def produce(entry: str) -> torch.Tensor:
        name = entry.split("::")[0]
        if entry not in held:
            held.clear()
            value, start = pair(name)
            moved = value != start
            if int(moved.sum()) != changed[name]:
                raise RuntimeError(f"tensor '{name}': {int(moved.sum())} entries moved, {changed[name]} were counted")
            if name in sparse:
                indices = moved.reshape(-1).nonzero().squeeze(1)
                held.update({f"{name}::indices": indices, f"{name}::values": value.reshape(-1)[indices]})
            else:
                held[name] = value.contiguous()
        return held.pop(entry)

    write_tensors(stem, entries, produce, {**metadata, **{k: str(v) for k, v in counts.items()}})
    return counts


def apply_changes(model: torch.nn.Module, path, fingerprint: str) -> dict[str, str]:
    """Overwrite ``model``'s tensors with the stored changes; return the file's metadata."""
    changes = TensorFile(path)
    if changes.metadata.get("vanilla_fingerprint") != fingerprint:
        raise ValueError(f"{changes.index_path} was computed from the model with fingerprint "
                         f"{changes.metadata.get('vanilla_fingerprint')}, not {fingerprint}")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name in changes.names():
            if name.endswith("::values"):
                continue
            if name.endswith("::indices"):
                target = parameters[name[: -len("::indices")]]
                flat = target.view(-1)
                flat[changes.get(name).to(target.device)] = changes.get(name.replace("::indices", "::values")).to(
                    target.device, target.dtype)
            else:
                if name not in parameters or parameters[name].shape != changes.spec(name)[1]:
                    raise ValueError(f"stored tensor '{name}' does not fit the model")
                parameters[name].copy_(changes.get(name))
    return changes.metadata
