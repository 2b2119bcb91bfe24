"""The training loop's settings, shared by every stage that trains (paper Tables 4 and 5).

Light on purpose (no torch): the workflow reads these fields, through the unlearning settings,
while Snakemake parses the config.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 1
    warmup_ratio: float | None = None  # a warm-up then cosine learning-rate schedule; None: a constant rate


@dataclass(frozen=True)
class TrainSettings(LoopSettings):
    """Supervised training (base pretraining, fine-tuning): warm-up then cosine, a log line every 25 steps."""

    log_every: int = 25
    warmup_ratio: float | None = 0.05
