"""Loading a model and its processor from a directory or a hub id, on the chosen device and dtype."""

from __future__ import annotations

import hashlib
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


def model_fingerprint(model_dir) -> str:
    """A content hash of a saved model (config and weights), to tell which model an artifact
    (a Fisher file, a mask) was computed from. Hashes every weight byte: seconds for a 7B model."""
    from pathlib import Path

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ValueError(f"'{model_dir}' is not a saved model directory; Fisher files are computed on local models")
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(model_dir.glob("config.json")) + sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()

