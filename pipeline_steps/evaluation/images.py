"""Vision-tower outputs computed once per distinct image and reused by every pass that shows it.

A benchmark asks many questions about one portrait: MLLMU-Bench puts about ten multiple-choice,
generation and fill-in-the-blank items on each profile image, and likelihood scoring used to put
each item's image through the vision tower once per option. The image features do not depend on
the question, so ``ImageFeatures`` runs the tower once per distinct image of a column and hands
the result to the language model through transformers' ``mm_encoder_outputs`` argument (accepted
by ``forward`` and ``generate`` of the LLaVA and Qwen2-VL classes in transformers 5), which takes
the place of ``pixel_values``. For Qwen2-VL, whose vision tower attends image by image, this is
most of the evaluation's cost on small models.

Images are told apart by object identity: ``evaluate`` opens each profile's image once and puts
the same object in every item asked about it. The features of a batch are the same tensors the
model would compute from ``pixel_values`` (the tower sees each image on its own: CLIP batches
independent images, Qwen2-VL's attention is per image), up to the rounding of batched matmuls.
A model whose ``forward`` takes no ``mm_encoder_outputs`` gets its ``pixel_values`` as before.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..models.encoding import PromptEncoder


def _is_pixel_field(key: str) -> bool:
    """The vision tower's own inputs; the other image fields (``image_grid_thw``) also place the
    image tokens in the sequence (Qwen2-VL's rotary positions) and stay in the batch."""
    return key.startswith("pixel_values")


class ImageFeatures:
    """Per-image vision features of one model, filled on demand, keyed by image object."""

    def __init__(self, model, batch_size: int):
        self.base = model.model
        self.batch_size = batch_size
        self.enabled = "mm_encoder_outputs" in inspect.signature(self.base.forward).parameters
        self._features: dict[int, torch.Tensor] = {}
        self._images: dict[int, object] = {}  # holds the images so their ids stay unique

    def add(self, shown: Sequence[tuple[object, dict[str, torch.Tensor]]]) -> None:
        """Encode the images not seen yet; ``shown`` pairs an image with one ``PromptEncoder.encode``
        output that shows it (its non-sequence fields are that image's processed pixels)."""
        if not self.enabled:
            return
        fresh: dict[int, dict[str, torch.Tensor]] = {}
        for image, encoded in shown:
            if image is not None and id(image) not in self._features and id(image) not in fresh:
                fresh[id(image)] = {k: v for k, v in encoded.items() if not PromptEncoder.is_sequence_field(k)}
                self._images[id(image)] = image
        keys = list(fresh)
        device = next(self.base.parameters()).device
        for start in range(0, len(keys), self.batch_size):
            chunk = keys[start:start + self.batch_size]
            fields = {name: torch.cat([fresh[key][name] for key in chunk]).to(device) for name in fresh[chunk[0]]}
            output = self.base.get_image_features(**fields, return_dict=True)
            self._features.update(zip(chunk, output.pooler_output))

    def inputs(self, images: Sequence[object | None], batch: dict[str, torch.Tensor]) -> dict:
        """``batch`` (collated from encodings of ``images``, in order) with the cached features in
        place of its pixels."""
        if not self.enabled or not any(image is not None for image in images):
            return dict(batch)
        features = [self._features[id(image)] for image in images if image is not None]
        inputs = {key: value for key, value in batch.items() if not _is_pixel_field(key)}
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=features)}
        return inputs

    def clear(self) -> None:
        self._features.clear()
        self._images.clear()
