"""Batching evaluation items by length.

Benchmark items come in profile order, so a fixed-size chunk mixes short text questions with long
image prompts and pads every row to the longest. Sorting by token count first (and restoring the
order afterwards) pads each batch only to its own longest row. Batches are bounded by the number
of rows they put through the model (``rows`` per item: one per option when options are scored
against one shared prompt), so a batch costs at most as much memory as the chunk of
``batch_size`` sequences it replaces.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def by_length(lengths: Sequence, rows: Sequence[int] | None = None, budget: int = 64) -> Iterator[list[int]]:
    """Item indices in batches of similar length: sorted by ``lengths`` (any sortable keys), each
    batch holding as many items as fit in ``budget`` rows (at least one item)."""
    rows = rows if rows is not None else [1] * len(lengths)
    batch, used = [], 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batch and used + rows[index] > budget:
            yield batch
            batch, used = [], 0
        batch.append(index)
        used += rows[index]
    if batch:
        yield batch


def pad_right(sequences: Sequence[torch.Tensor], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D id tensors right-padded into ``[n, longest]``, with the mask of real tokens."""
    length = max(sequence.shape[0] for sequence in sequences)
    ids = torch.full((len(sequences), length), fill, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : sequence.shape[0]] = sequence
        mask[row, : sequence.shape[0]] = 1
    return ids, mask
