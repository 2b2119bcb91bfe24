"""Numbers with 95 % intervals, from the per-item results evaluation leaves beside its metrics.

``evaluate`` writes ``metrics.json`` (a column's value) and ``predictions.jsonl`` (every item, the
profile it is about, and whether it was right; ROUGE-L for open answers). From the items a table
gets, for each column:

* the value (mean over items; the mean over seeds of that when one operating point was unlearned
  with several seeds), checked against ``metrics.json`` so the two files cannot disagree;
* a 95 % interval from a bootstrap over *people*, not questions (``scipy.stats.bootstrap``, BCa,
  on the people's indices; each resample weighs every person by how often it was drawn, so the
  value is the ratio of the drawn people's score sums to their item counts: the cluster bootstrap
  of Davison & Hinkley 1997, Sec. 3.8). The questions about one person are not independent: a
  method that forgets a person forgets most of their questions, so resampling questions as if
  they were independent understates the error when a column holds a few people (the embedded
  default's halves hold five each). scipy because it is maintained, vectorised and implements
  the bias-corrected interval that a proportion near 0 or 1 needs;
* a floor for multiple-choice columns: the interval is never narrower than the Wilson score
  interval of the proportion over the column's items (Wilson 1927), so "100 % of 40 questions" is
  not shown as certain (a bootstrap of all-equal items has width 0, which would then "separate"
  from anything);
* with several seeds, the bootstrap runs on each item's mean over the seeds, and the seeds' own
  spread (a t interval over the seeds' values) is added in quadrature: the two are different
  sources of error (which people were asked about; which data order unlearning saw);
* ties from a *paired* interval: two rows of a column score the same questions about the same
  people, so whether they differ is read from the interval of their difference over the same
  resampled people (``differ``), which is narrower than two overlapping intervals when the rows
  err on the same people, and honest when they do not;
* subsets of the people: the *selection* half and the *report* half of every column's profiles
  (by position in the sorted profile ids: even positions select, odd ones report), so an
  operating point can be chosen on one half and reported on the other.

Resampling uses a fixed generator, so the same results give byte-identical tables and figures.
Without a ``predictions.jsonl`` (metrics from elsewhere) a value has no interval (``None``), and
two values are told apart only by their means.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..benchmarks.layouts import LAYOUTS

CONFIDENCE = 0.95
RESAMPLES = 2000
HALVES = ("all", "selection", "report")


@dataclass(frozen=True)
class PeopleScores:
    """One column's item scores (each item's mean over seeds) and the person each item is about:
    what the bootstrap resamples. A resample's value is the ratio of the drawn people's summed
    scores to their numbers of items."""

    people: tuple[str, ...]
    person: np.ndarray  # per item, the index of its person in ``people``
    values: np.ndarray  # per item, its score

    @classmethod
    def of(cls, items: list[tuple[str, float]]) -> PeopleScores:
        people = tuple(sorted({profile for profile, _ in items}))
        where = {person: i for i, person in enumerate(people)}
        return cls(people, np.array([where[profile] for profile, _ in items], dtype=int),
                   np.array([value for _, value in items], dtype=float))

    def by_item(self) -> PeopleScores:
        """The same items, each its own cluster: the resampling that treats questions as independent."""
        return PeopleScores(tuple(str(i) for i in range(len(self.values))), np.arange(len(self.values)), self.values)

    @property
    def binary(self) -> bool:
        """Every item scores 0 or 1 (a multiple-choice column): the Wilson floor applies."""
        return bool(np.isin(self.values, (0.0, 1.0)).all())

    def same_items(self, other: PeopleScores) -> bool:
        return self.people == other.people and np.array_equal(self.person, other.person)

    def means(self, weights: np.ndarray) -> np.ndarray:
        """The column's value in each resample; ``weights``: [..., people] multiplicities."""
        sums = np.bincount(self.person, self.values, len(self.people))
        counts = np.bincount(self.person, minlength=len(self.people))
        return (weights @ sums) / (weights @ counts)


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float | None = None  # of the 95 % interval; None: unknown (no per-item results)
    seeds: int = 1
    seed_half_width: float = 0.0  # the seeds' share of ``half_width`` (t interval of their means)
    people: PeopleScores | None = field(default=None, compare=False, repr=False)  # its items, for pairing


def multiplicity(indices: np.ndarray, people: int) -> np.ndarray:
    """How often each of ``people`` is drawn in each resample: [..., draws] indices -> [..., people]."""
    flat = indices.reshape(-1, indices.shape[-1]).astype(int)
    offsets = flat + people * np.arange(len(flat))[:, None]
    counts = np.bincount(offsets.ravel(), minlength=people * len(flat)).reshape(len(flat), people)
    return counts.reshape(indices.shape[:-1] + (people,)).astype(float)


def people_interval(groups: tuple[int, ...], statistic) -> tuple[float, float]:
    """The 95 % BCa interval of ``statistic(*weights)`` when the people of each group (``groups``:
    their numbers) are resampled with replacement, each group on its own; ``weights[k]`` are the
    [..., people] multiplicities of group k's people in each resample."""
    def on_indices(*indices, axis=-1):
        return statistic(*(multiplicity(np.moveaxis(i, axis, -1), n) for i, n in zip(indices, groups)))

    return bootstrap_interval(tuple(np.arange(n, dtype=float) for n in groups), on_indices)


def wilson_interval(proportion: float, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion observed over ``n`` independent items (its
    closed form, which also takes the mean over seeds of several seeds' proportions)."""
    from scipy import stats

    z = stats.norm.ppf((1 + CONFIDENCE) / 2)
    centre = (proportion + z * z / (2 * n)) / (1 + z * z / n)
    spread = z / (1 + z * z / n) * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    return centre - spread, centre + spread


def resampled_interval(statistic, scores: list[PeopleScores]) -> tuple[float, float]:
    """The 95 % interval of ``statistic`` of the values of several item sets about the same people,
    all recomputed on the same resampled people; the point value where there is one person."""
    if len(scores[0].people) < 2:
        value = float(statistic(*(s.means(np.ones(len(s.people))) for s in scores)))
        return value, value
    return people_interval((len(scores[0].people),), lambda w: statistic(*(s.means(w) for s in scores)))


def people_half_width(scores: PeopleScores) -> float:
    """Half the width of the value's 95 % interval over people, never narrower than the interval
    over questions taken as independent: Wilson's for a multiple-choice column, the questions'
    bootstrap for ROUGE-L. A few people can agree by chance, so a bootstrap over five of them can
    be narrower than the questions alone allow."""
    mean = float(scores.values.mean())
    low, high = resampled_interval(lambda m: m, [scores])
    if scores.binary:
        floor = wilson_interval(mean, len(scores.values))
    else:
        floor = resampled_interval(lambda m: m, [scores.by_item()])
    return (max(high, floor[1]) - min(low, floor[0])) / 2


def paired_interval(statistic, *estimates: Estimate) -> tuple[float, float, float] | None:
    """The value and 95 % interval of ``statistic(*values)`` of several rows of one column, each
    row's value recomputed on the *same* resampled people (paired), never narrower than the paired
    interval over questions taken as independent, and widened by the rows' seed spreads in
    quadrature; None where a row has no per-item results or the rows' items differ (then they
    cannot be paired)."""
    scores = [e.people for e in estimates]
    if any(s is None for s in scores) or not all(s.same_items(scores[0]) for s in scores):
        return None
    value = float(statistic(*(e.mean for e in estimates)))
    by_people = resampled_interval(statistic, scores)
    by_item = resampled_interval(statistic, [s.by_item() for s in scores])
    low, high = min(by_people[0], by_item[0], value), max(by_people[1], by_item[1], value)
    seeds = math.hypot(*(e.seed_half_width for e in estimates))
    return value, value - math.hypot(value - low, seeds), value + math.hypot(high - value, seeds)


def difference(a, b):
    return a - b


def differ(*estimates: Estimate, statistic=difference) -> bool:
    """Whether the 95 % paired interval of ``statistic`` of the rows' values (by default the first
    row's minus the second's) excludes 0. Without per-person results, whether the statistic's
    size exceeds the first two rows' half-widths together (their intervals do not overlap)."""
    paired = paired_interval(statistic, *estimates)
    if paired is None:
        value = float(statistic(*(e.mean for e in estimates)))
        return abs(value) > sum(e.half_width or 0.0 for e in estimates[:2])
    _, low, high = paired
    return low > 0 or high < 0


def column_measures(table: dict) -> dict[str, tuple[str, str]]:
    """metrics.json table column -> (the evaluation group it reads, its measure), from the layout
    of the benchmark family whose columns the table has."""
    for layout in LAYOUTS.values():
        if set(layout.table1) <= set(table):
            return {key: (c.group, c.measure) for key, c in layout.columns.items() if key in table}
    return {}


def item_scores(metrics: dict, predictions: list[dict]) -> dict[str, list[tuple[str, float]]]:
    """Column -> (profile, score) of every item it averages: 1/0 for a multiple-choice item under
    the primary scoring mode, the ROUGE-L F of an open answer."""
    primary = metrics.get("primary_scoring", "likelihood")
    scores: dict[str, list[tuple[str, float]]] = {}
    for column, (group, measure) in column_measures(metrics["table"]).items():
        if metrics["table"][column] is None:
            continue
        if measure == "choice":
            rows = [r for r in predictions if r["column"] == group and r["kind"] == "multiple_choice"]
            scores[column] = [(r["profile"], float(r[primary]["correct"])) for r in rows]
        else:
            rows = [r for r in predictions if r["column"] == group and r["kind"] == "generation"]
            scores[column] = [(r["profile"], float(r["rouge_l"])) for r in rows]
    return scores


def read_items(metrics_path: str | Path) -> dict[str, list[tuple[str, float]]] | None:
    """The item scores of one evaluation, or None without a ``predictions.jsonl`` beside its
    metrics; each column's mean is checked against ``metrics.json``."""
    metrics_path = Path(metrics_path)
    predictions = metrics_path.with_name("predictions.jsonl")
    if not predictions.exists():
        return None
    metrics = json.loads(metrics_path.read_text())
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    scores = item_scores(metrics, rows)
    for column, items in scores.items():
        if items and not math.isclose(sum(v for _, v in items) / len(items), metrics["table"][column], abs_tol=1e-9):
            raise ValueError(f"{predictions} does not give {metrics_path}'s {column} "
                             f"({metrics['table'][column]}); were they written by the same evaluation?")
    return scores


def people_half(people, which: str) -> set[str]:
    """The selection half (even positions in the sorted ids) or the report half (odd positions) of
    ``people``, or all of them. The one definition of the halves: the equal-forgetting table
    selects and reports on them, and the relearning attack trains on the selection half of the
    forget people and is read on the report half."""
    people = sorted(set(people))
    if which == "all":
        return set(people)
    if which not in HALVES:
        raise ValueError(f"unknown half '{which}' (known: {', '.join(HALVES)})")
    return set(people[0 if which == "selection" else 1::2])


def half(items: list[tuple[str, float]], which: str) -> list[tuple[str, float]]:
    """The items about the selection or the report half of the column's people (or all of them)."""
    if which == "all":
        return items
    keep = people_half((profile for profile, _ in items), which)
    return [(profile, value) for profile, value in items if profile in keep]


def bootstrap_interval(samples: tuple[np.ndarray, ...], statistic) -> tuple[float, float]:
    """The 95 % BCa bootstrap interval of ``statistic(*samples, axis=-1)``, each sample resampled on
    its own (several samples: a statistic of independent groups, such as an AUC of members against
    non-members), from a fixed generator; the percentile interval where BCa is not finite, over the
    resamples where the statistic is defined (a ratio whose denominator a resample made 0)."""
    from scipy import stats  # here, not above: the workflow imports this module while it parses

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's own note on near-degenerate samples; handled below
        result = stats.bootstrap(samples, statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                 method="BCa", random_state=np.random.default_rng(0), vectorized=True)
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = np.nanquantile(result.bootstrap_distribution, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def estimate(replicates: list[list[tuple[str, float]]]) -> Estimate:
    """One value with its interval from the (profile, score) items of each seed of an operating
    point (the same items, in the same order, for every seed)."""
    lengths = {len(r) for r in replicates}
    if len(lengths) != 1 or not lengths.pop():
        raise ValueError("every seed of an operating point must score the same, non-empty set of items")
    if any([p for p, _ in r] != [p for p, _ in replicates[0]] for r in replicates):
        raise ValueError("every seed of an operating point must score the same items about the same people")
    scores = np.asarray([[v for _, v in r] for r in replicates], dtype=float)  # seeds x items
    seed_means = scores.mean(axis=1)
    people = PeopleScores.of(list(zip((p for p, _ in replicates[0]), scores.mean(axis=0))))
    seeds = 0.0
    if len(replicates) > 1:
        from scipy import stats

        seeds = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(replicates) - 1) * seed_means.std(ddof=1)
                      / math.sqrt(len(replicates)))
    return Estimate(float(seed_means.mean()), math.hypot(people_half_width(people), seeds), len(replicates),
                    seeds, people)


def column_estimates(replicates: list[dict], which: str = "all") -> dict[str, Estimate]:
    """Column -> Estimate for one operating point. ``replicates``: per seed, ``{"table": ...,
    "items": ...}`` (items None: no per-item results, the table's mean over seeds, no interval)."""
    if any(r["items"] is None for r in replicates):
        if which != "all":
            raise ValueError("a half of the people needs each evaluation's predictions.jsonl")
        columns = [c for c in replicates[0]["table"] if all(r["table"].get(c) is not None for r in replicates)]
        return {c: Estimate(sum(r["table"][c] for r in replicates) / len(replicates), None, len(replicates))
                for c in columns}
    columns = [c for c in replicates[0]["items"] if all(c in r["items"] for r in replicates)]
    return {c: estimate([half(r["items"][c], which) for r in replicates]) for c in columns}
