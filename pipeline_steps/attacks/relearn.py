"""Relearning: a few fine-tuning steps on some of the forget people; does the rest come back?

Unlearning that only hides knowledge is undone by a little training on related data (Lynch et al.
2024; Hu et al. 2025): fine-tuned on part of the forget set, such a model answers the *other*
part again, which a model that never learned it (the oracle, attacked the same way) does not.
So the attack fine-tunes the variant with the one training loop (``training/loop.py``, supervised
answer NLL, AdamW at a constant rate) on:

* ``data: forget``: the training pairs of the *selection half* of the forget people
  (``reporting/estimates.people_half``, even positions in the sorted ids);
* ``data: retain``: the training pairs of as many retain people (the first in sorted-id order),
  the control: how much of the forget columns any fine-tuning, on people unrelated to them,
  brings back;

and stores the result as changes for the ``evaluate`` stage. Its forget columns are read on the
*report half* of the forget people only (``evaluated_half``), whom relearning never saw: the test
in ``tests/test_attacks.py`` checks the two sets are disjoint. The halves are the ones the
equal-forgetting table chooses (selection) and reports (report) on, so at an equal-forgetting point
neither relearning nor the choice of the point has seen the people it is read on.

Every parameter trains by default, as the embedded default's fine-tuning does; ``lora_r`` trains
LoRA adapters on every linear layer instead and merges them, as the real configs' fine-tuning does
(a 7B model's full-parameter AdamW state does not fit one GPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..benchmarks.records import MODALITIES, forget_split, read_split, retain_split
from ..cli import StageError
from ..reporting.estimates import people_half
from ..storage import write_jsonl
from ..training.settings import LoopSettings
from ..unlearning.methods import hyperparameter
from . import Attack, Target, profile_examples, register

log = logging.getLogger(__name__)
DATA = ("forget", "retain")


@dataclass(frozen=True)
class RelearnSettings:
    data: str = hyperparameter("forget", "what is relearned: the selection half of the forget people, or as many "
                               "retain people (the control)", enum=list(DATA))
    modalities: str = hyperparameter("vqa", "which of their training pairs, comma-separated (vqa, text)")
    epochs: int = hyperparameter(1, "passes over the relearning pairs", minimum=1)
    batch_size: int = hyperparameter(8, "relearning batch size", minimum=1)
    learning_rate: float = hyperparameter(3.0e-4, "AdamW learning rate (constant)", exclusiveMinimum=0)
    max_grad_norm: float = hyperparameter(1.0, "gradient clipping norm", exclusiveMinimum=0)
    lora_r: int = hyperparameter(0, "LoRA rank (adapters on every linear layer, merged after); 0 trains every "
                                 "parameter, as the embedded default's fine-tuning does", minimum=0)


def relearned_people(benchmark: Path, forget_ratio: int, data: str) -> list[str]:
    """The ids of the people a relearning attack trains on, sorted."""
    forget = [r.id for r in read_split(benchmark, forget_split(forget_ratio))]
    chosen = people_half(forget, "selection")
    if data == "forget":
        return sorted(chosen)
    if data == "retain":
        return sorted(r.id for r in read_split(benchmark, retain_split(forget_ratio)))[:len(chosen)]
    raise StageError(f"relearning data '{data}' is not one of {DATA}")


def relearning_examples(benchmark: Path, forget_ratio: int, settings: RelearnSettings) -> list[tuple[str, object]]:
    """(profile id, Example) of every pair relearning trains on."""
    modalities = [m.strip() for m in settings.modalities.split(",") if m.strip()]
    if not modalities or set(modalities) - set(MODALITIES):
        raise StageError(f"setting modalities '{settings.modalities}' is not a comma-separated list of "
                         f"{', '.join(MODALITIES)}")
    people = set(relearned_people(benchmark, forget_ratio, settings.data))
    split = forget_split(forget_ratio) if settings.data == "forget" else retain_split(forget_ratio)
    pairs = [pair for m in modalities for pair in profile_examples(benchmark, split, m) if pair[0] in people]
    if not pairs:
        raise StageError(f"relearning on {settings.data} data of forget ratio {forget_ratio} has no training pairs "
                         f"of modality {settings.modalities}")
    return pairs


@register
class Relearn(Attack):
    kind, label = "relearn", "Relearn"
    Settings = RelearnSettings
    scope = "protocol"
    produces_model = True
    evaluated_half = "report"

    def training(self, settings: RelearnSettings) -> dict:
        return {"lora_r": settings.lora_r, "batch_size": settings.batch_size}

    def run(self, target: Target, settings: RelearnSettings, scratch: Path) -> dict:
        # The loop's imports (torch, accelerate, transformers) here: the workflow reads this module while it parses.
        from ..models.encoding import PromptEncoder
        from ..training.adapters import attach_lora, merge_lora
        from ..training.loop import fit
        from ..training.precision import training_accelerator

        pairs = relearning_examples(target.benchmark, target.forget_ratio, settings)
        loop = LoopSettings(epochs=settings.epochs, batch_size=settings.batch_size,
                            learning_rate=settings.learning_rate, max_grad_norm=settings.max_grad_norm,
                            seed=target.seed)
        accelerator = training_accelerator(target.device, target.dtype)
        model = target.model
        if target.gradient_checkpointing:
            from ..training.precision import enable_gradient_checkpointing

            enable_gradient_checkpointing(model)
        if settings.lora_r:  # alpha twice the rank, no dropout
            model = attach_lora(model, settings.lora_r, 2 * settings.lora_r, 0.0, target.seed)
        history = fit(model, PromptEncoder(target.processor), [e for _, e in pairs], loop, accelerator,
                      description=f"relearn {settings.data}")
        # Merged into the variant's own tensors (which the stage compares with the starting model).
        target.model = (merge_lora(model) if settings.lora_r else model).eval()
        write_jsonl(scratch / "train_log.jsonl", history)
        people = sorted({p for p, _ in pairs})
        log.info("relearned %d pairs of %d people in %d steps", len(pairs), len(people), history[-1]["step"])
        return {"relearned_people": people, "pairs": len(pairs), "steps": history[-1]["step"],
                "final_loss": history[-1]["loss"]}
