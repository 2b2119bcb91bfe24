"""Scoring a model on benchmark items: multiple choice two ways, open answers by ROUGE-L.

Multiple-choice accuracy is computed both ways the field uses:

* ``likelihood``: each option's text is scored as the answer to the bare question (mean
  log-probability of its answer tokens, the end-of-turn token included); the best option is the
  prediction. Deterministic, and meaningful even for small or damaged models.
* ``generate``: the benchmark's own protocol (``protocols.py``): the question with its lettered
  options as the benchmark lays them out, greedy decoding, then the letter read off the output by
  the benchmark's strict rule (MLLMU-Bench and CLEAR: the first alphanumeric character). Each
  row also records the lenient reading (``parse_choice``) as a diagnostic; only the strict one
  is ``correct``.

Both run batched by length and see each image through the vision tower once; likelihood scores
all options of an item against one cached pass over its prompt (``likelihood.py``,
``generation.py``, ``images.py``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..benchmarks.records import ChoiceItem, OpenItem, ProfileRecord
from ..models.encoding import Example
from .generation import generate_answers
from .likelihood import option_loglikelihoods
from .protocols import Protocol

__all__ = ["PosedItem", "accuracy", "asked_items", "fills_blank", "generate_answers", "option_loglikelihoods",
           "parse_choice", "read_generated", "rouge_l", "score_multiple_choice"]


@functools.cache
def _rouge():
    """Built on first use, not at import: its constructor logs through absl, which configures the
    root logger when nothing has, and the Snakefile imports this module (through the attack
    registry), so Snakemake's own log lines would then print twice. Imported here too: rouge-score
    pulls in nltk and scipy.stats (0.8 s), which a job that scores no open answer never needs."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@dataclass(frozen=True)
class PosedItem:
    """An evaluation item as put to the model: the item and the image it is asked with (if any)."""

    item: ChoiceItem | OpenItem
    image: object | None
    profile: str


_LEADING_LETTER = re.compile(r"^\W*([A-Z])(?![A-Za-z0-9])")
_TRAILING_LETTER = re.compile(r"\(([A-Z])\)\W*$")


def parse_choice(output: str, options: dict[str, str]) -> tuple[str | None, str]:
    """The letter a generated answer picks under the *lenient* reading, and the rule that read it.

    A diagnostic, no benchmark's protocol (those are ``protocols.py``): it reads an answer in any
    of the forms below, so it credits a damaged model that names several things or buries an
    option's text in a sentence. ``evaluate`` reports it beside the strict reading.

    ``letter``: the output starts with a standalone capital option letter ("B", "B.", "(B) ..."),
    MLLMU-Bench's rule (a lowercase "a" is an article more often than an answer).
    ``trailing_letter``: the output ends with a letter in parentheses ("chef (B)"), how the tiny
    embedded models answer (``benchmarks/synthetic/mllmu_writer.lettered_answer``).
    ``text``: otherwise, exactly one option's text appears in the output (small models often
    answer with the content rather than the letter). ``none``: neither.
    """
    match = _LEADING_LETTER.match(output)
    if match and match.group(1) in options:
        return match.group(1), "letter"
    match = _TRAILING_LETTER.search(output)
    if match and match.group(1) in options:
        return match.group(1), "trailing_letter"
    lowered = output.lower()
    found = [letter for letter, text in options.items() if text.lower() in lowered]
    if len(found) == 1:
        return found[0], "text"
    return None, "none"


def asked_items(records: list[ProfileRecord], modality: str, kind: str, benchmark: Path,
                opened: dict | None = None) -> list[PosedItem]:
    """The ``kind`` items of ``records`` asked in ``modality``. Pass the same ``opened`` dict for
    every kind of a column: each profile image is then one object, so ``ImageFeatures`` puts it
    through the vision tower once for all the items about it."""
    opened = {} if opened is None else opened
    asked = []
    for record in records:
        for item in getattr(record, kind):
            if item.modality != modality:
                continue
            image = None
            if modality == "vqa":
                if record.image not in opened:
                    from PIL import Image  # here: the workflow imports this module while it parses

                    opened[record.image] = Image.open(benchmark / record.image).convert("RGB")
                image = opened[record.image]
            asked.append(PosedItem(item, image, record.id))
    return asked


def score_multiple_choice(model, encoder, asked: list[PosedItem], modes, batch_size: int, max_new_tokens: int,
                          images, column: str, protocol: Protocol | None = None) -> list[dict]:
    """One prediction row per item, with what each scoring mode picked and whether it was right.

    ``generate`` needs the benchmark's ``protocol`` (its prompt and its strict parse); its row
    holds the strict reading (``prediction``, ``correct``, the ``rule``) and the lenient one
    (``lenient``: ``parse_choice``'s letter, its rule and whether it is right)."""
    if "generate" in modes and protocol is None:
        raise ValueError("generate scoring needs the benchmark's protocol (evaluation/protocols.py)")
    rows = [{"column": column, "kind": "multiple_choice", "profile": a.profile, "question": a.item.question,
             "options": a.item.options, "answer": a.item.answer} for a in asked]
    if not asked:
        return rows
    if "likelihood" in modes:
        scores = option_loglikelihoods(model, encoder, asked, batch_size, desc=f"{column} likelihood", images=images)
        for row, a, option_scores in zip(rows, asked, scores):
            letters = list(a.item.options)
            picked = letters[max(range(len(letters)), key=option_scores.__getitem__)]
            row["likelihood"] = {"scores": dict(zip(letters, option_scores)), "prediction": picked,
                                 "correct": picked == a.item.answer}
    if "generate" in modes:
        prompts = [Example(protocol.ask(a.item.question, a.item.options), None, a.image) for a in asked]
        outputs = generate_answers(model, encoder, prompts, batch_size, max_new_tokens, desc=f"{column} generate",
                                   images=images)
        for row, a, output in zip(rows, asked, outputs):
            row["generate"] = read_generated(output, a.item, protocol)
    return rows


def read_generated(output: str, item: ChoiceItem, protocol: Protocol) -> dict:
    """A generated answer read by the protocol's strict rule (what is scored) and by the lenient
    ``parse_choice`` (a diagnostic)."""
    picked = protocol.parse(output, item.options)
    lenient, lenient_rule = parse_choice(output, item.options)
    return {"output": output, "prediction": picked, "rule": protocol.rule, "correct": picked == item.answer,
            "lenient": {"prediction": lenient, "parse": lenient_rule, "correct": lenient == item.answer}}


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure with Porter stemming (rouge-score), as the benchmarks report it."""
    return _rouge().score(reference, prediction)["rougeL"].fmeasure


def fills_blank(prediction: str, answer: str) -> bool:
    """MLLMU-Bench's fill-in-the-blank rule: the gold string appears in the output."""
    return answer.strip().lower() in prediction.lower()


def accuracy(flags: Iterable[bool]) -> dict:
    flags = list(flags)
    return {"accuracy": sum(flags) / len(flags) if flags else None, "correct": sum(flags), "n": len(flags)}
