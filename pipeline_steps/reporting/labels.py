"""How results are named in tables and figures: methods, variants and the benchmark columns."""

from __future__ import annotations

import re

from ..benchmarks.layouts import LAYOUTS

METHOD_NAMES = {"base": "Base", "vanilla": "Vanilla", "ga": "GA", "ga_diff": "GA_Diff", "kl_min": "KL_Min",
                "npo": "NPO", "mmunlearner": "MMUnlearner", "mask": "Saliency mask"}
VARIANT = re.compile(r"^(?P<method>[a-z_]+)(/beta~(?P<beta>[^/]+)/modules~(?P<modules>[a-z]+))?$")

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
}
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


def parse_variant(variant: str) -> dict:
    match = VARIANT.match(variant)
    if not match:
        raise ValueError(f"'{variant}' is not a variant name (method, or method/beta~B/modules~G)")
    return match.groupdict()


def variant_label(variant: str, vary: str = "method") -> str:
    """A row label: the method's name, or what a sweep varies (``modules`` or ``beta``)."""
    parts = parse_variant(variant)
    if parts["method"] in ("base", "vanilla") or vary == "method" or parts["beta"] is None:
        return METHOD_NAMES.get(parts["method"], parts["method"])
    if vary == "modules":
        return {"language": "Language model", "vision": "Vision encoder", "all": "All"}[parts["modules"]]
    return f"β = {parts['beta']}"


def column_label(column: str, arrow: str = "↓/↑") -> str:
    subset, task, metric, lower = COLUMNS[column]
    down, up = arrow.split("/")
    return f"{subset} {task} {metric} ({down if lower else up})"
