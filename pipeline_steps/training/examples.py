"""Training examples read from a prepared benchmark: what fine-tuning, Fisher estimation and
unlearning learn from, saliency measures and unlearning forgets.

A profile's training pair is asked with the profile's image when it is image-grounded (``vqa``)
and with no image when it is text-only, so the two modalities of every benchmark table stay apart
in training as in scoring. Each profile's image is read once and shared by its pairs.

The Fisher splits (``benchmarks/records.py``) name what a saliency map is measured on: a group of
profiles (the forget or retain profiles of a forget ratio, or the real-world ones) and one
modality; ``fisher_split_source`` says which canonical split and modality each is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from PIL import Image

from ..benchmarks.records import FISHER_SPLITS, forget_split, read_split, retain_split
from ..cli import StageError
from ..models.encoding import Example



def fisher_split_source(split: str, forget_ratio: int) -> tuple[str, str]:
    """The canonical split and the modality a Fisher split (``forget_vqa``, ...) is made of."""
    if split not in FISHER_SPLITS:
        raise StageError(f"unknown Fisher split '{split}' (known: {', '.join(FISHER_SPLITS)})")
    group, modality = split.rsplit("_", 1)
    canonical = {"forget": forget_split(forget_ratio), "retain": retain_split(forget_ratio), "real": "real_world"}
    return canonical[group], modality


def split_examples(benchmark: Path, splits: Iterable[str], modalities: Iterable[str]) -> list[Example]:
    """The training pairs of ``modalities`` of every profile of ``splits``, in the splits' order."""
    splits, modalities = list(splits), list(modalities)
    examples = []
    for record in [r for split in splits for r in read_split(benchmark, split)]:
        pairs = [pair for pair in record.train if pair.modality in modalities]
        image = None
        if record.image and any(pair.modality == "vqa" for pair in pairs):
            image = Image.open(Path(benchmark) / record.image).convert("RGB")
        examples += [Example(pair.question, pair.answer, image if pair.modality == "vqa" else None) for pair in pairs]
    if not examples:
        raise StageError(f"split(s) {', '.join(splits)} of {benchmark} have no training pairs of modality "
                         f"{' or '.join(modalities)}")
    return examples
