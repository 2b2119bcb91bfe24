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
* ``kl_min``: -L_forget + KL(p_vanilla || p_theta) + L_retain on the retain batch, as the
  authors' released code (vanilla model first, plus the retain NLL); the paper's Eq. 17-18,
  KL(p_theta || p_vanilla) alone, is ``kl_direction: current_first, retain_nll: false``. The KL is
  per answer token, averaged per example then per batch.
* ``npo``: (2/beta) * E log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) on the forget batch (Eq. 19),
  the reference fine-tuned on the retain set only, with the log-ratio of per-token mean answer
  log-probabilities as the authors' code (their beta 0.4 is set for it); the paper's whole-answer
  sequence probabilities are ``log_ratio: sequence_sum``.
* ``mmunlearner``: -m * grad L_forget + grad L_retain (Eq. 3): GA_Diff's terms, with the forget
  term's gradient restricted to the saliency mask by the training loop.

Methods beyond the paper (issue 16), each cited in its class:

* ``simnpo``: SimNPO (Fan et al. 2024), NPO without a reference model and length-normalised, with
  a margin, plus the retain NLL.
* ``idk_dpo``: IdkDPO (Maini et al. 2024, TOFU; DPO of Rafailov et al. 2023): the forget
  questions' refusal answers (``refusals.py``) preferred to their true answers, against the frozen
  vanilla model, plus the retain NLL.
* ``rmu``: RMU (Li et al. 2024, WMDP): one decoder layer's activations on the forget answers
  pushed toward a fixed random direction, of a norm c set relative to the vanilla model's own
  activation norm there (Adaptive RMU's rule, at WMDP's strength), on the retain answers held to
  the vanilla model's; only that layer's and the two before's MLP down-projections train.
* ``salun``: SalUn (Fan et al. 2024): GA_Diff's terms with the forget gradient restricted to
  SalUn's mask, the half (``mask_fraction``) of the model's entries of largest |grad L_forget| at
  the vanilla weights.
* ``manu``: MANU (Liu et al. 2025): no gradient steps; the language model's MLP neurons most
  active on the forget people relative to the others, scored as MANU's released code scores
  them, each modality's (image, text-only questions) top fraction pruned.
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
    schema bounds (``minimum``, ``exclusiveMinimum``, ..., ``enum``: the values a string setting
    takes), which the config check enforces."""
    return field(default=default, metadata={"description": description, **bounds})


@dataclass(frozen=True)
class NoHyperparameters:
    pass


@dataclass(frozen=True)
class CheckedChoices:
    """Hyper-parameters that refuse, when built, a value outside a field's ``enum``: the command
    line's ``--hparam`` (``settings.parse_hyperparameters`` checks numeric bounds only) and a
    manifest read back are then held to what the config check holds a config to."""

    def __post_init__(self):
        for f in fields(self):
            allowed, value = f.metadata.get("enum"), getattr(self, f.name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"hyper-parameter '{f.name}' takes one of {', '.join(map(str, allowed))}, "
                                 f"not '{value}'")


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
    # For a method that does not train: the setting a calibrated run walks instead of steps, and its
    # values, weakest first (``unlearning/calibration.py``).
    calibration_axis: ClassVar[tuple[str, tuple] | None] = None
    # Why this method cannot unlearn through LoRA adapters (``lora_r``), for a method that acts on
    # the weights' own entries (a saliency mask, pruning); None: it can.
    lora_refusal: ClassVar[str | None] = None

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

    def resolve_hyperparameters(self, hparams, reference_model, encoder, forget: Sequence[Example],
                                batch_size: int):
        """The hyper-parameters the steps read: ``hparams`` with what a method fixes once, before
        the first step, from its frozen model on the forget set (RMU's relative coefficient);
        ``hparams`` itself unless a method asks."""
        return hparams

    def retain_used(self, hparams) -> bool:
        """Whether the retain term reaches the gradient: a method's ``retain_weight`` of 0 turns it off."""
        return self.uses_retain and getattr(hparams, "retain_weight", 1.0) != 0

    def table_note(self, hparams) -> str | None:
        """A table's note on what this method computed under ``hparams`` (its ``Hyperparameters``),
        for a method whose loss has readings that differ (the paper's equation and its authors'
        code); None when there is nothing to say."""
        return None

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
    if cls.trains == (cls.edit is not Method.edit) or cls.trains == (cls.calibration_axis is not None):
        raise TypeError(f"{cls.__name__} must define `edit` and `calibration_axis` exactly when it does not "
                        "train (trains=False)")
    if (cls.needs_mask or not cls.trains) and cls.lora_refusal is None:
        raise TypeError(f"{cls.__name__} acts on the weights' own entries (a mask, or an edit): say why it refuses "
                        "LoRA (lora_refusal)")
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


def token_mean_logprob(model, batch: dict) -> torch.Tensor:
    """(1/|y|) log pi(y|x), each example's mean answer-token log-probability: minus its answer NLL
    (Eq. 13), shape [batch]."""
    from ..training.losses import answer_logits, answer_nll

    return -answer_nll(*answer_logits(model, batch))


# How NPO reads each example's log pi(y|x) from its answer tokens, by its ``log_ratio`` setting.
ANSWER_LOGPROBS = {"token_mean": token_mean_logprob, "sequence_sum": sequence_logprob}


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
    """KL_Min: gradient ascent on the forget batch, and on the retain batch the model held to the
    frozen vanilla model's next-token distributions.

    By default as the authors' released code computes it (Z1zs/MMUnlearner,
    ``baselines/MLLMU_KL_Min.py`` and ``CLEAR_KL_Min.py``, MLLMU-Bench's ``baselines/KL_Min.py``):
    ``F.kl_div(log_softmax(current), softmax(vanilla))``, which is KL(p_vanilla || p_theta), the
    vanilla model first, added to the retain answers' cross-entropy. The paper's Eq. 17-18 is
    KL(p_theta || p_vanilla) with no NLL (``kl_direction: current_first``, ``retain_nll: false``,
    this project's loss before issue 32). The two directions weigh tokens differently:
    vanilla-first penalises the model for dropping mass where the vanilla model puts it (mass-
    covering), current-first for putting mass where the vanilla model does not.

    Not followed: their KL (``reduction="batchmean"``) is summed over every position of the
    sequence, prompt, image and padding tokens included, and divided by the batch size, which
    scales it with the sequence length and the batch's padding; here it is the per-token KL over
    the answer tokens, averaged per example then per batch, as every loss here (Eq. 13). Their
    forget and retain batches also take separate optimizer steps, here one step sums the terms.
    """

    name, label = "kl_min", "KL_Min"
    uses_retain = True
    frozen_model = "vanilla"

    @dataclass(frozen=True)
    class Hyperparameters(RetainWeight, CheckedChoices):
        kl_direction: str = hyperparameter(
            "vanilla_first", "vanilla_first: KL(p_vanilla || p_theta), the authors' code; current_first: "
            "KL(p_theta || p_vanilla), the paper's Eq. 17", enum=["vanilla_first", "current_first"])
        retain_nll: bool = hyperparameter(True, "add the retain answers' NLL to the KL (the authors' code); "
                                                "false: the KL alone (the paper's Eq. 18)")

    def terms(self, model, batches, hparams, reference_model=None):
        import torch

        from ..models.encoding import IGNORE_INDEX
        from ..training.losses import answer_logits, answer_nll

        logits, targets = answer_logits(model, batches["retain"])
        with torch.no_grad():
            reference_logits, _ = answer_logits(reference_model, batches["retain"])
        current = torch.log_softmax(logits.float(), dim=-1)
        vanilla = torch.log_softmax(reference_logits.float(), dim=-1)
        first, second = (vanilla, current) if hparams.kl_direction == "vanilla_first" else (current, vanilla)
        per_token = (first.exp() * (first - second)).sum(-1)  # KL(first || second)
        mask = targets != IGNORE_INDEX
        retain = ((per_token * mask).sum(1) / mask.sum(1)).mean()
        if hparams.retain_nll:  # from the same logits: no second forward pass
            retain = retain + answer_nll(logits, targets).mean()
        return LossTerms(forget=-mean_nll(model, batches["forget"]), retain=hparams.retain_weight * retain)

    def table_note(self, hparams):
        kl = "KL(p_vanilla || p_theta)" if hparams.kl_direction == "vanilla_first" else "KL(p_theta || p_vanilla)"
        computed = f"{kl} + retain NLL" if hparams.retain_nll else f"{kl} alone"
        return (f"KL_Min's retain term: {computed} (the authors' code: KL(p_vanilla || p_theta) + retain NLL; "
                "the paper's Eq. 17-18: KL(p_theta || p_vanilla) alone).")


@register
class NegativePreferenceOptimization(Method):
    """NPO (Zhang et al. 2024; the paper's Eq. 19) against the base model fine-tuned on the retain
    set only.

    By default the log-ratio is that of per-token mean answer log-probabilities, as the authors'
    released code computes it (Z1zs/MMUnlearner, ``baselines/MLLMU_NPO.py`` and ``CLEAR_NPO.py``,
    MLLMU-Bench's ``baselines/NPO.py``: ``current_loss - oracle_loss`` of two Hugging Face mean
    cross-entropies, then ``-logsigmoid(beta * .) * 2 / beta``); their beta of 0.4 is set for it.
    The paper's pi(y|x) is the whole answer's probability (``log_ratio: sequence_sum``, this
    project's loss before issue 32), whose log-ratio grows with the answer's length, so the same
    beta saturates the sigmoid far sooner.

    Not followed: their mean is over every answer token of the batch at once, one log-ratio and
    one loss per batch; here it is per example, then the loss averaged over the batch, as every
    loss here (Eq. 13).
    """

    name, label = "npo", "NPO"
    frozen_model = "retain_finetuned"

    @dataclass(frozen=True)
    class Hyperparameters(CheckedChoices):
        beta: float = hyperparameter(0.4, "inverse temperature of the preference loss (Eq. 19)", exclusiveMinimum=0)
        log_ratio: str = hyperparameter(
            "token_mean", "token_mean: log-ratio of mean answer-token log-probabilities, the authors' code; "
            "sequence_sum: of whole-answer log-probabilities, the paper's Eq. 19", enum=list(ANSWER_LOGPROBS))

    def terms(self, model, batches, hparams, reference_model=None):
        import torch
        import torch.nn.functional as F

        answer_logprob = ANSWER_LOGPROBS[hparams.log_ratio]
        with torch.no_grad():
            reference = answer_logprob(reference_model, batches["forget"])
        log_ratio = answer_logprob(model, batches["forget"]) - reference  # log pi_theta(y|x) - log pi_ref(y|x)
        beta = hparams.beta
        return LossTerms(forget=(2 / beta) * F.softplus(beta * log_ratio).mean())

    def table_note(self, hparams):
        pooled = "mean" if hparams.log_ratio == "token_mean" else "sum"
        return (f"NPO (beta {hparams.beta:g}): log-ratio of the answer tokens' {pooled} log-probability (the "
                "authors' code: token mean, for which their beta 0.4 is set; the paper's Eq. 19: whole-answer sum).")


@register
class MMUnlearner(GradientDifference):
    name, label = "mmunlearner", "MMUnlearner"
    needs_mask = True
    lora_refusal = ("its Fisher-ratio mask selects entries of the weights themselves, which a low-rank adapter's "
                    "update does not have (the authors' LLaVA/MLLMU-Bench run through LoRA never applied its mask)")


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
    lora_refusal = ("its saliency mask selects entries of the weights themselves, which a low-rank adapter's "
                    "update does not have")

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
    from ..training.adapters import base_model

    captured = []
    # Found in the base model of a LoRA-adapted one (a PEFT wrapper moves every module path).
    module = family_of(model.config.model_type).decoder_layer(base_model(model), layer)
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


def answer_mean(per_token: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's mean of ``per_token`` [batch, seq] over the positions that predict its answer
    tokens (``predicting_positions``): [batch]."""
    from ..training.losses import predicting_positions

    mask = predicting_positions(labels)
    return (per_token * mask).sum(1) / mask.sum(1)


def answer_mse(activations: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared distance per hidden unit, averaged over each example's answer tokens, then over
    the batch (as every answer-token loss here)."""
    return answer_mean((activations - target).pow(2).mean(-1), labels).mean()


def answer_activation_norm(model, layer: int, encoder, examples: Sequence[Example], batch_size: int) -> float:
    """The mean norm ||h|| of decoder layer ``layer``'s output over the positions that predict each
    example's answer tokens, averaged over ``examples`` (as the losses average): the scale of RMU's relative coefficient."""
    import torch

    device = next(model.parameters()).device
    per_example = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = {k: v.to(device) for k, v in encoder.collate([encoder.encode(e) for e in chunk]).items()}
            per_example.append(answer_mean(layer_output(model, layer, batch).norm(dim=-1), batch["labels"]))
    return float(torch.cat(per_example).mean())


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

    **The steering coefficient is relative to the model's own activations** (issue 32): by default
    ``c = steering_coeff * ||h_vanilla||``, the vanilla model's mean activation norm at ``layer``
    over the positions predicting the forget answers (each example's mean, then the mean over the set, as the
    losses average), computed once before the first step (``resolve_hyperparameters``) and then
    fixed, as WMDP's c is fixed. WMDP's released settings (centerforaisafety/wmdp, ``run_rmu_zephyr.ipynb``: c 6.5,
    alpha 1200, layer 7 of Zephyr-7B) are absolute and tuned per model (300 for Mixtral-8x7B at
    the same layer): a c of 6.5 against a tiny model whose activations have a different norm
    either barely moves them or swamps them, so the absolute setting does not transfer. The
    relative rule is that of Adaptive RMU (Dang et al., AAAI 2025, "On Effects of Steering
    Latent Representation for Large Language Model Unlearning"; RebelsNLU-jaist/llm-unlearning,
    ``adap_rmu/unlearn.py``: c = scale * the mean norm of the forget batch's activations at the
    unlearned layer, taken once at the first step, where the model is still the frozen one).
    The scale, 3, is WMDP's own setting carried over: Zephyr-7B's layer-7 tokens have a norm of
    about 2 (a third-party measurement, median 2.0 over WMDP and MMLU prompts), so c 6.5 is
    about 3 times the activation norm; it is also the default of the Adaptive RMU authors' later
    release (huutiendang/llmu-robustness, ``adaptive_rmu``: scale 3, alpha 1200, Zephyr-7B layer
    7), while their AAAI code uses 5, stronger than WMDP's own setting. Fixed before any run;
    not tuned here. ``steering_mode: absolute`` restores WMDP's rule, c = ``steering_coeff``.

    alpha stays WMDP's 1200, unscaled: with c proportional to the activation norm both terms are
    squared distances between activations of that norm, so rescaling every activation by k
    multiplies the two terms alike (by k^2) and their ratio, which alpha sets, does not move; the
    width cancels too (both are per hidden unit), and AdamW's steps do not depend on the loss's
    overall scale. Adaptive RMU keeps WMDP's 1200 too.

    The loss reads the positions that predict the answer tokens (``predicting_positions``: the
    last prompt position and every answer position but the last), the positions whose logits
    every likelihood loss and score here reads, not the whole prompt: the prompt's question
    templates and image tokens are shared with the retain set's questions, so scrambling them
    would fight the retain term on the same inputs, while the answer is recalled there (WMDP and
    Adaptive RMU read every token of their raw-text batches, padding included). open-unlearning
    reads the answer tokens' own positions (labels != -100), one to the right: that leaves out
    the position that predicts an answer's first token, which decides a multiple-choice option
    by likelihood, and includes the last one, which predicts nothing (issue 32: RMU read that
    way left every column at vanilla's). As in the paper, only the MLPs
    of a few layers up to ``layer`` train (its code's default: the down-projections of layers
    layer-2..layer, ``updated_layers``); with ``updated_layers`` 0 every parameter of the job's
    module group trains, as the other baselines.
    """

    name, label = "rmu", "RMU"
    uses_retain = True
    frozen_model = "vanilla"

    @dataclass(frozen=True)
    class Hyperparameters(CheckedChoices):
        layer: int = hyperparameter(7, "decoder layer whose output is steered (0 = the first; WMDP: 7 of 32)",
                                    minimum=0)
        steering_coeff: float = hyperparameter(
            3.0, "c, the norm of the target c * u: relative, this multiple of the vanilla model's mean activation "
            "norm at `layer` on the forget answers (3: WMDP's 6.5 on Zephyr-7B, whose norm there is about 2); "
            "absolute, c itself (WMDP: 6.5 for Zephyr-7B)", exclusiveMinimum=0)
        steering_mode: str = hyperparameter(
            "relative", "relative: c = steering_coeff x the vanilla model's activation norm (Adaptive RMU's "
            "rule); absolute: c = steering_coeff (WMDP's rule)", enum=["relative", "absolute"])
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

    def resolve_hyperparameters(self, hparams, reference_model, encoder, forget, batch_size):
        """A relative coefficient resolved to the absolute c it stands for, from the frozen model."""
        from dataclasses import replace

        if hparams.steering_mode == "absolute":
            return hparams
        norm = answer_activation_norm(reference_model, hparams.layer, encoder, forget, batch_size)
        return replace(hparams, steering_coeff=hparams.steering_coeff * norm, steering_mode="absolute")

    def retain_used(self, hparams) -> bool:
        return hparams.alpha != 0

    def terms(self, model, batches, hparams, reference_model=None):
        import torch

        if hparams.steering_mode != "absolute":
            raise ValueError("RMU's relative steering coefficient is resolved by `resolve_hyperparameters` "
                             "before the first step")
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

    The rule is MANU's released code (franciscoliu/MANU, ``prune/prune_incremental.py`` and
    ``prune/prune_utility.py``) wherever it defines one, fixed before any run (issue 32). Every
    MLP neuron of the language model is scored with the four importance functions of selective
    pruning (Pochinkov & Schoots 2024) over its activations a at a data set's tokens: mean |a|,
    the fraction of tokens with |a| > 0.1 (the code's cut; selective pruning counts a > 0), the
    standard deviation of a, and sqrt(mean a^2). Per modality, the score is the code's
    sum_k w_k (I_k(D_forget) / (I_k(D_retain) + 1e-5) - 1) with weights 2, 0, 2, 2 (frequency
    weighs nothing there, so it is recorded, not used); each modality selects its own
    ``prune_fraction`` top-scoring neurons (ranked across layers, the code's global top-k %), and
    the neurons either selected are pruned: gate/up rows and down-projection column set to zero,
    stored as any method's changes. Where the code pools layers or scores per token position
    (``saliency/neurons.py`` lists these departures), selective pruning's per-neuron reading is
    kept.

    Language-model neurons only, for both modalities. The release scores the vision tower's MLP
    (``fc1``/``fc2`` outputs) on the image questions and the language model's on the text-only
    ones, then prunes each tower's own top fraction. The vision half is not added here: its hooks
    file every vision layer under three fixed layer names and prune only layers 21-23 (and
    language layers 29-31), so it gives no per-neuron rule to follow for a tower of another depth;
    and the family interface has no vision MLP paths (``models/families.py``, outside this
    change), whose activation, token positions and pruning differ by family. In its place the
    image questions rank the language model's neurons too, with their own budget: a neuron that
    serves the forget people under image inputs is pruned even if the text-only questions would
    not pick it, so up to twice ``prune_fraction`` of the neurons go (the release prunes its
    fraction of each tower).

    The statistics come from the ``compute_neuron_importance`` stage, on the vanilla model; a
    sweep over ``prune_fraction`` reads them again. The log lists, per layer, every pruned neuron,
    which modality selected it and its score under each.
    """

    name, label = "manu", "MANU"
    trains = False
    lora_refusal = "it prunes neurons of the weights themselves and takes no gradient step"
    activation_splits = ("forget_vqa", "forget_text", "retain_vqa", "retain_text")
    # Each modality's questions, by the suffix of their splits.
    modalities: ClassVar[dict[str, str]] = {"image": "vqa", "text": "text"}
    # A calibrated run prunes more until it forgets as much as the oracle: a 1-2-5 series from 1 %
    # (under MANU's 2 %) to half of the neurons, fixed before any calibrated run.
    calibration_axis = ("prune_fraction", (0.01, 0.02, 0.05, 0.1, 0.2, 0.5))

    @dataclass(frozen=True)
    class Hyperparameters:
        prune_fraction: float = hyperparameter(0.02, "fraction of the language model's MLP neurons each modality "
                                                     "selects (MANU: 2 %); the union is pruned",
                                               exclusiveMinimum=0, maximum=1)

    def edit(self, model, family, hparams, statistics):
        from ..saliency.neurons import importance, layer_count, manu_scores, prune_neurons, select_neurons

        layers = layer_count(model, family)
        functions = {split: importance(sums, tokens, family, layers) for split, (sums, tokens) in statistics.items()}
        scores = {modality: manu_scores(functions[f"forget_{suffix}"], functions[f"retain_{suffix}"])
                  for modality, suffix in self.modalities.items()}
        chosen = {modality: select_neurons(score, hparams.prune_fraction) for modality, score in scores.items()}
        neurons = {layer: sorted(set().union(*(selected.get(layer, []) for selected in chosen.values())))
                   for layer in sorted(set().union(*chosen.values()))}
        prune_neurons(model, family, neurons)
        return [{"layer": layer, "pruned": len(indices), "neurons": indices,
                 "selected_by": {modality: selected.get(layer, []) for modality, selected in chosen.items()},
                 "scores": {modality: [round(float(score[layer, i]), 6) for i in indices]
                            for modality, score in scores.items()}}
                for layer, indices in neurons.items()]
