"""The unlearning loop shared by every method.

Each step pairs a forget batch with a retain batch (retain batches are cycled in a seeded order),
asks the method for its loss terms, and takes one AdamW step. For a masked method (MMUnlearner,
paper Eq. 3) the update is built so that entries outside the mask never receive any forget signal:

1. the forget term is back-propagated alone and its gradient multiplied by the mask,
2. then the retain term's gradient is added (unmasked),
3. then the combined gradient is clipped and handed to the optimizer.

So the mask acts before clipping (the clip scale is not set by gradients that are then thrown
away) and before the two gradients meet; AdamW's moments outside the mask only ever see retain
gradients. Decoupled weight decay is applied only where a gradient can arrive (the mask, plus
everything when a retain term is used), so with the retain weight at 0 every entry outside the
mask stays bit-identical to the vanilla model: Adam turns a zero gradient with zero moments into a
zero step. Tensors outside the trainable set (the mask's module group) are frozen.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from accelerate import Accelerator

from ..models.encoding import Example, PromptEncoder
from ..training.loop import batches
from .methods import Method, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlearnSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 1


def unlearn(model: torch.nn.Module, method: Method, encoder: PromptEncoder, forget: Sequence[Example],
            retain: Sequence[Example], settings: UnlearnSettings, loss_settings: Settings, accelerator: Accelerator,
            *, trainable: set[str], mask: dict[str, torch.Tensor] | None = None,
            reference_model: torch.nn.Module | None = None) -> list[dict]:
    """Unlearn in place; return the per-step log."""
    if method.masked and mask is None:
        raise ValueError(f"method '{method.name}' needs a saliency mask")
    if method.uses_retain and not retain:
        raise ValueError(f"method '{method.name}' needs retain examples")
    named = dict(model.named_parameters())
    for name, parameter in named.items():
        parameter.requires_grad_(name in trainable)
    params = {name: named[name] for name in sorted(trainable)}
    device = accelerator.device
    masks = {name: mask[name].to(device) for name in params} if method.masked else {}
    retain_used = method.uses_retain and loss_settings.retain_weight != 0
    # Where decoupled weight decay may act: where some gradient can arrive.
    decay_region = {name: (masks[name] if method.masked and not retain_used else None) for name in params}
    start_values = {name: p.detach().clone() for name, p in named.items()}
    total_entries = sum(p.numel() for p in named.values())

    optimizer = torch.optim.AdamW(params.values(), lr=settings.learning_rate, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    forget_cache = [encoder.encode(e) for e in forget]
    retain_cache = [encoder.encode(e) for e in retain] if method.uses_retain else []
    retain_queue: list[list] = []
    history, step = [], 0

    def to_device(encoded: list[dict]) -> dict:
        return {k: v.to(device) for k, v in encoder.collate(encoded).items()}

    for epoch in range(settings.epochs):
        for forget_batch in batches(forget_cache, settings.batch_size, rng):
            step_batches = {"forget": to_device(forget_batch)}
            if retain_cache:
                if not retain_queue:
                    retain_queue = batches(retain_cache, settings.batch_size, rng)
                step_batches["retain"] = to_device(retain_queue.pop())
            terms = method.terms(model, step_batches, loss_settings, reference_model)
            values = {k: getattr(terms, k) for k in ("forget", "retain") if getattr(terms, k) is not None}
            for key, value in values.items():
                if not torch.isfinite(value):
                    raise FloatingPointError(f"{method.name}: the {key} loss is {value.item()} at step {step}; "
                                             "nothing was written. Lower the learning rate or the number of epochs")
            if method.masked:
                accelerator.backward(terms.forget)
                for name, parameter in params.items():
                    if parameter.grad is not None:
                        parameter.grad.mul_(masks[name])
                if terms.retain is not None:
                    accelerator.backward(terms.retain)
            else:
                accelerator.backward(terms.total())
            grad_norm = accelerator.clip_grad_norm_(list(params.values()), settings.max_grad_norm)
            if settings.weight_decay:
                with torch.no_grad():
                    for name, parameter in params.items():
                        decay = parameter * (settings.learning_rate * settings.weight_decay)
                        region = decay_region[name]
                        parameter.sub_(decay if region is None else decay * region)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % settings.log_every == 0:
                with torch.no_grad():
                    changed = sum(int((p != start_values[n]).sum()) for n, p in named.items())
                entry = {"step": step, "epoch": epoch, **{f"{k}_loss": v.item() for k, v in values.items()},
                         "loss": sum(v.item() for v in values.values()), "grad_norm": float(grad_norm),
                         "changed_fraction": changed / total_entries}
                history.append(entry)
                log.info("%s step %d: %s", method.name, step,
                         " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("step", "epoch")))
    return history


def settings_dict(settings: UnlearnSettings) -> dict:
    return asdict(settings)
