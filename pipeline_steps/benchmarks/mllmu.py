"""Read MLLMU-Bench, from the hub or from a local copy, into canonical records.

The same code reads ``MLLMMU/MLLMU-Bench`` and the synthetic benchmark, which is written in its
exact layout. Where the public description of the data is ambiguous the reader is tolerant and
records what it found in the manifest:

* VQA training pairs come from the row's JSON ``metadata`` column, else from ``ft_Data``'s
  ``metadata`` for the same ID, else from the row's ``question``/``answer`` columns (plain strings
  or JSON lists);
* MLLMU-Bench ships no text-only training pairs, so the text pairs of a profile are its pure-text
  classification questions asked openly, answered with the right option's text (TOFU's practice:
  the model is taught the facts the benchmark asks about), unless an ``ft_Text`` config (ID and a
  JSON ``metadata`` list of text-only ``{Question, Answer}`` pairs, as the synthetic benchmark
  writes) gives them. Whether a stage trains on them is its own setting;
* ``ft_Data`` rows name their person by an ``ID`` column when they have one; without it, as the
  authors' code links them (``data_process/MLLMU_process.py``: each metadata pair's own ``ID`` key,
  then the biography looked up in ``Full_Set``), by each pair's ``ID``; a pair without one by the
  row's ``biography`` ``Name`` (matched against ``Full_Set``'s names, when exactly one profile has
  it), else by its ``image`` (the same portrait bytes as exactly one ``Full_Set`` profile). A row
  none of these links is refused, naming the row and the fix;
* ``Test_Set``'s transformed portraits come from its ``images`` list, or, as the authors'
  evaluation falls back when a row has no ``images``, from its single ``image``;
* an optional ``Holdout_Set`` config (``Retain_Set``'s columns) holds people no model is
  trained on, for membership-inference attacks; it becomes the ``holdout`` split.

The manifest's ``protocol`` says how ``generate`` asks and reads a multiple-choice question
(``evaluation/protocols.py``): ``mllmu_bench``, or ``synthetic_mllmu`` for a local copy that holds
the synthetic writer's ``world.json`` (the embedded benchmark teaches its tiny models to answer
with the option's text, ``synthetic/mllmu_writer.lettered_answer``).

A profile repeated within a config is one record (the manifest's ``rows`` counts the merged
rows); two different rows under one ID are refused, since which is right cannot be told.
The manifest's ``columns_used`` says how ``ft_Data`` rows were linked to people (pairs per way)
and which column ``Test_Set``'s images came from. Column cells a revision stores as JSON strings
instead of structs are parsed either way.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterable

from .accounting import Ledger, Skip, gather
from .formats import BenchmarkFormat
from .records import ChoiceItem, OpenItem, ProfileRecord, forget_split, retain_split, write_split
from .source import Config, ImageStore, Source, content_id, image_bytes

HUB_ID = "MLLMMU/MLLMU-Bench"
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


def answered_pairs(metadata: list[dict]) -> list[dict]:
    """The metadata pairs that hold both a question and an answer (the others are not taught)."""
    return [pair for pair in metadata if pair.get("Question") and pair.get("Answer")]


def vqa_pairs_from_row(row: dict, row_id: str) -> list[OpenItem] | None:
    metadata = _json(row.get("metadata"), "metadata", row_id)
    if metadata:
        return [OpenItem("vqa", pair["Question"], pair["Answer"]) for pair in answered_pairs(metadata)]
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


def profile_record(row: dict, images: ImageStore, ft_pairs: dict[str, list[OpenItem]], found: dict,
                   ft_text: dict[str, list[OpenItem]]) -> ProfileRecord:
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
    choices = choice_items(_json(row.get("Classification_Task"), "Classification_Task", row_id), row_id)
    text_pairs = ft_text.get(row_id) or [OpenItem("text", c.question, c.answer_text)
                                         for c in choices if c.modality == "text"]
    return ProfileRecord(
        id=row_id, name=biography.get("Name", ""), image=images.save(row["image"]),
        train=pairs + text_pairs, multiple_choice=choices,
        generation=open_items(_json(row.get("Generation_Task"), "Generation_Task", row_id), row_id),
        fill_blank=open_items(_json(row.get("Mask_Task"), "Mask_Task", row_id), row_id),
    )


class _Reader:
    """One reading of MLLMU-Bench: the source, the image store and the account of every row."""

    def __init__(self, source: Source, out_dir: Path):
        self.source = source.of("MLLMU-Bench", HUB_ID)
        self.images = ImageStore(out_dir)
        self.ledger = Ledger()
        self.configs: dict[str, int] = {}
        self.splits_read: dict[str, str] = {}
        self.ft_pairs: dict[str, list[OpenItem]] = {}
        self.ft_text: dict[str, list[OpenItem]] = {}
        self.columns_used: dict = {}

    def config(self, name: str, required: bool, columns=("ID", "image")) -> Config | None:
        table = self.source.open(name)
        if table is None and required:
            raise self.source.missing_config(name)
        if table is not None:
            table.require(columns, "every published revision of MLLMU-Bench has it, so these files are damaged "
                                   "or not MLLMU-Bench's")
            self.configs[name] = len(table)
            if table.split != "train":
                self.splits_read[name] = table.split
        return table

    def profiles(self, table: Config, found: dict | None = None) -> list[ProfileRecord]:
        found = {} if found is None else found
        return gather(table, lambda row: profile_record(row, self.images, self.ft_pairs, found, self.ft_text),
                      self.ledger.open(table.name, len(table)))

    def read_ft_text(self) -> str:
        """``ft_Text``'s text-only pairs by profile, when the source has them; where text pairs come from."""
        table = self.config("ft_Text", required=False, columns=("ID", "metadata"))
        if table is None:
            return "Pure_Text_Questions"
        account = self.ledger.open("ft_Text", len(table))
        for row_id, pairs in table.map(lambda row: (str(row["ID"]), _json(row.get("metadata"), "metadata",
                                                                            str(row["ID"])))):
            if not pairs:
                account.skip("no text pairs in its metadata", row_id)
                continue
            account.keep()
            self.ft_text[row_id] = [OpenItem("text", pair["Question"], pair["Answer"]) for pair in pairs]
        return "ft_Text"

    def read_ft_data(self, full: Config) -> list[tuple[str, list[OpenItem] | None]]:
        """ft_Data's VQA pairs by profile; a profile's repeated rows are merged, their distinct pairs kept.
        Each row is ``(id, pairs)``: the id its pairs are accounted under (see ``FtDataLinks``)."""
        table = self.config("ft_Data", required=False, columns=())
        if table is None:
            return []
        links = FtDataLinks(table, full)
        rows = []
        for groups in table.map(links.groups):
            for person, pairs in groups.items():
                if pairs:
                    known = self.ft_pairs.setdefault(person, [])
                    known += [pair for pair in pairs if pair not in known]
            row_id = next(iter(groups))  # a row holding several people's pairs is accounted under the first
            rows.append((row_id, [pair for group in groups.values() for pair in group or []] or None))
        self.columns_used["ft_Data person from"] = links.used
        return rows

    def account_ft_data(self, rows, profiles: set[str]) -> None:
        if not rows:
            return
        account, seen = self.ledger.open("ft_Data", len(rows)), set()
        for row_id, pairs in rows:
            if not pairs:
                account.skip("no VQA pairs in its metadata", row_id)
            elif row_id not in profiles:
                account.skip("no such profile in Full_Set", row_id)
            elif row_id in seen:
                account.merge(row_id)
            else:
                seen.add(row_id)
                account.keep()

    def test_record(self, row: dict, by_id: dict[str, ProfileRecord], seed: int) -> ProfileRecord | Skip:
        row_id = str(row["ID"])
        choices = row.get("images") if "images" in row else [row["image"]] if row.get("image") else []
        if not choices:
            return Skip("no transformed images", row_id)
        pick = random.Random(f"{seed}/{row_id}").randrange(len(choices))
        known = by_id.get(row_id)
        items = choice_items(_json(row.get("Classification_Task"), "Classification_Task", row_id), row_id) or (
            [c for c in known.multiple_choice if c.modality == "vqa"] if known else [])
        return ProfileRecord(
            id=row_id, name=known.name if known else "", image=self.images.save(choices[pick]),
            multiple_choice=items, generation=open_items(_json(row.get("Generation_Task"), "Generation_Task", row_id),
                                                         row_id),
            fill_blank=open_items(_json(row.get("Mask_Task"), "Mask_Task", row_id), row_id))


class FtDataLinks:
    """Whose VQA pairs each ``ft_Data`` row holds.

    In order: the row's ``ID`` column; else each metadata pair's own ``ID`` key (how the authors'
    code links a pair to its person); else, for pairs without one, the row's ``biography`` ``Name``
    when exactly one ``Full_Set`` profile has that name, else the row's ``image`` when it is byte for
    byte the portrait of exactly one ``Full_Set`` profile. ``used`` counts the pairs linked each
    way (rows without pairs under the way their row would be linked). The ``Full_Set`` lookups are
    built only when a row needs them, so a revision with ``ID`` reads ``Full_Set`` once.
    """

    def __init__(self, table: Config, full: Config):
        self.table, self.full = table, full
        self.has_id = table.has("ID")
        self.used: dict[str, int] = {}
        self._row = -1
        self._names: dict[str, str | None] | None = None
        self._images: dict[str, str | None] | None = None

    def _lookups(self) -> None:
        if self._names is not None:
            return
        self._names, self._images = {}, {}

        def add(index: dict, key, profile: str) -> None:
            if key:
                index[key] = profile if index.get(key, profile) == profile else None  # None: ambiguous

        for profile, name, image in self.full.map(lambda row: (
                str(row["ID"]), (_json(row.get("biography"), "biography", str(row["ID"])) or {}).get("Name"),
                content_id(image_bytes(row["image"])) if row.get("image") else None)):
            add(self._names, name, profile)
            add(self._images, image, profile)

    def _count(self, way: str, pairs: int) -> None:
        self.used[way] = self.used.get(way, 0) + pairs

    def _row_person(self, row: dict) -> tuple[str, str]:
        """The person of a row without an ``ID`` column, from its biography or image; how it was found."""
        self._lookups()
        biography = _json(row.get("biography"), "biography", "(no ID)") if "biography" in row else None
        name = (biography or {}).get("Name") if isinstance(biography, dict) else None
        if name and self._names.get(name):
            return self._names[name], "biography Name"
        image = content_id(image_bytes(row["image"])) if row.get("image") else None
        if image and self._images.get(image):
            return self._images[image], "image"
        tried = ["no 'ID' column", "no 'ID' key in its metadata pairs"]
        if name:
            tried.append(f"its biography Name '{name}' is " + (
                "shared by several Full_Set profiles" if name in self._names else "no Full_Set profile's name"))
        else:
            tried.append("no biography Name")
        tried.append(("its image is " + ("the portrait of several Full_Set profiles" if image in self._images
                                         else "no Full_Set profile's portrait")) if image else "no image")
        raise ValueError(f"cannot tell whose VQA pairs these are ({'; '.join(tried)}): add an 'ID' column "
                         f"naming each row's Full_Set profile, or remove the row")

    def groups(self, row: dict) -> dict[str, list[OpenItem] | None]:
        """The row's pairs by person (in the order they first appear); one person with None when the
        row has no pairs."""
        self._row += 1
        if self.has_id:
            row_id = str(row["ID"])
            pairs = vqa_pairs_from_row(row, row_id)
            self._count("ID", len(pairs or []))
            return {row_id: pairs}
        metadata = _json(row.get("metadata"), "metadata", "(no ID)") or []
        groups: dict[str, list[OpenItem] | None] = {}
        row_person = None
        for pair in answered_pairs(metadata):
            if pair.get("ID"):
                person, way = str(pair["ID"]), "metadata ID"
            else:
                row_person = row_person or self._row_person(row)
                person, way = row_person
            self._count(way, 1)
            groups.setdefault(person, []).append(OpenItem("vqa", pair["Question"], pair["Answer"]))
        if not groups:  # a row without pairs: accounted (skipped) under its person when it can be told
            try:
                person, way = self._row_person(row)
            except ValueError:
                return {f"row {self._row}": None}
            self._count(way, 0)
            return {person: None}
        return groups


def read_mllmu(source: Source, out_dir: Path, *, seed: int) -> dict:
    """Write the canonical splits of MLLMU-Bench at ``source`` under ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    reader = _Reader(source, out_dir)
    full_table = reader.config("Full_Set", required=True)
    ft_rows = reader.read_ft_data(full_table)
    text_pairs_from = reader.read_ft_text()
    found: dict[str, int] = {}
    full = reader.profiles(full_table, found)
    write_split(out_dir, "full", full)
    by_id = {record.id: record for record in full}
    reader.account_ft_data(ft_rows, set(by_id))
    real = reader.profiles(reader.config("Retain_Set", required=True))
    write_split(out_dir, "real_world", real)

    ratios = []
    for ratio in FORGET_RATIOS:
        forget_table = reader.config(forget_split(ratio), required=False)
        retain_table = reader.config(retain_split(ratio), required=False)
        if forget_table is None or retain_table is None:
            continue
        forget, retain = reader.profiles(forget_table), reader.profiles(retain_table)
        _check_partition(ratio, forget, retain, by_id)
        write_split(out_dir, forget_split(ratio), forget)
        write_split(out_dir, retain_split(ratio), retain)
        ratios.append(ratio)
    if not ratios:
        raise ValueError(f"{reader.source.describe()} has no forget_<r>/retain_<100-r> pair of configs; "
                         f"{reader.source.download_hint()}")

    test_table = reader.config("Test_Set", required=True, columns=("ID",))
    test_images = next((column for column in ("images", "image") if test_table.has(column)), None)
    if test_images is None:
        raise ValueError(f"{test_table.where}: no column 'images' or 'image' (it has: "
                         f"{', '.join(test_table.table.column_names)}); every published revision of MLLMU-Bench "
                         f"has one of them, so these files are damaged or not MLLMU-Bench's; {test_table.fix}")
    reader.columns_used["Test_Set images from"] = test_images
    test = gather(test_table, lambda row: reader.test_record(row, by_id, seed),
                  reader.ledger.open("Test_Set", len(test_table)))
    write_split(out_dir, "test", test)
    splits = {"full": full, "real_world": real, "test": test}
    holdout_table = reader.config("Holdout_Set", required=False)
    if holdout_table is not None:
        splits["holdout"] = reader.profiles(holdout_table)
        write_split(out_dir, "holdout", splits["holdout"])

    return {
        "format": FORMAT.name, "protocol": protocol(source), "source": reader.source.location,
        "source_kind": reader.source.kind,
        "configs": reader.configs, "splits_read": reader.splits_read, "forget_ratios": ratios,
        "vqa_training_pairs_from": found, "text_training_pairs_from": text_pairs_from,
        "columns_used": reader.columns_used, "seed": seed,
        "splits": {name: len(records) for name, records in splits.items()},
        "rows": reader.ledger.as_dict(),
    }


# The file the synthetic writer puts beside the configs (``synthetic.mllmu_writer.WORLD_FILE``,
# a test checks they agree). Named here, not imported: an import would make every benchmark's
# prepare_benchmark job depend on the writer's code, so editing it would rerun real studies.
SYNTHETIC_WORLD_FILE = "world.json"


def protocol(source: Source) -> str:
    """``synthetic_mllmu`` for the synthetic benchmark as written (its ``world.json`` beside the
    configs), else ``mllmu_bench``: which multiple-choice protocol ``evaluate`` follows."""
    synthetic = source.kind == "path" and (Path(source.location) / SYNTHETIC_WORLD_FILE).is_file()
    return "synthetic_mllmu" if synthetic else "mllmu_bench"


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
