"""Unlearned weights stored as what changed from the vanilla model, and applied back onto it.

A sweep over betas or methods would write a full checkpoint per point; instead only the tensors
that differ from the vanilla model are stored, each either whole or, when at most a third of its
entries moved (masked unlearning without a retain term), as ``<name>::indices`` and
``<name>::values``. The file records the vanilla model's fingerprint, and applying it to another
model is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..saliency.tensor_files import TensorFile, write_tensors

SPARSE_LIMIT = 1 / 3


def save_changes(final: Mapping[str, torch.Tensor], start_values: dict[str, torch.Tensor], stem,
                 metadata: dict[str, str]) -> dict:
    """Write the tensors of ``final`` (name -> tensor) that differ from ``start_values`` in its dtypes;
    return counts."""
    entries: dict[str, torch.Tensor] = {}
    counts = {"changed_tensors": 0, "sparse_tensors": 0, "changed_entries": 0}
    for name, parameter in final.items():
        # In the dtype the model is stored in: a float32 training copy is written back rounded.
        value = parameter.detach().to("cpu", start_values[name].dtype)
        moved = value != start_values[name].cpu()
        changed = int(moved.sum())
        if not changed:
            continue
        counts["changed_tensors"] += 1
        counts["changed_entries"] += changed
        if changed <= SPARSE_LIMIT * value.numel():
            indices = moved.reshape(-1).nonzero().squeeze(1)
            entries[f"{name}::indices"] = indices
            entries[f"{name}::values"] = value.reshape(-1)[indices]
            counts["sparse_tensors"] += 1
        else:
            entries[name] = value.contiguous()
    specs = {name: (t.dtype, tuple(t.shape)) for name, t in entries.items()}
    write_tensors(stem, specs, entries.__getitem__, {**metadata, **{k: str(v) for k, v in counts.items()}})
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
