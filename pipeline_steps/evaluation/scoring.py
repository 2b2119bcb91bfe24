"""Scoring a model on benchmark items: multiple choice two ways, open answers by ROUGE-L.

Multiple-choice accuracy is computed both ways the field uses:

* ``likelihood``: each option's text is scored as the answer to the bare question (mean
  log-probability of its answer tokens, the end-of-turn token included); the best option is the
  prediction. Deterministic, and meaningful even for small or damaged models.
* ``generate``: MLLMU-Bench's protocol: the question with its lettered options and the instruction
  to answer with one letter, greedy decoding, then the letter is read off the output (see
  ``parse_choice``).

Both run batched by length and see each image through the vision tower once; likelihood scores
all options of an item against one cached pass over its prompt (``likelihood.py``,
``generation.py``, ``images.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from rouge_score import rouge_scorer

from ..benchmarks.records import ChoiceItem, OpenItem
from .generation import generate_answers
from .likelihood import option_loglikelihoods

__all__ = ["PosedItem", "accuracy", "fills_blank", "generate_answers", "option_loglikelihoods",
           "parse_choice", "rouge_l"]
_rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@dataclass(frozen=True)
class PosedItem:
    """An evaluation item as put to the model: the item and the image it is asked with (if any)."""

    item: ChoiceItem | OpenItem
    image: object | None
    profile: str


_LEADING_LETTER = re.compile(r"^\W*([A-Z])(?![A-Za-z0-9])")


def parse_choice(output: str, options: dict[str, str]) -> tuple[str | None, str]:
    """The letter a generated answer picks, and the rule that read it.

    ``letter``: the output starts with a standalone capital option letter ("B", "B.", "(B) ..."),
    MLLMU-Bench's rule (a lowercase "a" is an article more often than an answer).
    ``text``: otherwise, exactly one option's text appears in the output (small models often
    answer with the content rather than the letter). ``none``: neither.
    """
    match = _LEADING_LETTER.match(output)
    if match and match.group(1) in options:
        return match.group(1), "letter"
    lowered = output.lower()
    found = [letter for letter, text in options.items() if text.lower() in lowered]
    if len(found) == 1:
        return found[0], "text"
    return None, "none"


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure with Porter stemming (rouge-score), as the benchmarks report it."""
    return _rouge.score(reference, prediction)["rougeL"].fmeasure


def fills_blank(prediction: str, answer: str) -> bool:
    """MLLMU-Bench's fill-in-the-blank rule: the gold string appears in the output."""
    return answer.strip().lower() in prediction.lower()


def accuracy(flags: Iterable[bool]) -> dict:
    flags = list(flags)
    return {"accuracy": sum(flags) / len(flags) if flags else None, "correct": sum(flags), "n": len(flags)}
