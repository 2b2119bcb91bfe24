"""The equal-forgetting rule: which of a method's sweep points its row of the table reports.

One rule for every method, so that methods are compared where they forget alike rather than at
one shared learning rate (which favours whichever method forgets fastest per step): among a
method's operating points, those whose Forget VQA lies within ``tolerance`` of the oracle's (the
retain-only model: what a model that never saw the forget people scores), and of those the one
with the highest mean utility (the mean of every column other than the visual forget columns,
equally weighted). A method none of whose points gets that close takes its point nearest the
oracle's Forget VQA, and the table says so.

The caller measures both on the *selection* half of the people and reports the chosen point on the
*report* half (``estimates.half``), so the reported numbers play no part in choosing them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .estimates import Estimate
from .labels import ORACLE_TARGETS

FORGET = "forget_vqa"


@dataclass(frozen=True)
class Choice:
    point: str  # the chosen point's key
    reached: bool  # within the tolerance of the oracle
    distance: float  # its Forget VQA minus the oracle's, on the selection half


def utility(values: dict[str, Estimate]) -> float:
    columns = [c for c in values if c not in ORACLE_TARGETS]
    return sum(values[c].mean for c in columns) / len(columns)


def choose(points: dict[str, dict[str, Estimate]], oracle: dict[str, Estimate], tolerance: float) -> Choice:
    """The point of one method the rule picks; ``points``: point key -> column -> Estimate, in sweep
    order (the first wins a tie)."""
    distance = {p: values[FORGET].mean - oracle[FORGET].mean for p, values in points.items()}
    within = [p for p in points if abs(distance[p]) <= tolerance]
    if within:
        best = max(within, key=lambda p: (utility(points[p]), -list(points).index(p)))
        return Choice(best, True, distance[best])
    nearest = min(points, key=lambda p: abs(distance[p]))
    return Choice(nearest, False, distance[nearest])
