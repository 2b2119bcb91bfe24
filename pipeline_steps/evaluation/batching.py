"""Batching evaluation items by length.

Benchmark items come in profile order, so a fixed-size chunk mixes short text questions with long
image prompts and pads every row to the longest. Sorting by token count first (and restoring the
order afterwards) pads each batch only to its own longest row.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


def by_length(lengths: Sequence, budget: int) -> Iterator[list[int]]:
    """Item indices in batches of ``budget`` items of similar length (sorted by ``lengths``)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), budget):
        yield order[start:start + budget]


def with_tokens(encoded: dict[str, torch.Tensor], extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """A ``PromptEncoder.encode`` output with the text tokens ``extra`` appended (all attended,
    text in ``mm_token_type_ids``; image fields untouched), ready for ``PromptEncoder.collate``."""
    grown = dict(encoded)
    grown["input_ids"] = torch.cat([encoded["input_ids"], extra])
    grown["attention_mask"] = torch.ones_like(grown["input_ids"])
    if "mm_token_type_ids" in encoded:
        grown["mm_token_type_ids"] = torch.cat([encoded["mm_token_type_ids"], torch.zeros_like(extra)])
    return grown
