"""Loading a model and its processor from a directory or a hub id, on the chosen device and dtype."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from .families import Family, family_of

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    processor: object
    family: Family
    source: str


def resolve_device(device: str) -> torch.device:
    """``auto`` picks the GPU when there is one; asking for ``cuda`` without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was requested but no CUDA device is visible; use 'cpu' or 'auto'")
    return torch.device(device)


def load_model(source: str, *, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (known: {', '.join(DTYPES)})")
    processor = AutoProcessor.from_pretrained(source)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=DTYPES[dtype])
    model.to(resolve_device(device))
    return LoadedModel(model, processor, family_of(model.config.model_type), source)


def save_model(model: torch.nn.Module, processor, out_dir) -> None:
    """Save weights (safetensors) and processor side by side, as on the hub."""
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
