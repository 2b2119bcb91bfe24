"""Read MLLMU-Bench, from the hub or from a local copy, into canonical records.

The same code reads ``MLLMMU/MLLMU-Bench`` and the synthetic benchmark, which is written in its
exact layout. Where the public description of the data is ambiguous the reader is tolerant and
records what it found in the manifest:

* VQA training pairs come from the row's JSON ``metadata`` column, else from ``ft_Data``'s
  ``metadata`` for the same ID, else from the row's ``question``/``answer`` columns (plain strings
  or JSON lists);
* MLLMU-Bench ships no text-only training pairs, so the text pairs of a profile are its pure-text
  classification questions asked openly, answered with the right option's text (TOFU's practice:
  the model is taught the facts the benchmark asks about). Whether a stage trains on them is its
  own setting.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

import datasets

from .formats import BenchmarkFormat
from .records import ChoiceItem, OpenItem, ProfileRecord, forget_split, retain_split, write_split
from .source import ImageStore, open_config

FORGET_RATIOS = (5, 10, 15)
TASK_MODALITY = {"Image_Textual": "vqa", "Pure_Text": "text"}


def required_configs(ratios) -> list[str]:
    """The configs a run at these forget ratios reads (``ft_Data`` is optional)."""
    return ["Full_Set", "Retain_Set", "Test_Set"] + [c for r in ratios for c in (forget_split(r), retain_split(r))]


def _json(value, what: str, row_id: str):
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"profile {row_id}: column '{what}' is not valid JSON ({error})") from None


def vqa_pairs_from_row(row: dict, row_id: str) -> list[OpenItem] | None:
    metadata = _json(row.get("metadata"), "metadata", row_id)
    if metadata:
        return [OpenItem("vqa", pair["Question"], pair["Answer"]) for pair in metadata
                if pair.get("Question") and pair.get("Answer")]
    return None


def vqa_pairs_from_question_answer(row: dict, row_id: str) -> list[OpenItem] | None:
    question, answer = row.get("question"), row.get("answer")
    if not question or not answer:
        return None
    if question.lstrip().startswith("["):
        questions, answers = _json(question, "question", row_id), _json(answer, "answer", row_id)
        if len(questions) != len(answers):
            raise ValueError(f"profile {row_id}: {len(questions)} questions but {len(answers)} answers")
        return [OpenItem("vqa", q, a) for q, a in zip(questions, answers)]
    return [OpenItem("vqa", question, answer)]


def _letter(raw: str, options: dict[str, str], row_id: str) -> str:
    letter = raw.strip()[:1].upper()
    if letter not in options:
        raise ValueError(f"profile {row_id}: correct answer '{raw}' is not one of the options {sorted(options)}")
    return letter


def choice_items(classification: dict | None, row_id: str) -> list[ChoiceItem]:
    items = []
    for key, modality in (("Image_Textual_Questions", "vqa"), ("Pure_Text_Questions", "text")):
        for item in (classification or {}).get(key) or []:
            options = {k: v for k, v in (item["Options"] or {}).items() if v is not None}
            items.append(ChoiceItem(modality, item["Question"], options, _letter(item["Correct_Answer"], options, row_id)))
    return items


def open_items(tasks: Iterable[dict] | None, row_id: str) -> list[OpenItem]:
    items = []
    for item in tasks or []:
        if item["Type"] not in TASK_MODALITY:
            raise ValueError(f"profile {row_id}: unknown task type '{item['Type']}'")
        items.append(OpenItem(TASK_MODALITY[item["Type"]], item["Question"], item["Ground_Truth"]))
    return items


def profile_record(row: dict, images: ImageStore, ft_pairs: dict[str, list[OpenItem]], found: dict) -> ProfileRecord:
    row_id = str(row["ID"])
    biography = _json(row.get("biography"), "biography", row_id) or {}
    pairs = vqa_pairs_from_row(row, row_id)
    origin = "metadata"
    if pairs is None and row_id in ft_pairs:
        pairs, origin = ft_pairs[row_id], "ft_Data metadata"
    if pairs is None:
        pairs, origin = vqa_pairs_from_question_answer(row, row_id), "question/answer"
    if pairs is None:
        pairs, origin = [], "none"
    found[origin] = found.get(origin, 0) + 1
    choices = choice_items(row.get("Classification_Task"), row_id)
    text_pairs = [OpenItem("text", c.question, c.answer_text) for c in choices if c.modality == "text"]
    return ProfileRecord(
        id=row_id, name=biography.get("Name", ""), image=images.save(row["image"]),
        train=pairs + text_pairs, multiple_choice=choices,
        generation=open_items(row.get("Generation_Task"), row_id),
        fill_blank=open_items(row.get("Mask_Task"), row_id),
    )


def read_mllmu(source: str, out_dir: Path, *, seed: int, cache_dir: str | None = None) -> dict:
    """Write the canonical splits of MLLMU-Bench at ``source`` under ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    images = ImageStore(out_dir)
    configs = {}

    def config(name: str, required: bool) -> datasets.Dataset | None:
        table = open_config(source, name, cache_dir)
        if table is None and required:
            raise ValueError(f"MLLMU-Bench source '{source}' has no config '{name}'")
        if table is not None:
            configs[name] = len(table)
        return table

    ft_data = config("ft_Data", required=False)
    ft_pairs = {}
    if ft_data is not None:
        for row in ft_data:
            pairs = vqa_pairs_from_row(row, str(row["ID"]))
            if pairs:
                ft_pairs[str(row["ID"])] = pairs

    found: dict[str, int] = {}
    full = [profile_record(row, images, ft_pairs, found) for row in config("Full_Set", required=True)]
    write_split(out_dir, "full", full)
    by_id = {record.id: record for record in full}
    real = [profile_record(row, images, ft_pairs, {}) for row in config("Retain_Set", required=True)]
    write_split(out_dir, "real_world", real)

    ratios = []
    for ratio in FORGET_RATIOS:
        forget_table = config(forget_split(ratio), required=False)
        retain_table = config(retain_split(ratio), required=False)
        if forget_table is None or retain_table is None:
            continue
        forget = [profile_record(row, images, ft_pairs, {}) for row in forget_table]
        retain = [profile_record(row, images, ft_pairs, {}) for row in retain_table]
        _check_partition(ratio, forget, retain, by_id)
        write_split(out_dir, forget_split(ratio), forget)
        write_split(out_dir, retain_split(ratio), retain)
        ratios.append(ratio)
    if not ratios:
        raise ValueError(f"MLLMU-Bench source '{source}' has no forget_<r>/retain_<100-r> pair of configs")

    test = []
    for row in config("Test_Set", required=True):
        row_id = str(row["ID"])
        choices = row.get("images") or []
        if not choices:
            raise ValueError(f"Test_Set profile {row_id} has no images")
        pick = random.Random(f"{seed}/{row_id}").randrange(len(choices))
        known = by_id.get(row_id)
        items = choice_items(row.get("Classification_Task"), row_id) or (
            [c for c in known.multiple_choice if c.modality == "vqa"] if known else [])
        test.append(ProfileRecord(
            id=row_id, name=known.name if known else "", image=images.save(choices[pick]),
            multiple_choice=items, generation=open_items(row.get("Generation_Task"), row_id),
            fill_blank=open_items(row.get("Mask_Task"), row_id)))
    write_split(out_dir, "test", test)

    return {
        "format": FORMAT.name, "source": source, "configs": configs, "forget_ratios": ratios,
        "vqa_training_pairs_from": found, "seed": seed,
        "splits": {name: len(records) for name, records in
                   [("full", full), ("real_world", real), ("test", test)]},
    }


def _check_partition(ratio: int, forget: list[ProfileRecord], retain: list[ProfileRecord],
                     full: dict[str, ProfileRecord]) -> None:
    forget_ids, retain_ids = {r.id for r in forget}, {r.id for r in retain}
    if forget_ids & retain_ids:
        raise ValueError(f"profiles {sorted(forget_ids & retain_ids)[:5]} are in both {forget_split(ratio)} "
                         f"and {retain_split(ratio)}")
    unknown = (forget_ids | retain_ids) - set(full)
    if unknown:
        raise ValueError(f"{forget_split(ratio)}/{retain_split(ratio)} name profiles missing from Full_Set: "
                         f"{sorted(unknown)[:5]}")


FORMAT = BenchmarkFormat("mllmu_bench", FORGET_RATIOS, required_configs, read_mllmu, synthesizable=True)
