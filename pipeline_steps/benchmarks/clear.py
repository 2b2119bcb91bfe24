"""Read CLEAR (``therem/CLEAR``, Dontsov et al. 2024), from the hub or a local copy, into canonical records.

CLEAR adds face images with GPT-4o captions to TOFU's 200 fictitious authors. Its configs hold
one row per *image* (``image``, ``caption``, ``name``), TOFU's text questions in the ``+tofu``
configs (rows whose ``image`` is None), the multiple-choice material in the ``_perturbed``
configs (``perturbed_names``), and two real-world sets (``real_faces``, ``real_world``) whose
``options`` are the wrong answers. A canonical record is therefore one image or one text
question, not one author:

* an image record (id ``img-<content hash>``, ``name`` = the author) trains on its caption, asked
  with one of CLEAR's nine caption prompts (``CAPTION_PROMPTS``, seeded per image), and, where a
  perturbed row shows the same image, asks "What is the name of the person in the image?" with
  the perturbed names as the wrong options and the true name at a seeded position (the
  MMUnlearner paper's Forget / Retain VQA), in CLEAR's prompt (``A. name`` lines, no
  instruction: the manifest's ``protocol``, ``evaluation/protocols.py``);
* a text record (id ``qa-<content hash>``, no image) trains on a TOFU question and asks it as a
  generation item, scored by ROUGE-L against *its own* answer (Forget / Retain QA);
* ``real_world`` and ``real_faces`` rows become multiple-choice records with the row's options.

Splits: ``full`` (``full`` + ``full+tofu``), ``forget_<r>`` / ``retain_<100-r>`` for r in 1, 5, 10
(``forget01`` + ``forget01+tofu`` ...), ``real_world`` and ``real_faces``.

Where the public description leaves room the reader is tolerant and says what it did in the
manifest (``name_questions``): the retain split's perturbed names come from
``retain<100-r>_perturbed`` when that config exists (the MMUnlearner authors' evaluation reads
it), else from ``retain_perturbed`` without the forget authors; a perturbed row whose image is in
no record of the split is added as an evaluation-only record; without any perturbed config every
image is asked about with other authors' names as the wrong options; a row with fewer than three
distinct wrong names is topped up from other authors' names.

Older revisions of the hub data are read where the information is there and refused, naming the
config, the column and the download to use, where it is not (``COLUMNS``): the first
``retain_perturbed`` had no ``name``/``perturbed_names``, so a row's author is the one ``full``
shows with the same image; the earliest plain configs had no ``name`` at all, and nothing else
says whose face an image is. Every row is accounted for in the manifest's ``rows``, and the
images a split asks no name question about are listed (``images_without_name_question``).
"""

from __future__ import annotations

import random
import string
from collections import Counter
from pathlib import Path

from .accounting import Ledger, Skip, gather
from .formats import BenchmarkFormat
from .records import ChoiceItem, OpenItem, ProfileRecord, forget_split, retain_split, write_split
from .source import Config, ImageStore, Source, content_id, image_bytes

HUB_ID = "therem/CLEAR"
FORGET_RATIOS = (1, 5, 10)
NAME_QUESTION = "What is the name of the person in the image?"
MIN_DISTRACTORS = 3
# The nine caption prompts CLEAR trains on, one per image drawn with the benchmark's seed. Their
# wording is a fact about the benchmark: IMAGE_CAPTION_QUESTIONS in mm/dataset.py of the CLEAR
# authors' repository (github.com/somvy/multimodal_unlearning, commit bb14c96), the same list in
# data_process/CLEAR_process.py of the MMUnlearner authors' (github.com/Z1zs/MMUnlearner, fa77c66).
# The second prompt has no full stop in either.
CAPTION_PROMPTS = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)


# The columns the reader cannot do without, by kind of config, and which revision lacks them.
EARLY = "an early revision of CLEAR (image and caption only) does not say whose face an image is"
COLUMNS = {
    "plain": (("image", "caption", "name"), EARLY),
    "tofu": (("question", "answer"), "a +tofu config without TOFU's question/answer columns is not CLEAR's"),
    "perturbed": (("image",), "a perturbed config without images is not CLEAR's"),
    "real_faces": (("image", "answer", "options"), "real_faces needs its answer and options (the wrong names)"),
    "real_world": (("image", "answer", "options"), "real_world needs its answer and options (the wrong answers)"),
}


def _kind(config: str) -> str:
    if config in ("real_faces", "real_world"):
        return config
    return "tofu" if config.endswith("+tofu") else "perturbed" if config.endswith("_perturbed") else "plain"


def forget_config(ratio: int) -> str:
    return f"forget{ratio:02d}"


def retain_config(ratio: int) -> str:
    return f"retain{100 - ratio}"


def required_configs(ratios) -> list[str]:
    """The configs a run at these forget ratios reads (the ``_perturbed`` ones are optional)."""
    names = ["full", "full+tofu", "real_world", "real_faces"]
    for ratio in ratios:
        names += [forget_config(ratio), retain_config(ratio), f"{forget_config(ratio)}+tofu",
                  f"{retain_config(ratio)}+tofu"]
    return names


def _distinct(values, exclude: str) -> list[str]:
    seen, out = {exclude}, []
    for value in values or []:
        if value and value not in seen:
            seen.add(value)
            out.append(value)
    return out


def choice_item(question: str, answer: str, wrong: list[str], key: str) -> ChoiceItem:
    """``answer`` among ``wrong`` at a position drawn from ``key``; letters A, B, C, ..."""
    texts = list(wrong[:len(string.ascii_uppercase) - 1])
    texts.insert(random.Random(key).randrange(len(texts) + 1), answer)
    options = dict(zip(string.ascii_uppercase, texts))
    return ChoiceItem("vqa", question, options, next(k for k, v in options.items() if v == answer))


class _Reader:
    def __init__(self, source: Source, out_dir: Path, seed: int):
        self.source, self.seed = source.of("CLEAR", HUB_ID), seed
        self.images = ImageStore(out_dir)
        self.ledger = Ledger()
        self.configs: dict[str, int] = {}
        self.splits_read: dict[str, str] = {}
        self.opened: dict[str, Config | None] = {}
        self.authors: list[str] = []
        self.names_by_image: dict[str, str] = {}  # image record id -> author, from ``full``

    def config(self, name: str, required: bool) -> Config | None:
        if name not in self.opened:  # retain_perturbed serves several splits: open it once
            table = self.opened[name] = self.source.open(name)
            if table is not None:
                columns, revision = COLUMNS[_kind(name)]
                table.require(columns, revision)
                self.configs[name] = len(table)
                if table.split != "train":
                    self.splits_read[name] = table.split
        if self.opened[name] is None and required:
            raise self.source.missing_config(name)
        return self.opened[name]

    def image_records(self, table: Config) -> list[ProfileRecord]:
        """One record per row: an image shown twice in one config is two training rows, kept apart."""
        seen, account = Counter(), self.ledger.open(table.name, len(table))

        def record(row):
            record_id = f"img-{content_id(image_bytes(row['image']), 16)}"
            seen[record_id] += 1
            if seen[record_id] > 1:
                record_id += f"~{seen[record_id]}"
            prompt = CAPTION_PROMPTS[random.Random(f"{self.seed}/caption/{record_id}").randrange(len(CAPTION_PROMPTS))]
            captions = row["caption"] if isinstance(row["caption"], list) else [row["caption"]]
            account.keep()
            return ProfileRecord(id=record_id, name=row["name"], image=self.images.save(row["image"]),
                                 train=[OpenItem("vqa", prompt, c) for c in captions if c])
        return list(table.map(record))

    def text_records(self, table: Config) -> list[ProfileRecord]:
        """TOFU's questions of a ``+tofu`` config; a repeated question/answer pair is merged and counted."""
        plain = table.name.removesuffix("+tofu")

        def record(row):
            if row.get("image") is not None:
                return Skip(f"image row (its image and caption are read from '{plain}')",
                            f"img-{content_id(image_bytes(row['image']), 16)}")
            if not row.get("question") or not row.get("answer"):
                return Skip("text row without a question or an answer")
            record_id = f"qa-{content_id((row['question'] + chr(0) + row['answer']).encode(), 16)}"
            pair = OpenItem("text", row["question"], row["answer"])
            return ProfileRecord(id=record_id, name="", image=None, train=[pair], generation=[pair])
        return gather(table, record, self.ledger.open(table.name, len(table)))

    def ask_names(self, split: str, records: list[ProfileRecord], perturbed: Config | None,
                  skip_authors: set[str], key: str | None = None) -> dict:
        """Add the name question to the image records (see the module docstring); return counts."""
        counts = Counter()
        if perturbed is None:
            for record in records:
                if record.image is not None:
                    record.multiple_choice.append(self._name_item(record.id, record.name, []))
                    counts["wrong names from other authors"] += 1
            return dict(counts)
        by_id = {r.id: r for r in records}
        account = self.ledger.open(key or perturbed.name, len(perturbed))

        def ask(row):
            record_id = f"img-{content_id(image_bytes(row['image']), 16)}"
            name = row.get("name") or self.names_by_image.get(record_id)
            if not name:  # the first retain_perturbed had no name column: the image says whose it is
                return account.skip("no name, and its image is in no record of 'full'", record_id)
            if name in skip_authors:
                counts["perturbed rows of forget authors, left out"] += 1
                return account.skip("a forget author's row, left out of the retain split", record_id)
            if not row.get("name"):
                counts["name taken from the image's record in 'full'"] += 1
            record = by_id.get(record_id)
            if record is None:
                record = ProfileRecord(id=record_id, name=name, image=self.images.save(row["image"]))
                records.append(record)
                by_id[record_id] = record
                counts["perturbed rows added as evaluation-only images"] += 1
            wrong = _distinct(row.get("perturbed_names"), name)
            counts["wrong names from perturbed_names" if len(wrong) >= MIN_DISTRACTORS
                   else "wrong names topped up from other authors"] += 1
            record.multiple_choice.append(self._name_item(record.id, name, wrong))
            account.keep()
        for _ in perturbed.map(ask):
            pass
        self.ledger.uncovered[split] = [r.id for r in records if r.image is not None and not r.multiple_choice]
        return dict(counts)

    def _name_item(self, record_id: str, name: str, wrong: list[str]) -> ChoiceItem:
        if len(wrong) < MIN_DISTRACTORS:
            others = _distinct(self.authors, name)
            random.Random(f"{self.seed}/others/{record_id}").shuffle(others)
            wrong = wrong + [n for n in others if n not in wrong][:MIN_DISTRACTORS - len(wrong)]
        return choice_item(NAME_QUESTION, name, wrong, f"{self.seed}/options/{record_id}")

    def real_records(self, table: Config, kind: str, counts: Counter) -> list[ProfileRecord]:
        def record(row):
            if row.get("image") is None:
                counts[f"{kind} rows without an image, left out"] += 1
                return Skip("no image")
            question = row.get("question") or NAME_QUESTION
            answer = str(row["answer"])
            data = image_bytes(row["image"])
            record_id = f"{kind}-{content_id(data + question.encode(), 16)}"
            item = choice_item(question, answer, _distinct(map(str, row.get("options") or []), answer),
                               f"{self.seed}/options/{record_id}")
            return ProfileRecord(id=record_id, name=answer if kind == "face" else "",
                                 image=self.images.save(row["image"]),
                                 train=[OpenItem("vqa", question, answer)], multiple_choice=[item])
        return gather(table, record, self.ledger.open(table.name, len(table)))


def read_clear(source: Source, out_dir: Path, *, seed: int = 0) -> dict:
    """Write the canonical splits of CLEAR at ``source`` under ``out_dir``; return the manifest."""
    out_dir = Path(out_dir)
    reader = _Reader(source, out_dir, seed)
    full = reader.image_records(reader.config("full", required=True))
    reader.authors = sorted({r.name for r in full})
    reader.names_by_image = {r.id: r.name for r in full}
    full += reader.text_records(reader.config("full+tofu", required=True))
    write_split(out_dir, "full", full)
    full_ids = {r.id for r in full}

    name_questions, outside_full, ratios, sizes = {}, {}, [], {"full": len(full)}
    for ratio in FORGET_RATIOS:
        forget_table = reader.config(forget_config(ratio), required=False)
        retain_table = reader.config(retain_config(ratio), required=False)
        if forget_table is None or retain_table is None:
            continue
        forget, retain = reader.image_records(forget_table), reader.image_records(retain_table)
        forget_authors = {r.name for r in forget}
        name_questions[forget_split(ratio)] = reader.ask_names(
            forget_split(ratio), forget, reader.config(f"{forget_config(ratio)}_perturbed", required=False), set())
        perturbed, key = reader.config(f"{retain_config(ratio)}_perturbed", required=False), None
        if perturbed is None:  # retain_perturbed serves every ratio without its own: accounted per split
            perturbed = reader.config("retain_perturbed", required=False)
            key = f"retain_perturbed for {retain_split(ratio)}"
        name_questions[retain_split(ratio)] = reader.ask_names(retain_split(ratio), retain, perturbed,
                                                               forget_authors, key)
        forget += reader.text_records(reader.config(f"{forget_config(ratio)}+tofu", required=True))
        retain += reader.text_records(reader.config(f"{retain_config(ratio)}+tofu", required=True))
        shared = {r.id for r in forget} & {r.id for r in retain}
        if shared:
            raise ValueError(f"{reader.source.describe()}: rows {sorted(shared)[:5]} are in both "
                             f"{forget_config(ratio)} and {retain_config(ratio)} (or their +tofu configs); "
                             f"{reader.source.download_hint()}")
        for name, records in ((forget_split(ratio), forget), (retain_split(ratio), retain)):
            write_split(out_dir, name, records)
            sizes[name] = len(records)
            outside_full[name] = sum(1 for r in records if r.train and r.id not in full_ids)
        ratios.append(ratio)
    if not ratios:
        raise ValueError(f"{reader.source.describe()} has no forget<r>/retain<100-r> pair of configs; "
                         f"{reader.source.download_hint()}")

    real_counts = Counter()
    for split, config, kind in (("real_world", "real_world", "world"), ("real_faces", "real_faces", "face")):
        records = reader.real_records(reader.config(config, required=True), kind, real_counts)
        write_split(out_dir, split, records)
        sizes[split] = len(records)

    return {
        "format": FORMAT.name, "protocol": "clear", "source": reader.source.location,
        "source_kind": reader.source.kind,
        "configs": reader.configs, "splits_read": reader.splits_read, "forget_ratios": ratios, "seed": seed,
        "name_questions": name_questions,
        "real_rows": dict(real_counts),
        "training_records_missing_from_full": outside_full, "splits": sizes,
        "rows": reader.ledger.as_dict(), "images_without_name_question": reader.ledger.uncovered_dict(),
    }


FORMAT = BenchmarkFormat("clear", FORGET_RATIOS, required_configs, read_clear)
