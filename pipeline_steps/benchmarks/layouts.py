"""What a benchmark family is scored on: its evaluation groups and its paper Table 1 columns.

A *group* is a set of evaluation items: the profiles of one canonical split asked in one
modality (``vqa``: with the profile's image, ``text``: without). ``evaluate`` scores every item of
a group (multiple choice both ways, generation items by ROUGE-L, blanks by containment) and names
its predictions after the group.

A *column* of ``metrics.json``'s ``table`` reads one measure of one group: ``choice`` (multiple-
choice accuracy under the primary scoring mode) or ``rouge_l`` (mean ROUGE-L F of the group's
generation items). ``table1`` lists the paper's six Table 1 columns in its order; the table may
hold more (MLLMU-Bench's Test split).

The families are told apart by the ``format`` a prepared benchmark's manifest records.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import ProfileRecord, forget_split, read_split, retain_split


@dataclass(frozen=True)
class Group:
    split: str  # "forget" / "retain" (the forget ratio's splits) or a canonical split name
    modality: str
    forget_profiles_only: bool = False  # keep only the forget split's profiles (MLLMU-Bench's Test split)


@dataclass(frozen=True)
class Column:
    group: str
    measure: str  # "choice" or "rouge_l"


@dataclass(frozen=True)
class Layout:
    groups: dict[str, Group]
    columns: dict[str, Column]
    table1: tuple[str, ...]

    def records(self, benchmark, ratio: int) -> dict[str, tuple[list[ProfileRecord], str]]:
        """Group name -> (the profiles it asks about, the modality it asks in)."""
        splits = {"forget": forget_split(ratio), "retain": retain_split(ratio)}
        loaded: dict[str, list[ProfileRecord]] = {}

        def split(name: str) -> list[ProfileRecord]:
            name = splits.get(name, name)
            if name not in loaded:
                loaded[name] = read_split(benchmark, name)
            return loaded[name]

        groups = {}
        for name, group in self.groups.items():
            records = split(group.split)
            if group.forget_profiles_only:
                forget_ids = {r.id for r in split("forget")}
                records = [r for r in records if r.id in forget_ids]
            groups[name] = (records, group.modality)
        return groups


def _choice_columns(groups: dict[str, Group]) -> dict[str, Column]:
    return {name: Column(name, "choice") for name in groups}


_MLLMU_GROUPS = {
    "forget_vqa": Group("forget", "vqa"), "forget_qa": Group("forget", "text"),
    "retain_vqa": Group("retain", "vqa"), "retain_qa": Group("retain", "text"),
    "real_vqa": Group("real_world", "vqa"), "real_qa": Group("real_world", "text"),
    "test_vqa": Group("test", "vqa", forget_profiles_only=True),
}
_CLEAR_GROUPS = {
    "forget_vqa": Group("forget", "vqa"), "forget_qa": Group("forget", "text"),
    "retain_vqa": Group("retain", "vqa"), "retain_qa": Group("retain", "text"),
    "real_vqa": Group("real_world", "vqa"), "real_face_vqa": Group("real_faces", "vqa"),
}

LAYOUTS = {
    # Every column a multiple-choice accuracy; the Test split (transformed portraits) comes last.
    "mllmu_bench": Layout(_MLLMU_GROUPS, _choice_columns(_MLLMU_GROUPS),
                          ("forget_vqa", "forget_qa", "retain_vqa", "retain_qa", "real_vqa", "real_qa")),
    # Names chosen among options for the images; TOFU's text questions answered freely, by ROUGE-L.
    "clear": Layout(_CLEAR_GROUPS, {
        "forget_vqa": Column("forget_vqa", "choice"), "forget_qa_rouge_l": Column("forget_qa", "rouge_l"),
        "retain_vqa": Column("retain_vqa", "choice"), "retain_qa_rouge_l": Column("retain_qa", "rouge_l"),
        "real_vqa": Column("real_vqa", "choice"), "real_face_vqa": Column("real_face_vqa", "choice"),
    }, ("forget_vqa", "forget_qa_rouge_l", "retain_vqa", "retain_qa_rouge_l", "real_vqa", "real_face_vqa")),
}


def layout_of(manifest: dict) -> Layout:
    fmt = manifest.get("format")
    if fmt not in LAYOUTS:
        raise ValueError(f"prepared benchmark of unknown format '{fmt}' (known: {', '.join(LAYOUTS)})")
    return LAYOUTS[fmt]
