"""How results are named in tables and figures: methods, variants and the benchmark columns."""

from __future__ import annotations

import re

METHOD_NAMES = {"base": "Base", "vanilla": "Vanilla", "ga": "GA", "ga_diff": "GA_Diff", "kl_min": "KL_Min",
                "npo": "NPO", "mmunlearner": "MMUnlearner", "mask": "Saliency mask"}
VARIANT = re.compile(r"^(?P<method>[a-z_]+)(/beta~(?P<beta>[^/]+)/modules~(?P<modules>[a-z]+))?$")

# metrics.json "table" key -> (set, task, metric, lower is better). Paper Table 1's columns.
COLUMNS = {
    "forget_vqa": ("Forget", "VQA", "Acc", True),
    "forget_qa": ("Forget", "QA", "Acc", False),
    "retain_vqa": ("Retain", "VQA", "Acc", False),
    "retain_qa": ("Retain", "QA", "Acc", False),
    "real_vqa": ("Realworld", "VQA", "Acc", False),
    "real_qa": ("Realworld", "QA", "Acc", False),
}
UTILITY = tuple(column for column, spec in COLUMNS.items() if not spec[3])


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
