"""The measurement a calibrated run stops on (``calibration.py``): a model's Forget VQA on the
selection half of the forget people, scored as ``evaluate`` scores it (the same items, the same
scoring mode), so the table's selection-half value of the point a run stopped at is the value the
run stopped on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..benchmarks.layouts import layout_of
from ..benchmarks.records import read_manifest
from ..evaluation.images import ImageFeatures
from ..evaluation.protocols import protocol_of
from ..evaluation.scoring import accuracy, asked_items, score_multiple_choice
from ..models.encoding import PromptEncoder
from ..reporting.estimates import people_half

FORGET = "forget_vqa"


class ForgettingProbe:
    """A model's Forget VQA on the selection half of the forget people, as ``evaluate`` scores it."""

    def __init__(self, benchmark: Path, forget_ratio: int, encoder: PromptEncoder, scoring: str,
                 batch_size: int, max_new_tokens: int):
        manifest = read_manifest(benchmark)
        layout = layout_of(manifest)
        self.protocol = protocol_of(manifest)  # generate scoring asks and reads as the benchmark does
        records, modality = layout.records(benchmark, forget_ratio)[layout.columns[FORGET].group]
        selection = people_half([record.id for record in records], "selection")
        self.items = asked_items([r for r in records if r.id in selection], modality, "multiple_choice", benchmark)
        if not self.items:
            raise ValueError(f"benchmark {benchmark} has no Forget VQA items about the selection half of its "
                             f"forget_{forget_ratio} people to calibrate on")
        self.encoder, self.scoring = encoder, scoring
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, autocast=contextlib.nullcontext) -> float:
        training = model.training
        model.eval()
        try:
            with autocast():  # the vision features are the model's current ones: a fresh cache per check
                rows = score_multiple_choice(model, self.encoder, self.items, [self.scoring], self.batch_size,
                                             self.max_new_tokens, ImageFeatures(model, self.batch_size), FORGET,
                                             self.protocol)
        finally:
            model.train(training)
        return accuracy(row[self.scoring]["correct"] for row in rows)["accuracy"]
