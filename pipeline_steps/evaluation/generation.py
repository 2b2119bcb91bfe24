"""Greedy answers, batched by prompt length, with each image through the vision tower once.

``generate`` pads every prompt of a batch to the longest and keeps decoding until the last row
stops, so batching prompts of similar length (``batching.by_length``) cuts the padded prefill;
prompts about the same image (the multiple-choice, generation and fill-in-the-blank items of one
profile) share its vision features through ``ImageFeatures``. Greedy decoding with left padding
gives each prompt the tokens it gets on its own (``tests/test_evaluation_speedups.py`` checks it
against batch size 1), so the order of the batches does not change the answers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..models.encoding import Example, PromptEncoder
from .batching import by_length, to_device
from .images import ImageFeatures


@torch.no_grad()
def generate_answers(model, encoder: PromptEncoder, prompts: Sequence[Example], batch_size: int,
                     max_new_tokens: int, desc: str = "generate", images: ImageFeatures | None = None) -> list[str]:
    """Greedy answers to ``prompts`` (their ``answer`` is ignored), in the order given."""
    images = images or ImageFeatures(model, batch_size)
    device = next(model.parameters()).device
    encoded = [encoder.encode(Example(p.question, None, p.image)) for p in prompts]
    images.add([(p.image, e) for p, e in zip(prompts, encoded)])
    answers: list[str] = [""] * len(prompts)
    for batch in tqdm(list(by_length([e["input_ids"].shape[0] for e in encoded], budget=batch_size)), desc=desc,
                      mininterval=5):
        collated = to_device(encoder.collate([encoded[i] for i in batch]), device)
        inputs = images.inputs([prompts[i].image for i in batch], collated)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=encoder.pad_id)
        new_tokens = output[:, collated["input_ids"].shape[1]:]
        for i, text in zip(batch, encoder.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
            answers[i] = text
    return answers
