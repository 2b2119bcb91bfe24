"""Scoring a model on benchmark items: multiple choice two ways, open answers by ROUGE-L.

Multiple-choice accuracy is computed both ways the field uses:

* ``likelihood``: each option's text is scored as the answer to the bare question (mean
  log-probability of its answer tokens, the end-of-turn token included); the best option is the
  prediction. Deterministic, and meaningful even for small or damaged models.
* ``generate``: MLLMU-Bench's protocol: the question with its lettered options and the instruction
  to answer with one letter, greedy decoding, then the letter is read off the output (see
  ``parse_choice``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
from rouge_score import rouge_scorer
from tqdm import tqdm

from ..benchmarks.records import ChoiceItem, OpenItem
from ..models.encoding import Example, PromptEncoder
from ..training.losses import answer_logits, answer_token_logprobs

_rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


@dataclass(frozen=True)
class PosedItem:
    """An evaluation item as put to the model: the item and the image it is asked with (if any)."""

    item: ChoiceItem | OpenItem
    image: object | None
    profile: str


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device) for key, value in batch.items()}


@torch.no_grad()
def option_loglikelihoods(model, encoder: PromptEncoder, asked: Sequence[PosedItem], batch_size: int,
                          desc: str = "likelihood") -> list[list[float]]:
    """Mean answer-token log-probability of every option of every item."""
    sequences = [(index, Example(a.item.question, text, a.image))
                 for index, a in enumerate(asked) for text in a.item.options.values()]
    scores: list[list[float]] = [[] for _ in asked]
    device = next(model.parameters()).device
    for chunk in tqdm(list(_chunks(sequences, batch_size)), desc=desc, mininterval=5):
        batch = _to_device(encoder.collate([encoder.encode(example) for _, example in chunk]), device)
        logprobs, mask = answer_token_logprobs(*answer_logits(model, batch))
        means = (logprobs.sum(dim=1) / mask.sum(dim=1)).tolist()
        for (index, _), value in zip(chunk, means):
            scores[index].append(value)
    return scores


@torch.no_grad()
def generate_answers(model, encoder: PromptEncoder, prompts: Sequence[Example], batch_size: int,
                     max_new_tokens: int, desc: str = "generate") -> list[str]:
    """Greedy answers to ``prompts`` (their ``answer`` is ignored)."""
    device = next(model.parameters()).device
    answers = []
    for chunk in tqdm(list(_chunks(prompts, batch_size)), desc=desc, mininterval=5):
        batch = _to_device(encoder.collate([encoder.encode(Example(p.question, None, p.image)) for p in chunk]),
                           device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=encoder.pad_id)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        answers += encoder.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return answers


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
