"""Diagnostic questions about the synthetic world: does the instrument measure what it claims?

The benchmark's own items say how much a model knows; these say *how* it knows it, and need the
world itself (``world.json``), which the benchmark schema cannot express:

* ``coupling``: the facts of a person taught by name only (``world.py``), asked with their face in
  the evaluation wording. Answering them above chance needs the route face -> identity -> fact,
  the knowledge both modalities share. Each of them is asked as text too (``coupling_text``), which
  is their ceiling: the model was taught them that way.
* ``face_train`` / ``face_eval`` and ``text_train`` / ``text_eval``: the same facts asked in the
  wording the model was trained on and in the evaluation wording. Their difference is the
  paraphrase gap: how much of a column's accuracy is memory of strings rather than of the person.
  Per attribute (``attribute_of``), it also shows an evaluation wording that a model reads as
  another attribute's question.

Options are drawn as the benchmark draws its own (three other values of the attribute, the right
one at a random letter), from a seed of their own.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from ...benchmarks.records import ChoiceItem, read_split
from ...evaluation.scoring import PosedItem
from .mllmu_writer import WORLD_FILE, draw_options

GROUPS = ("coupling", "coupling_text", "face_train", "face_eval", "text_train", "text_eval")


def read_world(raw_benchmark: Path) -> dict:
    path = Path(raw_benchmark) / WORLD_FILE
    if not path.exists():
        raise FileNotFoundError(f"{raw_benchmark} has no {WORLD_FILE}: instrument diagnostics need a synthetic "
                                "benchmark written by pipeline_steps.synthesize_benchmark")
    return json.loads(path.read_text())


def _item(attribute: dict, wording: str, name: str, value: str, modality: str, rng: random.Random) -> ChoiceItem:
    options, correct = draw_options(attribute["values"], value, rng)
    return ChoiceItem(modality, attribute[wording].format(name=name), options, correct)


def attribute_of(world: dict) -> dict[str, str]:
    """Every question an attribute's four wordings make of any person in the world -> that attribute
    (the diagnostics ask only about fictitious people; the other people's entries go unused)."""
    keys = {}
    for attribute in world["attributes"]:
        for wording in ("vqa_question", "vqa_paraphrase", "text_question", "text_paraphrase"):
            for person in world["people"]:
                keys[attribute[wording].format(name=person["name"])] = attribute["key"]
    return keys


def diagnostic_items(world: dict, benchmark: Path, people: int, seed: int = 0) -> dict[str, list[PosedItem]]:
    """The diagnostic groups over the first ``people`` fictitious people (every one a model was
    fine-tuned on), each asked with the portrait the benchmark trains on."""
    images = {r.id: r.image for r in read_split(benchmark, "full")}
    fictitious = [p for p in world["people"] if p["kind"] == "fictitious"][:people]
    groups: dict[str, list[PosedItem]] = {group: [] for group in GROUPS}
    for person in fictitious:
        rng = random.Random(f"{seed}/instrument/{person['id']}")
        portrait = Image.open(Path(benchmark) / images[person["id"]]).convert("RGB")
        for attribute in world["attributes"]:
            value, taught = person["facts"][attribute["key"]], attribute["key"] in person["vqa_taught"]

            def ask(group, wording, modality):
                item = _item(attribute, wording, person["name"], value, modality, rng)
                groups[group].append(PosedItem(item, portrait if modality == "vqa" else None, person["id"]))

            if taught:
                ask("face_train", "vqa_question", "vqa")
                ask("face_eval", "vqa_paraphrase", "vqa")
            else:
                ask("coupling", "vqa_paraphrase", "vqa")
                ask("coupling_text", "text_paraphrase", "text")
            ask("text_train", "text_question", "text")
            ask("text_eval", "text_paraphrase", "text")
    return groups
