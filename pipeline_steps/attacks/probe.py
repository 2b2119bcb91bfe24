"""Probing: the Forget VQA questions asked in a way unlearning never saw.

Unlearning trains on the forget people's training pairs; a face's facts that are only suppressed
for the trained prompts come back when the question arrives with a cue the model can route
through (Lynch et al. 2024, "Eight methods to evaluate robust unlearning in LLMs"). The probe
scores every Forget VQA multiple-choice item (its portrait, its evaluation wording, its options)
by option likelihood, as the evaluate stage does (``evaluation/scoring.py``), with the question
rewritten by ``style``:

* ``name``: the person's name given alongside the image ("The person in the image is Anika
  Graves. <question>"): the text route to the facts, which unlearning of the images leaves alone;
* ``dialogue``: the identity exchange unlearning removed, replayed before the question in the same
  turn ("Who is the person in the image? Anika Graves. <question>"), the multi-turn "who is this?"
  probe written as one user turn (the prompt encoder renders one turn per example);
* ``context``: few-shot context about the person, the text-only training pairs of their *other*
  facts as question-and-answer sentences before the question (the asked fact's own pair is left
  out, so the context does not contain the answer).

The evaluation wordings are already paraphrases never trained on (the synthetic benchmark's
instrument), so the unattacked Forget VQA column is the paraphrase probe. The oracle, probed the
same way, says how much of a probe's accuracy any model gets from the cue alone (the name, the
context): a method has forgotten where it stays at the oracle's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from ..benchmarks.records import forget_split, read_split
from ..storage import write_jsonl
from ..unlearning.methods import hyperparameter
from . import Attack, Target, register

log = logging.getLogger(__name__)
STYLES = ("name", "dialogue", "context")
COLUMN = "forget_vqa"


@dataclass(frozen=True)
class ProbeSettings:
    style: str = hyperparameter("name", "how the question is asked: with the name, after the identity exchange, "
                                "or after the person's other text facts", enum=list(STYLES))
    context_facts: int = hyperparameter(3, "context: how many of the person's other text facts precede the question",
                                        minimum=1)


def probed_question(record, item, settings: ProbeSettings) -> str:
    """The question of ``item`` (a multiple-choice item about ``record``'s person) rewritten by the
    probe's style."""
    question = item.question
    if settings.style == "name":
        return f"The person in the image is {record.name}. {question}"
    if settings.style == "dialogue":
        identity = next((p for p in record.train if p.modality == "vqa" and record.name in p.answer), None)
        asked = identity.question if identity else "Who is the person in the image?"
        return f"{asked} {record.name}. {question}"
    if settings.style == "context":
        # The person's open text facts, leaving out any whose answer is one of this question's options.
        facts = [p for p in record.train if p.modality == "text" and "\n" not in p.question
                 and p.answer not in item.options.values()]
        return " ".join([f"{p.question} {p.answer}." for p in facts[:settings.context_facts]] + [question])
    raise ValueError(f"probe style '{settings.style}' is not one of {STYLES}")


@register
class Probe(Attack):
    kind, label = "probe", "Probe"
    Settings = ProbeSettings
    scope = "protocol"

    def run(self, target: Target, settings: ProbeSettings, scratch: Path) -> dict:
        from PIL import Image

        from ..evaluation.images import ImageFeatures
        from ..evaluation.scoring import PosedItem, accuracy, score_multiple_choice
        from ..models.encoding import PromptEncoder

        asked, opened = [], {}
        for record in read_split(target.benchmark, forget_split(target.forget_ratio)):
            items = [i for i in record.multiple_choice if i.modality == "vqa"]
            if not items:
                continue
            if record.image not in opened:
                opened[record.image] = Image.open(target.benchmark / record.image).convert("RGB")
            for item in items:
                question = probed_question(record, item, settings)
                asked.append(PosedItem(replace(item, question=question), opened[record.image], record.id))
        rows = score_multiple_choice(target.model, PromptEncoder(target.processor), asked, ["likelihood"],
                                     target.batch_size, 1, ImageFeatures(target.model, target.batch_size), COLUMN)
        write_jsonl(scratch / "predictions.jsonl", rows)
        result = accuracy(row["likelihood"]["correct"] for row in rows)
        log.info("probe %s: Forget VQA %.3f over %d items", settings.style, result["accuracy"], result["n"])
        return {"column": COLUMN, "style": settings.style, **result,
                "items": [[row["profile"], float(row["likelihood"]["correct"])] for row in rows]}
