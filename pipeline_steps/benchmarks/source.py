"""Reading a benchmark's hub dataset (or a local copy of it) config by config.

Every reader goes through ``open_config``: ``datasets.load_dataset(<hub id or local directory>,
<config>)``, so a hub download and a ``git clone`` / ``hf download --local-dir`` copy are read by
the same code. Images are kept as the raw bytes the parquet files hold and stored once each by
``ImageStore``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import datasets
from PIL import Image


def open_config(source: str, config: str, cache_dir: str | None = None) -> datasets.Dataset | None:
    """One config's ``train`` split with images left as raw bytes, or None if the config is absent."""
    try:
        table = datasets.load_dataset(source, config, split="train", cache_dir=cache_dir)
    except ValueError as error:  # datasets raises ValueError for an unknown config name
        if config in str(error):
            return None
        raise
    for column, feature in table.features.items():
        if isinstance(feature, datasets.Image):
            table = table.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            table = table.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return table


def image_bytes(value) -> bytes:
    """The encoded bytes of an image cell: a ``{bytes, path}`` struct or a PIL image."""
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    if isinstance(value, dict) and value.get("path"):
        return Path(value["path"]).read_bytes()
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise ValueError(f"cannot read an image from {type(value).__name__}")


def content_id(data: bytes, length: int = 20) -> str:
    return hashlib.sha256(data).hexdigest()[:length]


class ImageStore:
    """Saves images once each under ``images/<content hash>.<format>``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    def save(self, value) -> str:
        data = image_bytes(value)
        kind = Image.open(io.BytesIO(data)).format.lower()
        relative = f"images/{content_id(data)}.{kind}"
        target = self.root / relative
        if not target.exists():
            target.write_bytes(data)
        return relative
