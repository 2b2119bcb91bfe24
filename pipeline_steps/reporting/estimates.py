"""Numbers with 95 % intervals, from the per-item results evaluation leaves beside its metrics.

``evaluate`` writes ``metrics.json`` (a column's value) and ``predictions.jsonl`` (every item, the
profile it is about, and whether it was right; ROUGE-L for open answers). From the items a table
gets, for each column:

* the value (mean over items; the mean over seeds of that when one operating point was unlearned
  with several seeds), checked against ``metrics.json`` so the two files cannot disagree;
* a 95 % interval: a bootstrap over questions (``scipy.stats.bootstrap``, BCa; scipy because it
  is maintained, vectorised and implements the bias-corrected interval that a proportion near 0
  or 1, as Forget VQA after unlearning is, needs, which a hand-written percentile bootstrap would
  not). With several seeds, the questions' bootstrap runs on each item's mean over the seeds, and
  the seeds' own spread (a t interval over the seeds' values) is added in quadrature: the two are
  different sources of error (which questions were asked; which data order unlearning saw), and a
  nested bootstrap over three seeds would be no more exact;
* subsets of the people: the *selection* half and the *report* half of every column's profiles
  (by position in the sorted profile ids: even positions select, odd ones report), so an
  operating point can be chosen on one half and reported on the other.

Resampling uses a fixed generator, so the same results give byte-identical tables and figures.
Without a ``predictions.jsonl`` (metrics from elsewhere) a value has no interval (``None``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..benchmarks.layouts import LAYOUTS

CONFIDENCE = 0.95
RESAMPLES = 2000
HALVES = ("all", "selection", "report")


@dataclass(frozen=True)
class Estimate:
    mean: float
    half_width: float | None = None  # of the 95 % interval; None: unknown (no per-item results)
    seeds: int = 1

    def separated_from(self, other: Estimate) -> bool:
        """The two differ by more than their intervals (so neither overlaps the other's value range)."""
        return abs(self.mean - other.mean) > (self.half_width or 0.0) + (other.half_width or 0.0)


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
    non-members), from a fixed generator; the percentile interval where BCa is not finite."""
    from scipy import stats  # here, not above: the workflow imports this module while it parses

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's own note on near-degenerate samples; handled below
        result = stats.bootstrap(samples, statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                                 method="BCa", random_state=np.random.default_rng(0), vectorized=True)
    low, high = result.confidence_interval
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = np.quantile(result.bootstrap_distribution, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def question_half_width(values: np.ndarray) -> float:
    """Half the width of the 95 % BCa bootstrap interval of the mean of ``values``."""
    if len(values) < 2 or np.all(values == values[0]):
        return 0.0
    low, high = bootstrap_interval((values,), np.mean)
    return (high - low) / 2


def estimate(replicates: list[list[float]]) -> Estimate:
    """One value with its interval from the item scores of each seed of an operating point (the
    same items, in the same order, for every seed)."""
    lengths = {len(r) for r in replicates}
    if len(lengths) != 1 or not lengths.pop():
        raise ValueError("every seed of an operating point must score the same, non-empty set of items")
    scores = np.asarray(replicates, dtype=float)  # seeds x items
    seed_means = scores.mean(axis=1)
    questions = question_half_width(scores.mean(axis=0))
    seeds = 0.0
    if len(replicates) > 1:
        from scipy import stats

        seeds = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(replicates) - 1) * seed_means.std(ddof=1)
                      / math.sqrt(len(replicates)))
    return Estimate(float(seed_means.mean()), math.hypot(questions, seeds), len(replicates))


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
    return {c: estimate([[v for _, v in half(r["items"][c], which)] for r in replicates]) for c in columns}
