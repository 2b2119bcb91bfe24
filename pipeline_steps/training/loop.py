"""The one training loop: base pretraining, vanilla and reference fine-tuning, and unlearning.

It takes AdamW steps on whatever device ``accelerate`` chose, with gradient clipping and, when the
settings have a warm-up (``TrainSettings``), a warm-up then cosine learning-rate schedule. What a
step minimises, and what else it does, is its ``Objective`` (``training/objective.py``): by default
the per-example mean answer NLL (paper Eq. 13-14); unlearning's is in ``unlearning/loop.py``.

Each example is encoded once, when the loop first reads it (``EncodedExamples``). Shuffling is
seeded, so a run is reproducible, and a run killed part-way resumes bit-identically from its saved
progress (``training/progress.py``). A step is one batch of the loop's own: one optimizer step, unless the
objective takes further ones with it (``Objective.further_steps``); steps are what the schedule,
the log and saved progress count. Under
a multi-process launch every process draws the same global batches and takes its share of each;
gradients are summed once per step, after the objective's backward pass
(``training/distributed.py``).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Sequence

import torch
from accelerate import Accelerator
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..models.encoding import Example, PromptEncoder
from .distributed import Processes, whole
from .objective import Objective
from .precision import upcast_trainable
from .progress import Progress, load_trainable_state, restore_rng, rng_state, trainable_state
from .settings import LoopSettings

log = logging.getLogger(__name__)


def batches(items: Sequence, batch_size: int, rng: random.Random) -> list[list]:
    """Shuffled batches.

    Deliberately not grouped by length: in these benchmarks a length group is mostly one question
    template, and batches of one attribute at a time slowed fact learning severalfold (measured:
    60 faces' visual facts 0.61 vs 0.87 accuracy after 30 epochs).
    """
    order = list(range(len(items)))
    rng.shuffle(order)
    return [[items[i] for i in order[start:start + batch_size]] for start in range(0, len(order), batch_size)]


class EncodedExamples(Sequence):
    """Examples encoded when first read, then kept.

    A retain-based method reads a few retain batches per step, so one epoch over the forget split
    reads about a ninth of the retain split at the default forget ratio; encoding all of it up front
    was most of GA_Diff's and MMUnlearner's cost over a bare forward+backward loop
    (``perf/training_cost.py``). Encoding is a pure function of the example, so when it happens
    changes no batch.
    """

    def __init__(self, encoder: PromptEncoder, examples: Sequence[Example]):
        self._encoder, self._examples, self._encoded = encoder, examples, {}

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self._encoded:
            self._encoded[index] = self._encoder.encode(self._examples[index])
        return self._encoded[index]


def fit(model: torch.nn.Module, encoder: PromptEncoder, examples: Sequence[Example], settings: LoopSettings,
        accelerator: Accelerator, objective: Objective | None = None, description: str = "train",
        progress: Progress | None = None) -> list[dict]:
    """Train ``model`` in place; return the logged history (one dict per logged step).

    Each epoch goes once through ``examples`` in shuffled batches, until the objective says it is
    ``finished``. With ``progress``, the loop saves its state as it goes and, if an earlier run of
    the same job left one, starts from it.
    """
    objective = objective or Objective()
    caches = {name: EncodedExamples(encoder, paired) for name, paired in
              {objective.batch_name: examples, **objective.paired_examples, **objective.aligned_examples}.items()}
    total_steps = math.ceil(len(examples) / settings.batch_size) * settings.epochs
    upcast_trainable(model)
    device = accelerator.device
    model.to(device).train()
    processes = Processes(accelerator)
    parameters = objective.setup(model, processes)
    if processes.sharded and progress is not None:
        log.warning("progress is not saved in a sharded run: a killed job starts this stage over")
        progress = None
    optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate,
                                  weight_decay=settings.weight_decay if objective.decay_in_optimizer else 0.0)
    warmup_ratio = settings.warmup_ratio
    scheduler = None if warmup_ratio is None else get_cosine_schedule_with_warmup(
        optimizer, int(warmup_ratio * total_steps), total_steps)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    history, window, step, first_epoch, pending = [], [], 0, 0, None
    saved = progress.load() if progress else None
    if saved:
        load_trainable_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        restore_rng(rng, saved["rng"])
        objective.restore(saved["objective"])
        history, window, step, first_epoch, pending = (saved[k] for k in ("history", "window", "step", "epoch", "pending"))

    def local_batch(name: str, indices: list[int]) -> tuple[dict, float]:
        """This process's share of a global batch, on the device, and its weight."""
        local, weight = processes.share(indices)
        return {k: v.to(device) for k, v in encoder.collate([caches[name][i] for i in local]).items()}, weight

    def optimizer_step(global_batches: dict[str, list[int]]) -> tuple[dict[str, float], torch.Tensor]:
        """One optimizer step on these global batches: its terms' values and the gradient norm."""
        step_batches, weights = {}, {}
        for name, indices in global_batches.items():
            step_batches[name], weights[name] = local_batch(name, indices)
        with accelerator.autocast():
            terms = objective.terms(model, step_batches)
        # Each process's terms weighted by its share of the global batch (training/distributed.py).
        terms = {name: term * weights[name] for name, term in terms.items()}
        values = {name: processes.sum(term.detach().clone()).item() for name, term in terms.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                raise FloatingPointError(f"{description}: the {name} loss is {value} at step {step}; nothing "
                                         "was written. Lower the learning rate or the number of epochs, or "
                                         "check the data")
        objective.backward(terms)
        processes.sum_gradients(parameters)
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        objective.before_optimizer_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return values, grad_norm

    bar = tqdm(total=total_steps, initial=step, desc=description, mininterval=5, disable=not accelerator.is_main_process)
    stopped = objective.finished(model, step)
    for epoch in range(first_epoch, settings.epochs):
        if stopped:
            break
        order = pending if pending is not None else batches(range(len(examples)), settings.batch_size, rng)
        pending = None
        while order and not stopped:
            own = order.pop(0)
            # A step: one batch of the loop's own, and any further optimizer steps its objective takes
            # with it (the log's grad_norm is the first's); the learning rate moves once per step.
            values, grad_norm = optimizer_step({objective.batch_name: own,
                                                **dict.fromkeys(objective.aligned_examples, own),
                                                **objective.paired_batches(rng)})
            further = [optimizer_step(global_batches)[0] for global_batches in objective.further_steps()]
            if scheduler is not None:
                scheduler.step()
            step += 1
            window.append(objective.step_values([values, *further]))
            bar.update()
            stopped = objective.finished(model, step)
            if (step % settings.log_every == 0 or step == total_steps or stopped
                    or (objective.log_epoch_ends and not order)):
                entry = {"step": step, "epoch": epoch, **objective.loss_fields(window),
                         "grad_norm": float(whole(grad_norm))}
                if scheduler is not None:
                    entry["lr"] = scheduler.get_last_lr()[0]
                if not order:
                    entry |= objective.epoch_end_fields()
                history.append(entry)
                log.info("%s step %d/%d: %s", description, step, total_steps,
                         " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("step", "epoch")))
                window = []
            if progress and processes.is_main:
                progress.maybe_save({"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                                     "scheduler": None if scheduler is None else scheduler.state_dict(),
                                     "rng": rng_state(rng), "objective": objective.state(), "history": history,
                                     "window": window, "step": step, "epoch": epoch, "pending": order})
    bar.close()
    return history
