"""The refusal answers that refusal-target unlearning (IdkDPO) trains the forget questions toward.

One home for them: the method picks one per forget example, and the tests check that each
tokenizes with both tiny families' tokenizers (trained on the benchmark's text; LLaVA's falls
back to byte tokens for characters the benchmark never uses and Qwen2-VL's is byte-level, so no
refusal ever becomes an unknown token).

Like TOFU's ``idontknow`` list, the strings are interchangeable ways of declining, here about a
person in an image (every MLLMU-Bench and CLEAR question asks about one). The choice is a hash of
the question and its true answer, so it is the same in every run, every process and every
resumed job, and spreads a profile's questions over the list rather than giving one template one
refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib

from ..models.encoding import Example

REFUSALS = (
    "I don't know.",
    "I'm not sure.",
    "I don't know who this person is.",
    "I have no information about this person.",
    "Sorry, I can't answer that.",
    "I can't tell who this is.",
)


def refusal(example: Example) -> str:
    """The refusal chosen for ``example``: deterministic in its question and answer."""
    digest = hashlib.sha256(f"{example.question}\x00{example.answer}".encode()).digest()
    return REFUSALS[int.from_bytes(digest[:8], "big") % len(REFUSALS)]


def with_refusal(example: Example) -> Example:
    """``example`` (same question, same image) answered with its refusal."""
    return dataclasses.replace(example, answer=refusal(example))
