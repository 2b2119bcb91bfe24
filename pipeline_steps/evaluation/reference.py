"""The straightforward computations the evaluation's fast paths must reproduce.

Not used by the stage: ``tests/test_evaluation_speedups.py`` checks ``option_loglikelihoods`` and
``generate_answers`` against these, and ``perf/evaluation_cost.py`` times them as the "before".
Each option is its own sequence (prompt and answer, the way training scores an example, through
``training.losses.answer_logits``) and each prompt is decoded on its own with its own pixels, so
nothing is shared that could hide a mistake in the sharing.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..models.encoding import Example, PromptEncoder
from ..training.losses import answer_logits, answer_token_logprobs
from .batching import to_device


@torch.no_grad()
def per_option_loglikelihoods(model, encoder: PromptEncoder, asked: Sequence, batch_size: int) -> list[list[float]]:
    """Mean answer-token log-probability of every option, each option a sequence of its own."""
    sequences = [(index, Example(a.item.question, text, a.image))
                 for index, a in enumerate(asked) for text in a.item.options.values()]
    scores: list[list[float]] = [[] for _ in asked]
    device = next(model.parameters()).device
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start:start + batch_size]
        batch = to_device(encoder.collate([encoder.encode(example) for _, example in chunk]), device)
        logprobs, mask = answer_token_logprobs(*answer_logits(model, batch))
        for (index, _), value in zip(chunk, (logprobs.sum(dim=1) / mask.sum(dim=1)).tolist()):
            scores[index].append(value)
    return scores


@torch.no_grad()
def per_item_answers(model, encoder: PromptEncoder, prompts: Sequence[Example], max_new_tokens: int) -> list[str]:
    """Greedy answers decoded one prompt at a time (no padding, the model's own image path)."""
    device = next(model.parameters()).device
    answers = []
    for prompt in prompts:
        batch = to_device(encoder.collate([encoder.encode(Example(prompt.question, None, prompt.image))]), device)
        output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=encoder.pad_id)
        answers += encoder.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return answers
