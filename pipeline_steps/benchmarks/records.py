"""Canonical benchmark records: what every stage after ``prepare_benchmark`` reads.

A prepared benchmark is a directory::

    manifest.json          where the data came from, how it was read, counts per split
    images/<sha>.png       every image once, named by content
    splits/<split>.jsonl   one profile per line

Split names are shared by the benchmark families: ``full`` (all fictitious profiles),
``forget_<r>`` / ``retain_<100-r>`` for each forget ratio ``r`` and ``real_world`` (profiles the
base model is expected to know); MLLMU-Bench adds ``test`` (fictitious profiles seen through new
images), CLEAR ``real_faces`` (celebrities' faces). Which splits a family is scored on is in
``layouts.py``.

A record holds a profile's training pairs and its evaluation items. ``modality`` is ``"vqa"``
(asked with the profile's image) or ``"text"`` (asked with no image), the two columns of every
benchmark table. A CLEAR record is one image or one text question rather than a whole profile
(``clear.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODALITIES = ("vqa", "text")
# What a Fisher diagonal can be measured on: a group of profiles (a forget ratio's forget or retain
# profiles, or the real-world ones) in one modality; ``training/examples.py`` reads each.
FISHER_GROUPS = ("forget", "retain", "real")
FISHER_SPLITS = tuple(f"{group}_{modality}" for group in FISHER_GROUPS for modality in MODALITIES)


@dataclass(frozen=True)
class OpenItem:
    """A question with a free-text answer: a training pair, a generation item or a blank to fill."""

    modality: str
    question: str
    answer: str


@dataclass(frozen=True)
class ChoiceItem:
    """A multiple-choice question; ``answer`` is the letter of the right option."""

    modality: str
    question: str
    options: dict[str, str]
    answer: str

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]


@dataclass
class ProfileRecord:
    id: str
    name: str
    image: str | None  # path relative to the benchmark directory
    train: list[OpenItem] = field(default_factory=list)
    multiple_choice: list[ChoiceItem] = field(default_factory=list)
    generation: list[OpenItem] = field(default_factory=list)
    fill_blank: list[OpenItem] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "ProfileRecord":
        return cls(
            id=data["id"], name=data["name"], image=data["image"],
            train=[OpenItem(**item) for item in data["train"]],
            multiple_choice=[ChoiceItem(**item) for item in data["multiple_choice"]],
            generation=[OpenItem(**item) for item in data["generation"]],
            fill_blank=[OpenItem(**item) for item in data["fill_blank"]],
        )


def split_path(benchmark_dir: Path, split: str) -> Path:
    return Path(benchmark_dir) / "splits" / f"{split}.jsonl"


def read_split(benchmark_dir: Path, split: str) -> list[ProfileRecord]:
    path = split_path(benchmark_dir, split)
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.jsonl"))
        raise FileNotFoundError(f"benchmark {benchmark_dir} has no split '{split}' (it has: {', '.join(available)})")
    with path.open() as handle:
        return [ProfileRecord.from_dict(json.loads(line)) for line in handle if line.strip()]


def write_split(benchmark_dir: Path, split: str, records: list[ProfileRecord]) -> None:
    path = split_path(benchmark_dir, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record)) + "\n")


def read_manifest(benchmark_dir: Path) -> dict:
    return json.loads((Path(benchmark_dir) / "manifest.json").read_text())


def forget_ratios(benchmark_dir: Path) -> list[int]:
    """The forget ratios a prepared benchmark offers."""
    return sorted(read_manifest(benchmark_dir)["forget_ratios"])


def retain_split(ratio: int) -> str:
    return f"retain_{100 - ratio}"


def forget_split(ratio: int) -> str:
    return f"forget_{ratio}"
