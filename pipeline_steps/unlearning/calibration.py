"""Calibrated equal forgetting: each method unlearned until it forgets as much as the oracle.

Methods forget at different speeds per step, so one shared learning rate compares them at
different amounts of forgetting, and a sweep of a few rates seldom brackets the target (issue 32:
at two rates, 9 of 10 methods had no point near the oracle). Instead, every method runs along its
own axis until it reaches the oracle's forgetting, by one rule written down before any run and
applied to every method alike:

* the *target* is the oracle's Forget VQA (the retain-only model, which never saw the forget
  people) on the *selection* half of the forget people, scored as the evaluation scores it (the
  primary mode, the same items: ``ForgettingProbe``);
* the method unlearns at its protocol point's settings (Table 1's) for at most the calibration's
  ``epochs``, and its Forget VQA on the selection half is measured the same way before the first
  step and every ``check_every`` steps;
* the run stops at the first check at or below ``target + tolerance``: its weights there are the
  method's calibrated point. It *reached* the oracle if that check is also at or above
  ``target - tolerance``; otherwise it overshot between two checks (the table says by how much);
* a run that ends without such a check did not reach the oracle's forgetting on its axis, and
  the table says so.

A method that takes no gradient step (MANU) follows the same rule on its own axis, its
``calibration_axis`` (the pruned fraction), from the smallest value up: a check per value.

The report half of the people is never read here: the equal-forgetting table reports it
(``reporting/equal_forgetting.py``), so the numbers it shows played no part in choosing the point.
The checks and the outcome are in the unlearn job's manifest (``calibration``).

The rule is here; the measurement, which is the evaluation's scoring, is in
``forgetting_probe.py``, which the unlearn stage loads only for a calibrated run: so editing the
evaluation code reruns the calibrated runs, not every unlearning job (the rules' code inputs,
``study/code_dependencies.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Calibration:
    """One calibrated run: the target, the checks so far, and whether (and where) it stopped."""

    target: float
    tolerance: float
    check_every: int
    checks: list[dict] = field(default_factory=list)  # {"step": ..., "forget_vqa_selection": ...}
    stopped_at: int | None = None

    def due(self, step: int) -> bool:
        return self.stopped_at is None and step % self.check_every == 0

    def record(self, step: int, value: float, **where) -> bool:
        """A check's value (``where``: its place on a method's own axis); True when the run stops here."""
        self.checks.append({"step": step, **where, "forget_vqa_selection": value})
        if value <= self.target + self.tolerance:
            self.stopped_at = step
        return self.stopped_at is not None

    @property
    def reached(self) -> bool:
        return self.stopped_at is not None and self.checks[-1]["forget_vqa_selection"] >= self.target - self.tolerance

    def summary(self) -> dict:
        """The manifest's record of the run."""
        return {**asdict(self), "reached": self.reached,
                "outcome": "reached" if self.reached else "overshot" if self.stopped_at is not None else "not reached"}
