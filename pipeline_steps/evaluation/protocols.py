"""How each benchmark asks a multiple-choice question and reads a generated answer: the one table.

A ``generate`` score depends on two facts about the benchmark, not about the model: the prompt
(how the options are laid out, whether an instruction follows) and the rule that turns a
generated answer into a letter. Both are the benchmark's protocol, so they are declared here once
per benchmark and chosen by the ``protocol`` a prepared benchmark's manifest records (its reader
sets it, ``benchmarks/mllmu.py``, ``benchmarks/clear.py``):

* ``mllmu_bench``: the question, ``A: text`` lines, MLLMU-Bench's instruction to answer with one
  letter (``models.encoding.multiple_choice_question``); the official parse (``official_letter``).
* ``clear``: the question and ``A. text`` lines, no instruction (the MMUnlearner authors' CLEAR
  evaluation, ``formulate_prompt_with_options`` in ``CLEAR_eval.py`` of github.com/Z1zs/MMUnlearner,
  commit fa77c66); the official parse.
* ``synthetic_mllmu``: MLLMU-Bench's prompt, and the answer the embedded synthetic benchmark
  teaches its tiny models: the right option's text (``benchmarks/synthetic/mllmu_writer.
  lettered_answer`` says why), read by ``exact_option``.

The lenient reading (``scoring.parse_choice``: a leading letter, a trailing "(B)", or an option's
text anywhere) is no protocol's: ``evaluate`` records it beside every strict reading as a
diagnostic of how much leniency would change a score, and never reports it in a table.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable

from ..models.encoding import multiple_choice_question

__all__ = ["PROTOCOLS", "Protocol", "clear_multiple_choice_question", "exact_option", "official_letter",
           "protocol_of"]

_NOT_ALPHANUMERIC = re.compile(r"[^A-Za-z0-9]")
_SURROUNDING = string.whitespace + string.punctuation


def official_letter(output: str, options: dict[str, str]) -> str | None:
    """MLLMU-Bench's and CLEAR's rule: delete every non-alphanumeric character, take the first
    character, upper-case it. The answer is that letter if it is an option's, else None: an empty
    output, or "The answer is B" ("T"). "chef (B)" reads "C" (the first letter of "chef"), and
    is right only if C is the right option. (The MMUnlearner authors' MLLMU_eval.py and
    CLEAR_eval.py, commit fa77c66, read their answers so.)"""
    first = _NOT_ALPHANUMERIC.sub("", output)[:1].upper()
    return first if first in options else None


def exact_option(output: str, options: dict[str, str]) -> str | None:
    """The synthetic benchmark's rule, the answer format it teaches: the output, stripped of
    surrounding whitespace and punctuation, is exactly one option's text (case-insensitive).
    An option's text inside a longer output ("chef or pilot", "a chef") is None."""
    said = output.strip(_SURROUNDING).casefold()
    found = [letter for letter, text in options.items() if text.strip(_SURROUNDING).casefold() == said]
    return found[0] if len(found) == 1 and said else None


def clear_multiple_choice_question(question: str, options: dict[str, str]) -> str:
    """The MMUnlearner authors' CLEAR prompt: the question, then ``A. text`` lines, then a line
    break; no instruction (``formulate_prompt_with_options``, see the module docstring)."""
    return "\n".join([question] + [f"{letter}. {text}" for letter, text in options.items()]) + "\n"


@dataclass(frozen=True)
class Protocol:
    name: str
    ask: Callable[[str, dict[str, str]], str]  # (question, options) -> the prompt's text
    parse: Callable[[str, dict[str, str]], str | None]  # (output, options) -> the letter, or None
    rule: str  # the parse's name, recorded with every reading


PROTOCOLS = {protocol.name: protocol for protocol in (
    Protocol("mllmu_bench", multiple_choice_question, official_letter, "official_letter"),
    Protocol("clear", clear_multiple_choice_question, official_letter, "official_letter"),
    Protocol("synthetic_mllmu", multiple_choice_question, exact_option, "exact_option"),
)}


def protocol_of(manifest: dict) -> Protocol:
    """The protocol a prepared benchmark's manifest names; refused when it names none (a benchmark
    prepared before the protocol was recorded: prepare it again) or an unknown one."""
    name = manifest.get("protocol")
    if name is None:
        raise ValueError(f"the prepared benchmark (format '{manifest.get('format')}') records no multiple-choice "
                         "protocol: it was prepared by an older version; run prepare_benchmark again")
    if name not in PROTOCOLS:
        raise ValueError(f"prepared benchmark of unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]
