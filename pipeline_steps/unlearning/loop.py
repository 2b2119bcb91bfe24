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
zero step. Tensors outside the trainable set (the mask's module group) are frozen; the trainable
ones are held in float32 under the model's autocast (``training/precision.py``).

The log has each step's losses and gradient norm, and at the end of each epoch the fraction of
entries that differ from the starting model in its storage dtype (comparing against a copy in
host memory: a pass over every weight, too slow to take each step of a 7B run).
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from accelerate import Accelerator

from ..models.encoding import Example, PromptEncoder
from ..training.distributed import Processes, whole
from ..training.loop import batches
from ..training.precision import upcast_trainable
from ..training.progress import Progress, load_trainable_state, restore_rng, rng_state, trainable_state
from .methods import LossTerms, Method
from .settings import UnlearnSettings

log = logging.getLogger(__name__)


def unlearn(model: torch.nn.Module, method: Method, encoder: PromptEncoder, forget: Sequence[Example],
            retain: Sequence[Example], settings: UnlearnSettings, hparams, accelerator: Accelerator,
            *, trainable: set[str], mask: dict[str, torch.Tensor] | None = None,
            reference_model: torch.nn.Module | None = None, progress: Progress | None = None,
            start_values: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Unlearn in place; return the per-step log. With ``progress``, resumable as ``fit``.

    ``start_values`` is the model's starting state on the host, if the caller already holds one."""
    if method.needs_mask and mask is None:
        raise ValueError(f"method '{method.name}' needs a saliency mask")
    if method.uses_retain and not retain:
        raise ValueError(f"method '{method.name}' needs retain examples")
    if start_values is None:
        start_values = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    upcast_trainable(model)
    device = accelerator.device
    model.to(device).train()
    processes = Processes(accelerator)
    # Under an FSDP launch each process keeps a shard of every tensor (training/distributed.py).
    processes.shard(*[m for m in (model, reference_model) if m is not None])
    if processes.sharded and progress is not None:
        log.warning("progress is not saved in a sharded run: a killed job starts this stage over")
        progress = None
    named = dict(model.named_parameters())  # sharding replaces the parameters
    params = {name: named[name] for name in sorted(trainable)}
    masks = {name: processes.like(mask[name], params[name]) for name in params} if method.needs_mask else {}
    retain_used = method.uses_retain and getattr(hparams, "retain_weight", 1.0) != 0
    # Where decoupled weight decay may act: where some gradient can arrive.
    decay_region = {name: (masks[name] if method.needs_mask and not retain_used else None) for name in params}
    total_entries = sum(p.numel() for p in named.values())

    optimizer = torch.optim.AdamW(params.values(), lr=settings.learning_rate, weight_decay=0.0)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    forget_cache = [encoder.encode(e) for e in forget]
    retain_cache = [encoder.encode(e) for e in retain] if method.uses_retain else []
    retain_queue: list[list[int]] = []
    history, step, first_epoch, pending = [], 0, 0, None
    saved = progress.load() if progress else None
    if saved:
        load_trainable_state(model, saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        restore_rng(rng, saved["rng"])
        history, step, first_epoch, pending, retain_queue = (
            saved[k] for k in ("history", "step", "epoch", "pending", "retain_queue"))

    def local_batch(cache: list[dict], indices: list[int]) -> tuple[dict, float]:
        """This process's share of a global batch, on the device, and its weight."""
        local, weight = processes.share(indices)
        return {k: v.to(device) for k, v in encoder.collate([cache[i] for i in local]).items()}, weight

    for epoch in range(first_epoch, settings.epochs):
        order = pending if pending is not None else batches(range(len(forget_cache)), settings.batch_size, rng)
        pending = None
        while order:
            step_batches, weights = {}, {}
            step_batches["forget"], weights["forget"] = local_batch(forget_cache, order.pop(0))
            if retain_cache:
                if not retain_queue:
                    retain_queue = batches(range(len(retain_cache)), settings.batch_size, rng)
                step_batches["retain"], weights["retain"] = local_batch(retain_cache, retain_queue.pop())
            with accelerator.autocast():
                terms = method.terms(model, step_batches, hparams, reference_model)
            # Each process's terms weighted by its share of the global batch (training/distributed.py).
            terms = LossTerms(**{k: None if v is None else v * weights[k] for k, v in vars(terms).items()})
            values = {k: processes.sum(v.detach().clone()) for k, v in vars(terms).items() if v is not None}
            for key, value in values.items():
                if not torch.isfinite(value):
                    raise FloatingPointError(f"{method.name}: the {key} loss is {value.item()} at step {step}; "
                                             "nothing was written. Lower the learning rate or the number of epochs")
            if method.needs_mask:
                terms.forget.backward()
                for name, parameter in params.items():
                    if parameter.grad is not None:
                        parameter.grad.mul_(masks[name])
                if terms.retain is not None:
                    terms.retain.backward()
            else:
                terms.total().backward()
            processes.sum_gradients(params.values())
            grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), settings.max_grad_norm)
            if settings.weight_decay:
                with torch.no_grad():
                    for name, parameter in params.items():
                        decay = parameter * (settings.learning_rate * settings.weight_decay)
                        region = decay_region[name]
                        parameter.sub_(decay if region is None else decay * region)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % settings.log_every == 0 or not order:
                entry = {"step": step, "epoch": epoch, **{f"{k}_loss": v.item() for k, v in values.items()},
                         "loss": sum(v.item() for v in values.values()), "grad_norm": float(whole(grad_norm))}
                if not order:
                    entry["changed_fraction"] = changed_entries(named, start_values) / total_entries
                history.append(entry)
                log.info("%s step %d: %s", method.name, step,
                         " ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("step", "epoch")))
            if progress and processes.is_main:
                progress.maybe_save({"model": trainable_state(model),
                                     "optimizer": optimizer.state_dict(), "rng": rng_state(rng), "history": history,
                                     "step": step, "epoch": epoch, "pending": order, "retain_queue": retain_queue})
    return history


@torch.no_grad()
def changed_entries(parameters: dict[str, torch.Tensor], start_values: dict[str, torch.Tensor]) -> int:
    """How many entries differ from ``start_values`` once cast to its (storage) dtype."""
    return sum(int((whole(p.detach()).to("cpu", start_values[n].dtype) != start_values[n]).sum())
               for n, p in parameters.items())


def settings_dict(settings: UnlearnSettings) -> dict:
    return asdict(settings)
