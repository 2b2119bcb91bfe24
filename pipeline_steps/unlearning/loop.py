"""Unlearning as an objective of the one training loop (``training/loop.py``), shared by every method.

Each step pairs a forget batch with a retain batch, asks the method for its loss terms, and takes
one AdamW step on their sum, the joint step of the paper's Eq. 3. Which retain batches a step
gets is the ``retain_schedule`` (a loop setting of the methods with a retain term):

* ``one_per_step`` (the default): one retain batch per forget step, the retain batches cycled in
  a seeded order, reshuffled each time the retain set is used up (independently of the epochs).
* ``all_per_epoch`` (the authors' GA_Diff, KL_Min and MMUnlearner code, which loops over the whole
  retain loader each epoch and takes a forget step every ``len(retain) // len(forget)`` retain
  steps): every retain batch once per epoch, freshly shuffled; with F forget and R retain
  batches, forget step i gets floor((i+1)R/F) - floor(iR/F) of them, about R/F, the remainder
  spread evenly. The first takes the joint step with the forget batch as above; each further one
  takes a retain-only optimizer step right after it (the method's ``retain_term``, unmasked,
  clipped and decayed as any step).

Why further steps rather than the retain term averaged over the step's k batches: what the
authors' schedule changes is how often the model descends on the retain set, R descent steps per
epoch against F ascent steps (about 19, 9 and 6 per forget step on MLLMU-Bench at 5/10/15 %);
averaging k batches into one joint step keeps one retain update per forget update and only
lowers its variance (and holds k batches of activations at once, or accumulates k backward passes).
Why a joint first step rather than the authors' forget-only one: it keeps Eq. 3 (the masked
forget gradient meets the retain gradient before clipping), and with k = 1 it is exactly
``one_per_step``. A schedule of R retain batches needs R >= F (the authors' code divides by
R // F); it is refused otherwise, and for a retain term that is off (``Method.retain_used``:
its retain-only steps would be steps of the optimizer's momentum alone). A method without a
retain term has no such setting (``settings.loop_fields``).

**What a step is**: one forget batch, with all its optimizer steps (the joint one and any
retain-only ones). Epochs have ceil(|forget| / batch_size) steps under either schedule; the log,
``log_every``, the learning-rate schedule (one move per step), saved progress (after a whole step)
and a calibrated run's ``check_every`` count these steps, so a calibrated method is checked after
the same forget batches whatever its retain schedule. The log's ``retain_loss`` is the mean over
the step's retain batches, ``grad_norm`` the joint step's; under ``all_per_epoch`` each entry
also has ``retain_batches``, the step's count, so its optimizer steps are sum(retain_batches).

For a masked method (MMUnlearner,
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

With ``lora_r`` set (``UnlearnSettings``) the method trains LoRA adapters on the linear layers of
its trainable set instead (``training/adapters.py``), and they are merged into the model when the
run ends: the model is changed in place as without them, in its own parameter names.

The log has each step's losses and gradient norm, and at the end of each epoch the fraction of
entries that differ from the starting model in its storage dtype (comparing against a copy in
host memory: a pass over every weight, too slow to take each step of a 7B run).
"""

from __future__ import annotations

import logging
import math
import random
from typing import Callable, Sequence

import torch
from accelerate import Accelerator

from ..models.encoding import Example, PromptEncoder
from ..training import adapters
from ..training.distributed import HostCopy, Processes
from ..training.loop import batches, fit
from ..training.objective import Objective
from ..training.progress import Progress
from .calibration import Calibration
from .methods import LossTerms, Method
from .settings import UnlearnSettings

log = logging.getLogger(__name__)


def unlearn(model: torch.nn.Module, method: Method, encoder: PromptEncoder, forget: Sequence[Example],
            retain: Sequence[Example], settings: UnlearnSettings, hparams, accelerator: Accelerator,
            *, trainable: set[str], mask: dict[str, torch.Tensor] | None = None,
            reference_model: torch.nn.Module | None = None, progress: Progress | None = None,
            start_values: HostCopy | dict[str, torch.Tensor] | None = None, calibration: Calibration | None = None,
            probe=None) -> list[dict]:
    """Unlearn in place; return the per-step log. With ``progress``, resumable as ``fit``.

    ``start_values`` is the model's starting state on the host (a ``HostCopy``, filled with this
    process's part of every tensor once the model is sharded, or a whole copy the caller holds).
    With a ``calibration`` and its ``probe`` (``forgetting_probe.ForgettingProbe``), the run stops
    at the calibration's rule (``unlearning/calibration.py``), which records its checks."""
    if method.needs_mask and mask is None:
        raise ValueError(f"method '{method.name}' needs a saliency mask")
    if method.uses_retain and not retain:
        raise ValueError(f"method '{method.name}' needs retain examples")
    if settings.retain_schedule != "one_per_step" and not method.uses_retain:
        raise ValueError(f"method '{method.name}' has no retain term: retain_schedule "
                         f"'{settings.retain_schedule}' does not apply to it")
    if not isinstance(start_values, HostCopy):  # before the trained tensors are upcast: the storage dtypes
        start_values = HostCopy(model) if start_values is None else HostCopy.of(start_values)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in trainable)
    # Before the frozen model is sharded, and on the whole forget set: every process, and a resumed
    # run, fix the same values.
    resolved = method.resolve_hyperparameters(hparams, reference_model, encoder, forget, settings.batch_size)
    if resolved != hparams:
        log.info("%s's settings resolved on the frozen model: %s", method.name, resolved)
    hparams = resolved
    if settings.retain_schedule == "all_per_epoch":
        check_all_per_epoch(method, hparams, len(forget), len(retain), settings.batch_size)
    trained = model
    if settings.lora_r:
        trained, trainable = adapted(model, method, settings, trainable)
    objective = Unlearning(method, hparams, settings, retain, trainable=trainable, mask=mask,
                           reference_model=reference_model, start_values=start_values,
                           alternatives=method.alternative_answers(forget), calibration=calibration,
                           probe=probe and (lambda model: probe(model, accelerator.autocast)), forget=forget)
    history = fit(trained, encoder, forget, settings, accelerator, objective, description=method.name,
                  progress=progress)
    if trained is not model:
        adapters.merge_lora(trained)  # into ``model``'s own layers
    return history


def adapted(model: torch.nn.Module, method: Method, settings: UnlearnSettings,
            trainable: set[str]) -> tuple[torch.nn.Module, set[str]]:
    """``model`` with LoRA adapters on the linear layers whose weights the method trains, and the
    adapters' parameter names (what trains instead)."""
    if method.lora_refusal:
        raise ValueError(f"method '{method.name}' cannot unlearn through LoRA: {method.lora_refusal}")
    targets = adapters.linear_modules(model, trainable)
    if not targets:
        raise ValueError(f"method '{method.name}' trains no linear layer for LoRA adapters to sit on")
    wrapped = adapters.attach_lora(model, settings.lora_r, settings.lora_alpha, settings.lora_dropout,
                                   settings.seed, targets)
    return wrapped, {name for name, p in wrapped.named_parameters() if p.requires_grad}


def check_all_per_epoch(method: Method, hparams, forget: int, retain: int, batch_size: int) -> None:
    """Refuse an ``all_per_epoch`` schedule that cannot be what it says (module docstring)."""
    if not method.retain_used(hparams):
        raise ValueError(f"retain_schedule 'all_per_epoch' with {method.name}'s retain term off: its retain-only "
                         "steps would move the weights by the optimizer's momentum alone; use 'one_per_step'")
    forget_batches, retain_batches = math.ceil(forget / batch_size), math.ceil(retain / batch_size)
    if retain_batches < forget_batches:
        raise ValueError(f"retain_schedule 'all_per_epoch' needs at least one retain batch per forget batch: "
                         f"{retain_batches} retain and {forget_batches} forget batches of {batch_size}; "
                         "use 'one_per_step'")


def spread(retain_batches: list[list[int]], forget_steps: int) -> list[list[list[int]]]:
    """An epoch's retain batches over its forget steps, in order: step i gets
    floor((i+1)R/F) - floor(iR/F) of the R batches (at least one when R >= F)."""
    count = len(retain_batches)
    return [retain_batches[i * count // forget_steps:(i + 1) * count // forget_steps] for i in range(forget_steps)]


class Unlearning(Objective):
    """One method's unlearning step: forget batch (and, for a method that asks, the same examples
    with other answers), retain batch by the retain schedule (and its retain-only steps), masked
    forget gradient."""

    batch_name = "forget"
    decay_in_optimizer = False  # decayed only where a gradient can arrive, in before_optimizer_step
    log_epoch_ends = True  # with the changed fraction

    def __init__(self, method: Method, hparams, settings: UnlearnSettings, retain: Sequence[Example], *,
                 trainable: set[str], mask: dict[str, torch.Tensor] | None,
                 reference_model: torch.nn.Module | None, start_values: HostCopy,
                 alternatives: dict[str, list[Example]] | None = None, calibration: Calibration | None = None,
                 probe: Callable[[torch.nn.Module], float] | None = None, forget: Sequence[Example] | None = None):
        self.method, self.hparams, self.settings = method, hparams, settings
        self.calibration, self.probe = calibration, probe
        self.paired_examples = {"retain": retain} if method.uses_retain else {}
        self.aligned_examples = alternatives or {}  # the forget examples with other answers
        self.trainable, self.mask, self.reference_model = trainable, mask, reference_model
        self.start_values = start_values
        self.retain_queue: list[list[int]] = []  # one_per_step: the retain batches left of the cycle
        # all_per_epoch: the retain batches of each forget step left in this epoch, and those of
        # this step still to take (``further_steps``).
        self.forget_steps = math.ceil(len(forget) / settings.batch_size) if forget is not None else 0
        self.retain_plan: list[list[list[int]]] = []
        self.further: list[list[int]] = []

    def setup(self, model: torch.nn.Module, processes: Processes) -> list[torch.Tensor]:
        # Under an FSDP launch each process keeps a shard of every tensor (training/distributed.py).
        processes.shard(*[m for m in (model, self.reference_model) if m is not None])
        self.named = dict(model.named_parameters())  # sharding replaces the parameters
        # The weights the run changes, by the starting model's names (adapters merged, for LoRA).
        self.weights = (lambda: adapters.merged_parameters(model)) if adapters.is_adapted(model) else (
            lambda: self.named)
        self.params = {name: self.named[name] for name in sorted(self.trainable)}
        needs_mask = self.method.needs_mask
        # Only this process's shard of the start values and of the mask is kept (and read, from a mask file).
        weights = self.weights()
        self.start_values.capture(weights, processes)
        self.masks = {name: processes.place(self.mask, name, p) for name, p in self.params.items()} if needs_mask else {}
        # Where decoupled weight decay may act: where some gradient can arrive.
        retain_used = self.method.retain_used(self.hparams)
        self.decay_region = {name: (self.masks[name] if needs_mask and not retain_used else None)
                             for name in self.params}
        self.total_entries = sum(p.numel() for p in weights.values())  # a DTensor's numel is its whole tensor's
        self.processes = processes
        return list(self.params.values())

    def paired_batches(self, rng: random.Random) -> dict[str, list[int]]:
        if "retain" not in self.paired_examples:
            return {}
        retain_count = len(self.paired_examples["retain"])
        if self.settings.retain_schedule == "all_per_epoch":
            if not self.retain_plan:  # an epoch's first step: every retain batch, reshuffled
                self.retain_plan = spread(batches(range(retain_count), self.settings.batch_size, rng), self.forget_steps)
            first, *self.further = self.retain_plan.pop(0)
            return {"retain": first}
        if not self.retain_queue:
            self.retain_queue = batches(range(retain_count), self.settings.batch_size, rng)
        return {"retain": self.retain_queue.pop()}

    def further_steps(self) -> list[dict[str, list[int]]]:
        """This step's retain-only steps (``all_per_epoch``): its retain batches after the first."""
        further, self.further = self.further, []
        return [{"retain": indices} for indices in further]

    def step_values(self, values: list[dict[str, float]]) -> dict[str, float]:
        """The joint step's terms, the retain term averaged over the step's retain batches, and (under
        ``all_per_epoch``) their count."""
        if self.settings.retain_schedule != "all_per_epoch" or "retain" not in values[0]:
            return values[0]
        retain = [entry["retain"] for entry in values]
        return {**values[0], "retain": sum(retain) / len(retain), "retain_batches": len(retain)}

    def terms(self, model: torch.nn.Module, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        if "forget" not in batches:  # a retain-only step
            return {"retain": self.method.retain_term(model, batches["retain"], self.hparams, self.reference_model)}
        terms = self.method.terms(model, batches, self.hparams, self.reference_model)
        return {name: term for name, term in vars(terms).items() if term is not None}

    def backward(self, terms: dict[str, torch.Tensor]) -> None:
        if not self.method.needs_mask or "forget" not in terms:  # a retain-only step is never masked
            LossTerms(**terms).total().backward()
            return
        terms["forget"].backward()
        for name, parameter in self.params.items():
            if parameter.grad is not None:
                parameter.grad.mul_(self.masks[name])
        if "retain" in terms:
            terms["retain"].backward()

    def before_optimizer_step(self) -> None:
        settings = self.settings
        if not settings.weight_decay:
            return
        with torch.no_grad():
            for name, parameter in self.params.items():
                decay = parameter * (settings.learning_rate * settings.weight_decay)
                region = self.decay_region[name]
                parameter.sub_(decay if region is None else decay * region)

    def loss_fields(self, window: list[dict[str, float]]) -> dict[str, float]:
        """This step's terms (not an average over the window) and their sum (and ``retain_batches``)."""
        values = dict(window[-1])
        count = values.pop("retain_batches", None)
        fields = {**{f"{name}_loss": value for name, value in values.items()}, "loss": sum(values.values())}
        return fields if count is None else {**fields, "retain_batches": count}

    def epoch_end_fields(self) -> dict[str, float]:
        return {"changed_fraction": changed_entries(self.weights(), self.start_values, self.processes)
                / self.total_entries}

    def finished(self, model: torch.nn.Module, step: int) -> bool:
        """A calibrated run stops at its rule's check; every process measures the same items, and
        the mean over processes decides, so all of them stop at the same step."""
        calibration = self.calibration
        if calibration is None:
            return False
        if calibration.stopped_at is not None:
            return True
        if not calibration.due(step) or (calibration.checks and calibration.checks[-1]["step"] == step):
            return False  # a resumed run does not measure its last check again
        value = self.processes.sum(torch.tensor(self.probe(model), dtype=torch.float64,
                                                device=self.processes.device)).item() / self.processes.count
        stop = calibration.record(step, value)
        log.info("step %d: Forget VQA on the selection half %.4f (target %.4f + %.2f)%s", step, value,
                 calibration.target, calibration.tolerance, ": stopping" if stop else "")
        return stop

    def state(self) -> dict:
        state = {"retain_queue": self.retain_queue, "retain_plan": self.retain_plan}
        if self.calibration is not None:
            state["calibration"] = {"checks": self.calibration.checks, "stopped_at": self.calibration.stopped_at}
        return state

    def restore(self, state: dict) -> None:
        self.retain_queue = state["retain_queue"]
        self.retain_plan = state.get("retain_plan", [])
        if self.calibration is not None:
            saved = state["calibration"]
            self.calibration.checks, self.calibration.stopped_at = saved["checks"], saved["stopped_at"]


def changed_entries(parameters: dict[str, torch.Tensor], start_values: HostCopy, processes: Processes) -> int:
    """How many entries differ from ``start_values`` once cast to its (storage) dtype (each process
    compares its shard; a collective call when sharded)."""
    return sum(start_values.changed(parameters, processes).values())
