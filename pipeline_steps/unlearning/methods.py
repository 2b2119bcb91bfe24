"""Unlearning objectives: one class per method, which declares everything the rest of the system
needs to know about it.

A method turns ``{"forget": batch, "retain": batch}`` (plus any batch of the forget questions
with other answers it asks for, ``alternative_answers``) into loss terms: the ``forget`` term (the
one a saliency mask restricts) and the ``retain`` term; the loss is their sum. Its class also says
what its jobs need (retain examples, a frozen model, a saliency mask), which tensors it trains
(``trainable``: all, unless it says fewer), its name in tables, and its own hyper-parameters (a
frozen dataclass with defaults, descriptions and bounds). The workflow, the
config check, the environment check and the report read these instead of naming methods, so adding
a method is one class here and one entry in a config. Losses are per-example means over answer
tokens (paper Eq. 13), averaged over the batch:

* ``ga``: -L_forget (paper Eq. 15).
* ``ga_diff``: -L_forget + L_retain (Eq. 16).
* ``kl_min``: -L_forget + KL(p_theta || p_vanilla) on the retain batch (Eq. 17-18), per answer
  token, in the paper's direction (current model first), averaged per example then per batch.
* ``npo``: (2/beta) * E log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) on the forget batch (Eq. 19),
  with sequence probabilities of the answer and the reference fine-tuned on the retain set only.
* ``mmunlearner``: -m * grad L_forget + grad L_retain (Eq. 3): GA_Diff's terms, with the forget
  term's gradient restricted to the saliency mask by the training loop.

Methods beyond the paper (issue 16), each cited in its class:

* ``simnpo``: SimNPO (Fan et al. 2024), NPO without a reference model and length-normalised, with
  a margin, plus the retain NLL.
* ``idk_dpo``: IdkDPO (Maini et al. 2024, TOFU; DPO of Rafailov et al. 2023): the forget
  questions' refusal answers (``refusals.py``) preferred to their true answers, against the frozen
  vanilla model, plus the retain NLL.
* ``rmu``: RMU (Li et al. 2024, WMDP): one decoder layer's activations on the forget answers
  pushed toward a fixed random direction, on the retain answers held to the vanilla model's;
  only that layer's and the two before's MLP down-projections train.
* ``salun``: SalUn (Fan et al. 2024): GA_Diff's terms with the forget gradient restricted to
  SalUn's mask, the half (``mask_fraction``) of the model's entries of largest |grad L_forget| at
  the vanilla weights.
* ``manu``: MANU (Liu et al. 2025): no gradient steps; the language model's MLP neurons most
  active on the forget people relative to the others, under image and text-only inputs, pruned.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, ClassVar, Sequence

from ..models.families import Family, family_of

if TYPE_CHECKING:
    import torch

    from ..models.encoding import Example

# torch and the modules built on it are imported inside the functions that compute: the workflow
# reads the methods' declarations while Snakemake parses a config (``study/config_check.py``), on
# every dry run and in every cluster job, and that parse stays free of torch (seconds each time).


@dataclass
class LossTerms:
    forget: torch.Tensor | None = None
    retain: torch.Tensor | None = None

    def total(self) -> torch.Tensor:
        return sum(term for term in (self.forget, self.retain) if term is not None)


def hyperparameter(default, description: str, **bounds):
    """A dataclass field of a method's hyper-parameters: its default, what it does, and its JSON
    schema bounds (``minimum``, ``exclusiveMinimum``, ...), which the config check enforces."""
    return field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True)
class NoHyperparameters:
    pass


@dataclass(frozen=True)
class RetainWeight:
    retain_weight: float = hyperparameter(1.0, "weight of the retain term", minimum=0)


FROZEN_MODELS = ("vanilla", "retain_finetuned")  # what a method's frozen model is


class Method:
    name: ClassVar[str]  # in configs, variant names and command lines
    label: ClassVar[str]  # in tables and figures
    uses_retain: ClassVar[bool] = False  # needs retain examples
    # A frozen model the loss compares to: the vanilla model, or the base model fine-tuned on the
    # retain set only (``finetune_reference``); None for none.
    frozen_model: ClassVar[str | None] = None
    needs_mask: ClassVar[bool] = False  # the forget term's gradient is restricted to a saliency mask
    # Which mask, for a masked method: "fisher_ratio", MMUnlearner's (one per beta and module group,
    # named in the variant), or "salun", SalUn's (one per ``mask_fraction`` setting of the method).
    mask_kind: ClassVar[str] = "fisher_ratio"
    Hyperparameters: ClassVar[type] = NoHyperparameters
    # False for a method that edits the weights directly (``edit``) instead of taking gradient
    # steps: it has no loop settings (a learning-rate sweep does not multiply its jobs).
    trains: ClassVar[bool] = True
    # The Fisher splits (``forget_vqa``, ...) whose neuron activation statistics ``edit`` reads.
    activation_splits: ClassVar[tuple[str, ...]] = ()

    def terms(self, model, batches: dict[str, dict], hparams, reference_model=None) -> LossTerms:
        raise NotImplementedError

    def edit(self, model, family: Family, hparams, statistics: dict[str, tuple[dict, int]]) -> list[dict]:
        """A method that does not train changes ``model`` in place from ``statistics`` (split ->
        (activation sums, token count)) and returns the records of its log."""
        raise NotImplementedError

    def alternative_answers(self, forget: Sequence[Example]) -> dict[str, list[Example]]:
        """Batches of the forget examples with other answers, by name: drawn with each step's
        forget indices and handed to ``terms`` next to ``forget``. None unless a method asks."""
        return {}

    def trainable(self, model, family, hparams, candidates: set[str]) -> set[str]:
        """The parameters this method trains out of ``candidates`` (those of the job's module
        group): all of them unless a method restricts them; a bad setting is refused here."""
        return candidates

    def retain_used(self, hparams) -> bool:
        """Whether the retain term reaches the gradient: a method's ``retain_weight`` of 0 turns it off."""
        return self.uses_retain and getattr(hparams, "retain_weight", 1.0) != 0

    @classmethod
    def hyperparameter_fields(cls):
        return fields(cls.Hyperparameters)


REGISTRY: dict[str, Method] = {}
MASK_KINDS = ("fisher_ratio", "salun")


def uses_fisher_ratio_mask(method: Method) -> bool:
    """Whether a method runs once per beta and module group (MMUnlearner's mask, and its controls)."""
    return method.needs_mask and method.mask_kind == "fisher_ratio"


def register(cls: type[Method]) -> type[Method]:
    if cls.frozen_model not in (None, *FROZEN_MODELS):
        raise TypeError(f"{cls.__name__}.frozen_model must be None or one of {FROZEN_MODELS}")
    if cls.trains == (cls.edit is not Method.edit):
        raise TypeError(f"{cls.__name__} must define `edit` exactly when it does not train (trains=False)")
    if cls.mask_kind not in MASK_KINDS:
        raise TypeError(f"{cls.__name__}.mask_kind must be one of {MASK_KINDS}")
    REGISTRY[cls.name] = cls()
    return cls


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"unknown unlearning method '{name}' (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def mean_nll(model, batch: dict) -> torch.Tensor:
    from ..training.losses import answer_logits, answer_nll

    return answer_nll(*answer_logits(model, batch)).mean()


def sequence_logprob(model, batch: dict) -> torch.Tensor:
    """log pi(y|x) of each example's whole answer, shape [batch]."""
    from ..training.losses import answer_logits, answer_token_logprobs

    logprobs, _ = answer_token_logprobs(*answer_logits(model, batch))
    return logprobs.sum(1)


@register
class GradientAscent(Method):
    name, label = "ga", "GA"

    def terms(self, model, batches, hparams, reference_model=None):
        return LossTerms(forget=-mean_nll(model, batches["forget"]))


@register
class GradientDifference(Method):
    name, label = "ga_diff", "GA_Diff"
    uses_retain = True
    Hyperparameters = RetainWeight

    def terms(self, model, batches, hparams, reference_model=None):
        return LossTerms(forget=-mean_nll(model, batches["forget"]),
                         retain=hparams.retain_weight * mean_nll(model, batches["retain"]))


@register
class KLMinimisation(Method):
    name, label = "kl_min", "KL_Min"
    uses_retain = True
    frozen_model = "vanilla"
    Hyperparameters = RetainWeight

    def terms(self, model, batches, hparams, reference_model=None):
        import torch

        from ..training.losses import answer_logits

        logits, targets = answer_logits(model, batches["retain"])
        with torch.no_grad():
            reference_logits, _ = answer_logits(reference_model, batches["retain"])
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        reference_logprobs = torch.log_softmax(reference_logits.float(), dim=-1)
        per_token = (logprobs.exp() * (logprobs - reference_logprobs)).sum(-1)  # KL(p_theta || p_vanilla)
        mask = targets != -100
        per_example = (per_token * mask).sum(1) / mask.sum(1)
        return LossTerms(forget=-mean_nll(model, batches["forget"]),
                         retain=hparams.retain_weight * per_example.mean())


@register
class NegativePreferenceOptimization(Method):
    name, label = "npo", "NPO"
    frozen_model = "retain_finetuned"

    @dataclass(frozen=True)
    class Hyperparameters:
        beta: float = hyperparameter(0.4, "inverse temperature of the preference loss (Eq. 19)", exclusiveMinimum=0)

    def terms(self, model, batches, hparams, reference_model=None):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            reference = sequence_logprob(reference_model, batches["forget"])
        log_ratio = sequence_logprob(model, batches["forget"]) - reference  # log pi_theta(y|x) - log pi_ref(y|x)
        beta = hparams.beta
        return LossTerms(forget=(2 / beta) * F.softplus(beta * log_ratio).mean())


@register
class MMUnlearner(GradientDifference):
    name, label = "mmunlearner", "MMUnlearner"
    needs_mask = True


@register
class SalUn(GradientDifference):
    """SalUn (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
    Saliency in Both Image Classification and Generation", ICLR 2024): unlearning restricted to the
    weight saliency map

        m_S = 1[ |grad_theta L_f(theta_0)| >= gamma ]

    with L_f the forget loss at the vanilla weights theta_0: here the answer-token NLL of the forget
    set's VQA pairs, summed over the whole set (the Fisher stage's ``gradient`` estimator,
    ``saliency/fisher.py``: the magnitude of the summed gradient, not a sum of squared per-example
    gradients), and gamma the hard threshold that keeps the ``mask_fraction`` largest entries
    (SalUn's default, 50 %) of the *whole model* at once, not of each tensor: the paper's gamma is
    one number, and the official code (OPTML-Group/Unlearn-Saliency, ``generate_mask.py``)
    concatenates every tensor's |gradient| and ranks them together. Ties at gamma are broken by
    position (``saliency/masks.py``, ``salun_keep``). The official scripts add up the gradients of
    mini-batch *means*, which weighs a partial last batch differently; the gradient of the summed
    loss does not depend on the batch size (and the official classification script also takes an
    optimizer step between batches, so not all of its gradients are at theta_0).

    The update is GA_Diff's, masked as MMUnlearner's (the forget gradient multiplied by m_S before
    it meets the retain gradient; ``unlearning/loop.py``). SalUn's own forget objective, random
    labelling, draws wrong labels from a label set (classification, or class-conditional
    generation); for language models the SalUn authors' follow-up WAGLE (Jia et al., NeurIPS 2024,
    "Strategic Weight Attribution for Effective and Modular Unlearning in Large Language Models")
    trains the masked weights with GradDiff (gradient ascent on the forget set plus the retain
    loss) or NPO, and MMUnlearner (paper Eq. 3) uses the same masked GA + retain form. So SalUn and
    MMUnlearner differ here only in the mask: |forget gradient| at a fixed sparsity, against the
    Fisher ratio of the forget and preserved sets.

    ``mask_fraction`` picks the mask (``masks/salun/fraction~F``); the loss does not read it, and the
    unlearn stage refuses a mask built at another fraction.
    """

    name, label = "salun", "SalUn"
    needs_mask = True
    mask_kind = "salun"

    @dataclass(frozen=True)
    class Hyperparameters(RetainWeight):
        mask_fraction: float = hyperparameter(0.5, "fraction of the model's entries in SalUn's saliency mask "
                                                   "(SalUn: 0.5)", exclusiveMinimum=0, maximum=1)


@register
class SimNPO(Method):
    """SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization
    for LLM Unlearning", Eq. 4, with the retain term of its Eq. 5)::

        L = -(2/beta) E_forget log sigmoid(-(beta/|y|) log pi_theta(y|x) - gamma) + lambda * L_retain

    NPO (Eq. 19 of our paper) with the reference model dropped, so the forget term no longer
    weights examples by how far the model already is from a reference, and the answer's
    log-likelihood divided by its length |y|, so long answers are not unlearned harder than short
    ones. ``(1/|y|) log pi_theta(y|x)`` is minus the per-example mean answer NLL (Eq. 13), over
    the answer continuation's tokens, the closing end-of-turn token included; gamma is a reward
    margin. L_retain is the retain set's NLL (the paper's GradDiff-style regulariser).
    """

    name, label = "simnpo", "SimNPO"
    uses_retain = True

    @dataclass(frozen=True)
    class Hyperparameters(RetainWeight):
        beta: float = hyperparameter(2.5, "inverse temperature of the length-normalised loss", exclusiveMinimum=0)
        gamma: float = hyperparameter(0.0, "reward margin subtracted inside the sigmoid", minimum=0)

    def terms(self, model, batches, hparams, reference_model=None):
        import torch.nn.functional as F

        from ..training.losses import answer_logits, answer_nll

        nll = answer_nll(*answer_logits(model, batches["forget"]))  # -(1/|y|) log pi_theta(y|x)
        beta = hparams.beta
        # -log sigmoid(z) = softplus(-z), with z = beta * nll - gamma: finite for any nll.
        forget = (2 / beta) * F.softplus(hparams.gamma - beta * nll).mean()
        return LossTerms(forget=forget, retain=hparams.retain_weight * mean_nll(model, batches["retain"]))


@register
class IdkDPO(Method):
    """IdkDPO (Maini et al. 2024, TOFU, Sec. 4; the DPO loss of Rafailov et al. 2023, Eq. 7, as
    open-unlearning's ``DPO`` trainer computes it)::

        L = -(2/beta) E_forget log sigmoid(beta * [log pi_theta(y_idk|x) / pi_ref(y_idk|x)
                                                   - log pi_theta(y|x) / pi_ref(y|x)]) + lambda * L_retain

    Each forget question's refusal (``refusals.py``) is the preferred answer y_idk and its true
    answer y the dispreferred one; pi_ref is the frozen vanilla model; log pi are whole-answer
    (summed) log-probabilities as in DPO. The 2/beta scale is open-unlearning's (as NPO's), which
    keeps the gradient's size comparable across beta. L_retain is the retain set's NLL.
    Unlike gradient ascent, the target is a fluent answer, so the model is steered toward
    declining rather than toward whatever lowers the true answer's likelihood.
    """

    name, label = "idk_dpo", "IdkDPO"
    uses_retain = True
    frozen_model = "vanilla"

    @dataclass(frozen=True)
    class Hyperparameters(RetainWeight):
        beta: float = hyperparameter(0.1, "inverse temperature of the preference loss", exclusiveMinimum=0)

    def alternative_answers(self, forget):
        from .refusals import with_refusal

        return {"refusal": [with_refusal(example) for example in forget]}

    def terms(self, model, batches, hparams, reference_model=None):
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            reference = {name: sequence_logprob(reference_model, batches[name]) for name in ("refusal", "forget")}
        preferred = sequence_logprob(model, batches["refusal"]) - reference["refusal"]
        dispreferred = sequence_logprob(model, batches["forget"]) - reference["forget"]
        beta = hparams.beta
        forget = (2 / beta) * F.softplus(-beta * (preferred - dispreferred)).mean()  # -(2/beta) log sigmoid
        return LossTerms(forget=forget, retain=hparams.retain_weight * mean_nll(model, batches["retain"]))


def layer_output(model, layer: int, batch: dict) -> torch.Tensor:
    """The output of the language model's decoder layer ``layer`` on ``batch``: [batch, seq, hidden]."""
    captured = []
    module = family_of(model.config.model_type).decoder_layer(model, layer)
    handle = module.register_forward_hook(lambda _, __, output: captured.append(
        output[0] if isinstance(output, tuple) else output))
    # The layers above ``layer`` still run (their output is unused): stopping the forward early
    # would need an exception through the model and FSDP's hooks, for a saving RMU's few steps
    # do not need.
    try:  # logits at one position only: the output head is not what the loss reads
        model(**{key: value for key, value in batch.items() if key != "labels"}, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[0].float()


def answer_mse(activations: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance per hidden unit, averaged over each example's answer tokens, then over
    the batch (as every answer-token loss here)."""
    from ..models.encoding import IGNORE_INDEX

    mask = labels != IGNORE_INDEX
    per_token = (activations - target).pow(2).mean(-1)
    return ((per_token * mask).sum(1) / mask.sum(1)).mean()


def steering_direction(hidden: int, seed: int) -> torch.Tensor:
    """RMU's fixed random unit vector u: uniform on [0, 1) then normalised, as the WMDP code draws it."""
    import torch

    u = torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


@register
class RMU(Method):
    """RMU, Representation Misdirection for Unlearning (Li et al. 2024, "The WMDP Benchmark:
    Measuring and Reducing Malicious Use With Unlearning", Sec. 5, forget and retain losses)::

        L = E_forget 1/|y| sum_t ||h_theta(t) - c * u||^2 + alpha * E_retain 1/|y| sum_t ||h_theta(t) - h_frozen(t)||^2

    h is the output of the language model's decoder layer ``layer`` (``Family.decoder_layers``,
    the same path in both families), u a fixed random unit vector (``direction_seed``), c the
    steering coefficient, h_frozen the frozen vanilla model's. The squared norm is taken per
    hidden unit (divided by the width), as the authors' code and open-unlearning do.

    The loss reads the answer tokens' positions (labels != -100, as open-unlearning), not the
    whole prompt: the prompt's question templates and image tokens are shared with the retain
    set's questions, so scrambling them would fight the retain term on the same inputs, while
    the answer positions are where a profile's facts are recalled. As in the paper, only the MLPs
    of a few layers up to ``layer`` train (its code's default: the down-projections of layers
    layer-2..layer, ``updated_layers``); with ``updated_layers`` 0 every parameter of the job's
    module group trains, as the other baselines.
    """

    name, label = "rmu", "RMU"
    uses_retain = True
    frozen_model = "vanilla"

    @dataclass(frozen=True)
    class Hyperparameters:
        layer: int = hyperparameter(7, "decoder layer whose output is steered (0 = the first; WMDP: 7 of 32)",
                                    minimum=0)
        steering_coeff: float = hyperparameter(6.5, "c: norm of the target activation c * u (WMDP: 6.5 for a 7B)",
                                               exclusiveMinimum=0)
        alpha: float = hyperparameter(1200.0, "weight of the retain activation term (WMDP: 1200)", minimum=0)
        updated_layers: int = hyperparameter(3, "train the MLP down-projections of this many layers ending at "
                                                "`layer`; 0 trains every parameter", minimum=0)
        direction_seed: int = hyperparameter(0, "seed of the random direction u", minimum=0)

    def trainable(self, model, family, hparams, candidates):
        family.decoder_layer(model, hparams.layer)  # refuses a layer the model does not have
        if hparams.updated_layers == 0:
            return candidates
        first = max(0, hparams.layer - hparams.updated_layers + 1)
        chosen = {f"{family.decoder_layers}.{i}.mlp.down_proj.weight" for i in range(first, hparams.layer + 1)}
        if not chosen & candidates:
            raise ValueError(f"RMU trains {', '.join(sorted(chosen))}, none of which is in the job's module group")
        return chosen & candidates

    def retain_used(self, hparams) -> bool:
        return hparams.alpha != 0

    def terms(self, model, batches, hparams, reference_model=None):
        import torch

        forget, retain = batches["forget"], batches["retain"]
        activations = layer_output(model, hparams.layer, forget)
        target = hparams.steering_coeff * steering_direction(activations.shape[-1], hparams.direction_seed)
        with torch.no_grad():
            frozen = layer_output(reference_model, hparams.layer, retain)
        return LossTerms(forget=answer_mse(activations, target.to(activations.device), forget["labels"]),
                         retain=hparams.alpha * answer_mse(layer_output(model, hparams.layer, retain), frozen,
                                                           retain["labels"]))


@register
class MANU(Method):
    """MANU, Modality Aware Neuron Unlearning (Liu et al. 2025, "Modality-Aware Neuron Pruning for
    Unlearning in Multimodal Large Language Models", ACL 2025, Sec. 3): important neuron selection,
    then pruning, with no gradient step.

    Selection scores every MLP neuron of the language model with the four importance functions of
    selective pruning (Pochinkov & Schoots 2024), each over the neuron's activations a on a data
    set's tokens: absolute mean(|a|), frequency mean(1[a > 0]), variance var(a), and RMS
    sqrt(mean(a^2)). Per modality (the forget and retain people's image questions, and their
    text-only questions) and function, the score is MANU's ratio I(D_forget) / (I(D_retain) + eps);
    the eight ratios are put on one scale and summed (``saliency/neurons.py``, ``manu_scores``: the
    paper defines the functions and the ratio; how its functions and modalities are combined into
    one ranking is our reading, written there). The ``prune_fraction`` highest-scoring neurons of
    the whole language model (ranked across layers, MANU's top alpha %) are pruned: their
    gate/up rows and down-projection column set to zero, stored as any method's changes.

    The statistics come from the ``compute_neuron_importance`` stage, on the vanilla model; a
    sweep over ``prune_fraction`` reads them again. The log lists every pruned neuron by layer.
    """

    name, label = "manu", "MANU"
    trains = False
    activation_splits = ("forget_vqa", "forget_text", "retain_vqa", "retain_text")

    @dataclass(frozen=True)
    class Hyperparameters:
        prune_fraction: float = hyperparameter(0.02, "fraction of the language model's MLP neurons pruned",
                                               exclusiveMinimum=0, maximum=1)

    def edit(self, model, family, hparams, statistics):
        from ..saliency.neurons import importance, manu_scores, prune_neurons, select_neurons

        layers = len(model.get_submodule(family.decoder_layers))
        functions = {split: importance(sums, tokens, family, layers) for split, (sums, tokens) in statistics.items()}
        scores = manu_scores([functions["forget_vqa"], functions["forget_text"]],
                             [functions["retain_vqa"], functions["retain_text"]])
        neurons = select_neurons(scores, hparams.prune_fraction)
        prune_neurons(model, family, neurons)
        return [{"layer": layer, "pruned": len(indices), "neurons": indices,
                 "scores": [round(float(scores[layer, i]), 6) for i in indices]}
                for layer, indices in sorted(neurons.items())]
