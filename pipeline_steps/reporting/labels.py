"""How results are named in tables and figures: methods, variants and the benchmark columns."""

from __future__ import annotations

from pathlib import Path

from ..benchmarks.layouts import LAYOUTS
from ..storage import read_json
from ..study.variants import Variant
from ..unlearning.methods import get_method

# Names of what is not an unlearning method (those name themselves: ``Method.label``).
OTHER_NAMES = {"base": "Base", "vanilla": "Vanilla", "oracle": "Oracle (retain only)", "mask": "Saliency mask"}

# metrics.json "table" key (or evaluation group) -> (set, task, metric, lower is better). The paper's
# Table 1 columns of both benchmarks: MLLMU-Bench's six accuracies first, then CLEAR's own.
COLUMNS = {
    "forget_vqa": ("Forget", "VQA", "Acc", True),
    "forget_qa": ("Forget", "QA", "Acc", False),
    "retain_vqa": ("Retain", "VQA", "Acc", False),
    "retain_qa": ("Retain", "QA", "Acc", False),
    "real_vqa": ("Realworld", "VQA", "Acc", False),
    "real_qa": ("Realworld", "QA", "Acc", False),
    "forget_qa_rouge_l": ("Forget", "QA", "ROUGE-L", False),
    "retain_qa_rouge_l": ("Retain", "QA", "ROUGE-L", False),
    "real_face_vqa": ("Realface", "VQA", "Acc", False),
    "test_vqa": ("Test", "VQA", "Acc", True),  # MLLMU-Bench's transformed portraits of the forget profiles
}
CONTROL_NAMES = {"random": "random mask", "gradient_magnitude": "gradient-magnitude mask"}
# The visual forget columns, whose target is the oracle (the model that never saw the forget people)
# rather than zero: forgetting below the oracle's accuracy is over-unlearning, not success.
ORACLE_TARGETS = ("forget_vqa", "test_vqa")
# The column sets a table shows, one per benchmark family, told apart by the keys of the metrics.
TABLE_LAYOUTS = tuple(layout.table1 for layout in LAYOUTS.values())


def table_columns(values: dict) -> tuple[str, ...]:
    """The Table 1 columns of the benchmark family whose metrics ``values`` are."""
    for columns in TABLE_LAYOUTS:
        if all(column in values for column in columns):
            return columns
    closest = max(TABLE_LAYOUTS, key=lambda columns: sum(column in values for column in columns))
    raise ValueError(f"lack the columns {[c for c in closest if c not in values]}")


def utility_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The columns where higher is better: everything but Forget VQA."""
    return tuple(column for column in columns if not COLUMNS[column][3])


def method_label(method: str) -> str:
    """A method's name in tables: its class's label (base, vanilla and the mask have their own)."""
    if method in OTHER_NAMES:
        return OTHER_NAMES[method]
    return get_method(method).label


def variant_label(variant: str, vary: str = "method") -> str:
    """A row label: the method's name, or what a sweep varies (``modules`` or ``beta``)."""
    if variant == "mask":
        return OTHER_NAMES["mask"]
    parts = Variant.parse(variant)
    if vary == "method" or parts.beta is None:
        control = f" ({CONTROL_NAMES[parts.control]})" if parts.control else ""
        return method_label(parts.method) + control
    if vary == "modules":
        return {"language": "Language model", "vision": "Vision encoder", "all": "All"}[parts.modules]
    return f"β = {parts.beta}"


def point_label(variant: str) -> str:
    """The operating point of a variant, as a reader reads it: ``lr 0.0003, epochs 2`` (the seed,
    a repeat of the point, left out), or ``shared settings`` for a variant that sweeps nothing."""
    parsed = Variant.parse(variant)
    settings = ", ".join(f"{label} {value}" for label, value in parsed.point.settings) or "shared settings"
    return f"calibrated from {settings} until the oracle's forgetting" if parsed.calibrated else settings


def column_label(column: str, arrow: str = "↓/↑") -> str:
    subset, task, metric, lower = COLUMNS[column]
    down, up = arrow.split("/")
    return f"{subset} {task} {metric} ({down if lower else up})"


def scoring_note(evaluations) -> str:
    """The note a table carries on where its multiple-choice numbers come from, given the
    ``metrics.json`` of its cells; cells scored by different modes (evaluations of two configs)
    would put unlike numbers side by side and are refused."""
    modes = {metrics.get("primary_scoring", "likelihood") for metrics in evaluations}
    if len(modes) != 1:
        raise ValueError(f"the cells' evaluations were scored with different primary modes ({', '.join(sorted(modes))}); "
                         "evaluate them with one evaluation.primary")
    return f"Multiple-choice accuracies by {modes.pop()} scoring (evaluation.primary)."


def unlearn_manifest(metrics: dict) -> dict | None:
    """The manifest ``unlearn`` wrote beside the changes a ``metrics.json`` evaluated; None for a
    reference model or an attacked one (whose record is an ``attack.json``)."""
    manifest = Path(metrics.get("changes") or "").parent / "manifest.json"
    return read_json(manifest) if metrics.get("changes") and manifest.exists() else None


def method_notes(evaluations) -> list[str]:
    """What the tables' methods computed where their loss has several readings (``Method.table_note``:
    KL_Min's and NPO's, the paper's equation against the authors' code), each note once."""
    notes = []
    for metrics in evaluations:
        recorded = unlearn_manifest(metrics)
        if recorded is None:
            continue
        method = get_method(recorded["method"])
        note = method.table_note(method.Hyperparameters(**recorded["hyperparameters"]))
        if note is not None and note not in notes:
            notes.append(note)
    return notes


def calibration_outcomes(evaluations) -> str | None:
    """Where each seed's calibrated run stopped (``unlearning/calibration.py``), for the table's
    note: ``step 35 (reached), step 40 (overshot), not reached in 332 steps``; None for runs that
    were not calibrated."""
    outcomes = []
    for metrics in evaluations:
        recorded = unlearn_manifest(metrics) or {}
        calibration = recorded.get("calibration")
        if not calibration:
            return None
        last = calibration["checks"][-1]
        where = ", ".join(f"{key} {value}" for key, value in last.items() if key not in ("step", "forget_vqa_selection"))
        at = where or f"step {last['step']}"
        outcomes.append(f"not reached ({at} the last)" if calibration["stopped_at"] is None
                        else f"{at} ({calibration['outcome']})")
    return ", ".join(outcomes) if outcomes else None
