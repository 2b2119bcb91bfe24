"""The hook through which a kind of training says what it does its own way in the shared loop.

``training/loop.py`` does what every kind of training does alike (AdamW, the seeded shuffle, each
process's share of a global batch, summing gradients once per step, clipping, the learning-rate
schedule, the non-finite loss check, the log, saved progress). An ``Objective`` supplies the rest:
which tensors train, which batches a step sees besides the loop's own, the loss terms and how they
are back-propagated, what is done to the weights just before the optimizer step, and its fields of
the log. Unlearning's objective is in ``unlearning/loop.py``.

The base class is supervised training (base pretraining, vanilla and reference fine-tuning): the
batch mean of the per-example answer NLL (paper Eq. 13-14), AdamW's own decoupled weight decay,
and the loss in the log averaged over the steps since the last entry.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

import torch

from ..models.encoding import Example
from .distributed import Processes
from .losses import answer_logits, answer_nll


class Objective:
    # The name of the loop's own batch (drawn from the examples handed to ``fit``) and of its loss term.
    batch_name = "train"
    # Further examples by batch name, encoded by the loop with its own; ``paired_batches`` draws from them.
    paired_examples: Mapping[str, Sequence[Example]] = {}
    # Further examples by batch name, one for each of the loop's own (the same questions with other
    # answers): every step draws them with the indices of its own batch.
    aligned_examples: Mapping[str, Sequence[Example]] = {}
    # True: AdamW applies the settings' weight decay; False: ``before_optimizer_step`` does it.
    decay_in_optimizer = True
    # True: a log entry at the end of every epoch too (with ``epoch_end_fields``), not only every
    # ``log_every`` steps and at the last step.
    log_epoch_ends = False

    def setup(self, model: torch.nn.Module, processes: Processes) -> list[torch.Tensor]:
        """The tensors the optimizer trains, in the order it holds them (the order also fixes the
        order in which the clipping norm adds them up). Called once the model is on its device."""
        return [parameter for parameter in model.parameters() if parameter.requires_grad]

    def paired_batches(self, rng: random.Random) -> dict[str, list[int]]:
        """Global batches of ``paired_examples`` (indices by batch name) to go with this step's own."""
        return {}

    def further_steps(self) -> list[dict[str, list[int]]]:
        """Optimizer steps this step takes after its first, each on global batches of
        ``paired_examples`` only (indices by batch name): none by default. They belong to the step:
        the step count, the learning-rate schedule, ``finished``, the log and saved progress count
        steps (one per batch of the loop's own), not optimizer steps. Called after ``paired_batches``
        of the same step (unlearning's ``all_per_epoch`` retain schedule, ``unlearning/loop.py``)."""
        return []

    def step_values(self, values: list[dict[str, float]]) -> dict[str, float]:
        """A step's term values, for the log's window, from those of each of its optimizer steps
        (its first, then ``further_steps``'): the first step's by default."""
        return values[0]

    def terms(self, model: torch.nn.Module, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        """This step's loss terms, each named after the batch it is a mean over: the loop weights a
        term by this process's share of that batch (``training/distributed.py``)."""
        return {self.batch_name: answer_nll(*answer_logits(model, batches[self.batch_name])).mean()}

    def backward(self, terms: dict[str, torch.Tensor]) -> None:
        terms[self.batch_name].backward()

    def before_optimizer_step(self) -> None:
        """Called after the gradients are summed and clipped, just before ``optimizer.step()``."""

    def loss_fields(self, window: list[dict[str, float]]) -> dict[str, float]:
        """The loss fields of a log entry from the terms' values of each step since the last entry."""
        return {"loss": sum(values[self.batch_name] for values in window) / len(window)}

    def epoch_end_fields(self) -> dict[str, float]:
        """Further fields of an entry logged at the end of an epoch."""
        return {}

    def finished(self, model: torch.nn.Module, step: int) -> bool:
        """Whether training stops here, after ``step`` steps, before the loop's planned end. The
        loop asks before the first step and after every step, before it saves its progress (so a
        resumed run stops where the first one would have); an objective that stops at a condition
        (calibrated unlearning, ``unlearning/calibration.py``) answers True from then on."""
        return False

    def state(self) -> dict:
        """What the objective needs, beyond the loop's own state, to resume bit-identically."""
        return {}

    def restore(self, state: dict) -> None:
        pass
