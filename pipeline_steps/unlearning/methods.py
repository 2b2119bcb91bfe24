"""Unlearning objectives, one small class each behind a registry.

A method turns ``{"forget": batch, "retain": batch}`` into loss terms: the ``forget`` term (the
one a saliency mask restricts) and the ``retain`` term; the loss is their sum. Adding a method
(SimNPO, RMU, ...) is one class here. Losses are per-example means over answer tokens (paper
Eq. 13), averaged over the batch:

* ``ga``: -L_forget (paper Eq. 15).
* ``ga_diff``: -L_forget + L_retain (Eq. 16).
* ``kl_min``: -L_forget + KL(p_theta || p_vanilla) on the retain batch (Eq. 17-18), per answer
  token, in the paper's direction (current model first), averaged per example then per batch.
* ``npo``: (2/beta) * E log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) on the forget batch (Eq. 19),
  with sequence probabilities of the answer and the reference fine-tuned on the retain set only.
* ``mmunlearner``: -m * grad L_forget + grad L_retain (Eq. 3): GA_Diff's terms, with the forget
  term's gradient restricted to the saliency mask by the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..training.losses import answer_logits, answer_nll, answer_token_logprobs


@dataclass
class LossTerms:
    forget: torch.Tensor | None = None
    retain: torch.Tensor | None = None

    def total(self) -> torch.Tensor:
        return sum(term for term in (self.forget, self.retain) if term is not None)


@dataclass(frozen=True)
class Settings:
    retain_weight: float = 1.0
    npo_beta: float = 0.4


class Method:
    name: str = ""
    uses_retain = False
    reference: str | None = None  # "vanilla" or "reference": a frozen model the loss compares to
    masked = False  # the forget term's gradient is restricted to a saliency mask

    def terms(self, model, batches: dict[str, dict], settings: Settings, reference_model=None) -> LossTerms:
        raise NotImplementedError


REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown unlearning method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def mean_nll(model, batch: dict) -> torch.Tensor:
    return answer_nll(*answer_logits(model, batch)).mean()


@register
class GradientAscent(Method):
    name = "ga"

    def terms(self, model, batches, settings, reference_model=None):
        return LossTerms(forget=-mean_nll(model, batches["forget"]))


@register
class GradientDifference(Method):
    name = "ga_diff"
    uses_retain = True

    def terms(self, model, batches, settings, reference_model=None):
        return LossTerms(forget=-mean_nll(model, batches["forget"]),
                         retain=settings.retain_weight * mean_nll(model, batches["retain"]))


@register
class KLMinimisation(Method):
    name = "kl_min"
    uses_retain = True
    reference = "vanilla"

    def terms(self, model, batches, settings, reference_model=None):
        logits, targets = answer_logits(model, batches["retain"])
        with torch.no_grad():
            reference_logits, _ = answer_logits(reference_model, batches["retain"])
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        reference_logprobs = torch.log_softmax(reference_logits.float(), dim=-1)
        per_token = (logprobs.exp() * (logprobs - reference_logprobs)).sum(-1)  # KL(p_theta || p_vanilla)
        mask = targets != -100
        per_example = (per_token * mask).sum(1) / mask.sum(1)
        return LossTerms(forget=-mean_nll(model, batches["forget"]),
                         retain=settings.retain_weight * per_example.mean())


@register
class NegativePreferenceOptimization(Method):
    name = "npo"
    reference = "reference"

    def terms(self, model, batches, settings, reference_model=None):
        logprobs, _ = answer_token_logprobs(*answer_logits(model, batches["forget"]))
        with torch.no_grad():
            reference_logprobs, _ = answer_token_logprobs(*answer_logits(reference_model, batches["forget"]))
        log_ratio = logprobs.sum(1) - reference_logprobs.sum(1)  # log pi_theta(y|x) - log pi_ref(y|x)
        beta = settings.npo_beta
        return LossTerms(forget=(2 / beta) * F.softplus(beta * log_ratio).mean())


@register
class MMUnlearner(GradientDifference):
    name = "mmunlearner"
    masked = True
