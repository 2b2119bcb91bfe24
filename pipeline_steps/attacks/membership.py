"""Membership inference: can the forget people still be told from people the model never saw?

Members are the forget people's training pairs (the vanilla model was fine-tuned on them, then
unlearning tried to remove them); non-members are the training pairs of the benchmark's
``holdout`` people, drawn like the fictitious ones and never trained on (the synthetic
benchmark's ``Holdout_Set``). Every pair is scored on its answer tokens, as every loss in the
project is (``training/losses.py``), with four scores, each oriented so that higher reads "member":

* ``loss``: minus the mean answer-token NLL (Yeom et al. 2018);
* ``zlib``: minus the mean answer NLL over the zlib entropy of the answer text, the length in
  bytes of its zlib-compressed UTF-8 (Carlini et al. 2021): an answer that is merely easy text
  scores low loss without being remembered;
* ``min_k``: the mean of the lowest ``k`` share of the answer tokens' log-probabilities (Shi et
  al. 2024, Min-K% Prob), at least one token: a remembered answer has no very unlikely token;
* ``min_k_plus_plus``: the same over each token's log-probability standardised by the mean and
  standard deviation of the log-probability under the model's own next-token distribution at that
  position (Zhang et al. 2024, Min-K%++): whether the answer token is a mode of the distribution,
  not just likely.

Each score gives an AUC of members against non-members (the probability that a random member
outscores a random non-member, ties counting half: the Mann-Whitney statistic), per modality of
the pairs (``vqa``, ``text``) and over all of them, with a 95 % BCa bootstrap interval that
resamples *people*, the members' and the non-members' each on their own
(``reporting/estimates.people_interval``): the pairs of one person are correlated (a person the
model still knows gives all of their pairs a low loss), so resampling pairs as independent would
make the interval too narrow. A model that never saw the forget people (the oracle) sits near 0.5.

``privleak`` is MUSE's (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models", Sec. 3) as open-unlearning computes it (``src/evals/metrics/privacy.py``): MUSE reports
AUCs as 1 - AUC of this orientation, so with a the variant's AUC and b the oracle's,

    privleak = 100 * ((1 - a) - (1 - b)) / (1 - b),

near 0 for a model that leaks like the oracle, negative for one whose forget people are still
told apart (under-unlearning: vanilla here is near -100), positive for one that scores them as
less member-like than never-seen people (over-unlearning). ``privleak_gap`` gives it and the plain
difference a - b, each with an interval from the same people resampled for both models (paired;
the report computes them from both models' ``scores.jsonl``).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..benchmarks.records import MODALITIES, forget_split, read_split
from ..cli import StageError
from ..storage import write_jsonl
from ..unlearning.methods import hyperparameter
from . import Attack, Target, profile_examples, register

if TYPE_CHECKING:
    import torch

    from ..models.encoding import PromptEncoder

# torch and what is built on it are imported where they compute: the workflow reads this module's
# declarations while Snakemake parses a config (attacks/__init__.py), in every job of a cluster run.

log = logging.getLogger(__name__)
SCORES = ("loss", "zlib", "min_k", "min_k_plus_plus")
NONMEMBER_SPLIT = "holdout"


def zlib_entropy(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def lowest_mean(values: torch.Tensor, mask: torch.Tensor, k: float) -> torch.Tensor:
    """Per row, the mean of the lowest ``max(1, floor(k * n))`` of its ``n`` masked values."""
    import torch

    filled = values.masked_fill(~mask, float("inf"))
    ordered = filled.sort(dim=1).values
    counts = mask.sum(dim=1)
    keep = torch.clamp((counts.double() * k).floor().long(), min=1)
    taken = torch.arange(values.shape[1], device=values.device).unsqueeze(0) < keep.unsqueeze(1)
    return torch.where(taken, ordered, torch.zeros_like(ordered)).sum(dim=1) / keep


def token_scores(logits: torch.Tensor, targets: torch.Tensor, k: float) -> dict[str, torch.Tensor]:
    """The four scores of each row of a batch from its answer logits and tokens (except zlib's
    division, which needs the answer text): ``loss``, ``min_k``, ``min_k_plus_plus``, and the
    mean NLL, each shape [batch]."""
    import torch

    from ..training.losses import answer_token_logprobs

    logprobs, mask = answer_token_logprobs(logits, targets)
    counts = mask.sum(dim=1)
    if (counts == 0).any():
        raise ValueError("an example has no answer tokens to score")
    distribution = torch.log_softmax(logits.float(), dim=-1)
    probabilities = distribution.exp()
    mean = (probabilities * distribution).sum(-1)
    spread = ((probabilities * distribution.square()).sum(-1) - mean.square()).clamp(min=0).sqrt()
    standardised = (logprobs - mean) / spread.clamp(min=1e-12)
    nll = -(logprobs.sum(dim=1) / counts)
    return {"nll": nll, "loss": -nll, "min_k": lowest_mean(logprobs, mask, k),
            "min_k_plus_plus": lowest_mean(standardised, mask, k)}


def example_scores(model, encoder: PromptEncoder, examples: list, batch_size: int, k: float) -> list[dict]:
    """Every score of every example (in order), batched and left-padded as training batches are."""
    import torch

    from ..training.losses import answer_logits

    rows = []
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = {key: value.to(device) for key, value in encoder.collate([encoder.encode(e) for e in chunk]).items()}
        with torch.no_grad():
            scores = token_scores(*answer_logits(model, batch), k)
        for i, example in enumerate(chunk):
            nll = float(scores["nll"][i])
            rows.append({"nll": nll, "loss": -nll, "zlib": -nll / zlib_entropy(example.answer),
                         "min_k": float(scores["min_k"][i]), "min_k_plus_plus": float(scores["min_k_plus_plus"][i])})
    return rows


def auc(members, nonmembers, axis: int = -1) -> np.ndarray:
    """P(member score > non-member score) + P(tie) / 2 along ``axis``, from ranks (the
    Mann-Whitney U over the product of the counts); leading axes broadcast, for the bootstrap."""
    from scipy import stats

    m = np.moveaxis(np.asarray(members, float), axis, -1)
    n = np.moveaxis(np.asarray(nonmembers, float), axis, -1)
    lead = np.broadcast_shapes(m.shape[:-1], n.shape[:-1])
    m, n = np.broadcast_to(m, lead + m.shape[-1:]), np.broadcast_to(n, lead + n.shape[-1:])
    ranks = stats.rankdata(np.concatenate([m, n], axis=-1), axis=-1)
    n1, n0 = m.shape[-1], n.shape[-1]
    return (ranks[..., :n1].sum(axis=-1) - n1 * (n1 + 1) / 2) / (n1 * n0)


class MemberWins:
    """Every member's score against every non-member's (1 a win, 1/2 a tie), summed per (member
    person, non-member person): a resample of people then has the AUC w_m' W w_n / (w_m'c_m w_n'c_n),
    with w the people's multiplicities and c their numbers of pairs, with no re-ranking. A group of
    one person is resampled by its pairs (nothing else can vary)."""

    def __init__(self, members: list[tuple[str, float]], nonmembers: list[tuple[str, float]]):
        from ..reporting.estimates import PeopleScores

        if not members or not nonmembers:
            raise ValueError("an AUC needs members and non-members")
        # One person alone gives no spread over people: their pairs are then resampled as independent.
        people = PeopleScores.of(members), PeopleScores.of(nonmembers)
        self.people = tuple(len(scores.people) for scores in people)
        self.members, self.nonmembers = (scores if len(scores.people) > 1 else scores.by_item() for scores in people)
        wins = (np.sign(self.members.values[:, None] - self.nonmembers.values[None, :]) + 1) / 2
        self.wins = one_hot(self.members).T @ wins @ one_hot(self.nonmembers)
        self.counts = one_hot(self.members).sum(0), one_hot(self.nonmembers).sum(0)
        self.value = float(auc(self.members.values, self.nonmembers.values))

    def resampled(self, member_weights: np.ndarray, nonmember_weights: np.ndarray) -> np.ndarray:
        return (((member_weights @ self.wins) * nonmember_weights).sum(-1)
                / ((member_weights @ self.counts[0]) * (nonmember_weights @ self.counts[1])))

    @property
    def groups(self) -> tuple[int, int]:
        return len(self.members.people), len(self.nonmembers.people)


def one_hot(scores) -> np.ndarray:
    """[items, people]: which person each item is about."""
    return np.eye(len(scores.people))[scores.person]


def auc_estimate(members: list[tuple[str, float]], nonmembers: list[tuple[str, float]]) -> dict:
    """The AUC of (profile, score) members against non-members, its 95 % interval over people,
    and the counts of pairs and people."""
    from ..reporting.estimates import people_interval

    compared = MemberWins(members, nonmembers)
    low, high = people_interval(compared.groups, compared.resampled)
    return {"auc": compared.value, "low": low, "high": high, "members": len(members), "nonmembers": len(nonmembers),
            "member_people": compared.people[0], "nonmember_people": compared.people[1]}


def muse_privleak(variant_auc, oracle_auc):
    """MUSE's privleak in percent, from AUCs oriented as here (higher: member)."""
    return 100 * ((1 - variant_auc) - (1 - oracle_auc)) / (1 - oracle_auc)


def privleak_gap(variant: tuple, oracle: tuple) -> dict:
    """A variant's AUC minus the oracle's (``gap``) and MUSE's ``privleak``, each with a 95 %
    interval. ``variant`` and ``oracle`` are (member pairs, non-member pairs) of (profile, score),
    of the same examples in the same order; the bootstrap resamples people, the same for both
    models (paired), and leaves out the resamples where privleak is undefined (the oracle's AUC 1)."""
    from ..reporting.estimates import difference, people_interval

    if [p for p, _ in variant[0]] != [p for p, _ in oracle[0]] or [p for p, _ in variant[1]] != [p for p, _ in oracle[1]]:
        raise ValueError("privleak compares two models' scores of the same examples")
    ours, theirs = MemberWins(*variant), MemberWins(*oracle)
    if theirs.value == 1:
        raise ValueError("privleak is undefined where the oracle's AUC is 1 (MUSE divides by 1 - AUC)")
    statistics = {"gap": difference, "privleak": muse_privleak}
    result = {}
    for key, statistic in statistics.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            low, high = people_interval(ours.groups, lambda m, n: statistic(ours.resampled(m, n), theirs.resampled(m, n)))
        result[key] = {"value": float(statistic(ours.value, theirs.value)), "low": low, "high": high}
    return result


@dataclass(frozen=True)
class MembershipSettings:
    k: float = hyperparameter(0.2, "share of the answer tokens Min-K% and Min-K%++ average (the lowest ones)",
                              exclusiveMinimum=0, maximum=1)
    modalities: str = hyperparameter("vqa,text", "which training pairs are scored, comma-separated "
                                     "(vqa: asked with the portrait; text: without)")


@register
class MembershipInference(Attack):
    kind, label = "mia", "MIA"
    Settings = MembershipSettings
    scope = "all"
    needs_nonmembers = True

    def run(self, target: Target, settings: MembershipSettings, scratch: Path) -> dict:
        modalities = [m.strip() for m in settings.modalities.split(",") if m.strip()]
        unknown = sorted(set(modalities) - set(MODALITIES))
        if not modalities or unknown:
            raise StageError(f"setting modalities '{settings.modalities}' names no modality or an unknown one "
                             f"{unknown} (known: {', '.join(MODALITIES)})")
        try:
            read_split(target.benchmark, NONMEMBER_SPLIT)
        except FileNotFoundError:
            raise StageError(f"benchmark {target.benchmark} has no '{NONMEMBER_SPLIT}' split of never-trained "
                             "people, which membership inference needs as non-members (a synthetic benchmark "
                             "writes one with holdout_profiles > 0)") from None
        from ..models.encoding import PromptEncoder

        encoder = PromptEncoder(target.processor)
        rows = []
        for membership, split in (("member", forget_split(target.forget_ratio)), ("nonmember", NONMEMBER_SPLIT)):
            for modality in modalities:
                labelled = profile_examples(target.benchmark, split, modality)
                scores = example_scores(target.model, encoder, [e for _, e in labelled], target.batch_size, settings.k)
                rows += [{"membership": membership, "modality": modality, "profile": profile,
                          "question": example.question, "answer": example.answer, **score}
                         for (profile, example), score in zip(labelled, scores)]
        write_jsonl(scratch / "scores.jsonl", rows)
        result = {"scores": list(SCORES), "auc": auc_table(rows, modalities)}
        log.info("AUC over all pairs: %s", {s: round(result["auc"]["all"][s]["auc"], 3) for s in SCORES})
        return result


def split_scores(rows: list[dict], group: str, score: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(member, non-member) (profile, score) pairs of one score over one modality's rows (``all``:
    every row)."""
    chosen = [r for r in rows if group in ("all", r["modality"])]
    return ([(r["profile"], r[score]) for r in chosen if r["membership"] == "member"],
            [(r["profile"], r[score]) for r in chosen if r["membership"] == "nonmember"])


def auc_table(rows: list[dict], modalities: list[str]) -> dict:
    """Group (each modality, ``all``) -> score -> AUC with its interval."""
    groups = [*modalities, "all"] if len(modalities) > 1 else modalities + ["all"]
    return {group: {score: auc_estimate(*split_scores(rows, group, score)) for score in SCORES} for group in groups}
