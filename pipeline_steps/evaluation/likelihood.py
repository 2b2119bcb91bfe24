"""Multiple-choice likelihood from one pass over each item's prompt.

An item's options share everything up to the answer: the image and the question. Scoring each
option as its own sequence (what training's ``answer_logits`` does for one example) encodes that
prefix once per option: four passes through the vision tower and the prompt per MLLMU-Bench item.
Here the prompts of a batch go through the model once, with the key/value cache kept
(transformers' ``DynamicCache``); the cache rows are then repeated per option
(``Cache.batch_select_indices``) and only the options' continuation tokens are run against it.
The images come from ``ImageFeatures`` (once per distinct image, not per item).

The numbers are the same as scoring each ``Example(question, option, image)`` on its own: the
prompt's last logits predict the first answer token, the continuation's logits the rest, and the
positions continue the prompt's (``_prompt_positions``); only the float rounding of differently
shaped matmuls differs (~1e-7 on float32 log-likelihoods).
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..models.encoding import IGNORE_INDEX, Example, PromptEncoder
from ..training.losses import answer_token_logprobs
from .batching import by_length, pad_right, to_device
from .images import ImageFeatures


def _prompt_positions(model, inputs: dict) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Position ids to give the prompt pass (None: the model's default) and, per row, the position
    of the first answer token.

    Models with multimodal rotary positions (Qwen2-VL's ``get_rope_index``) number image tokens by
    their grid, so the text after the image does not start at its column; their prompt positions
    are computed here exactly as the model's forward computes them, and the answer continues from
    the last prompt position. Every other model numbers columns 0..P-1 (left padding included, as
    in a plain forward call), so the answer starts at P.
    """
    ids = inputs["input_ids"]
    rope_index = getattr(model.model, "get_rope_index", None)
    if rope_index is None or inputs.get("image_grid_thw") is None:
        return None, torch.full((ids.shape[0],), ids.shape[1], device=ids.device)
    placement = {key: inputs[key] for key in ("image_grid_thw", "video_grid_thw", "mm_token_type_ids") if key in inputs}
    positions, _ = rope_index(ids, attention_mask=inputs["attention_mask"], **placement)
    return positions, positions[0, :, -1] + 1  # the prompt ends in text: its three rotary axes agree


def _score_batch(model, prompt_inputs: dict, continuations: list[list[torch.Tensor]], pad_id: int) -> list[float]:
    """Mean answer-token log-probability of every continuation, item by item, options in order."""
    device = prompt_inputs["input_ids"].device
    positions, start = _prompt_positions(model, prompt_inputs)
    extra = {} if positions is None else {"position_ids": positions}
    prompt = model(**prompt_inputs, **extra, use_cache=True, logits_to_keep=1)
    owner = torch.tensor([row for row, options in enumerate(continuations) for _ in options], device=device)
    ids, mask = (t.to(device) for t in pad_right([ids for options in continuations for ids in options], pad_id))
    cache = prompt.cache
    cache.batch_select_indices(owner)
    attention = torch.cat([prompt_inputs["attention_mask"][owner], mask], dim=1)
    position_ids = start[owner, None] + torch.arange(ids.shape[1], device=device)
    answer = model(input_ids=ids, attention_mask=attention, position_ids=position_ids, cache=cache, use_cache=True)
    logits = torch.cat([prompt.logits[owner], answer.logits[:, :-1]], dim=1)
    logprobs, kept = answer_token_logprobs(logits, ids.masked_fill(mask == 0, IGNORE_INDEX))
    return (logprobs.sum(dim=1) / kept.sum(dim=1)).tolist()


@torch.no_grad()
def option_loglikelihoods(model, encoder: PromptEncoder, asked: Sequence, batch_size: int, desc: str = "likelihood",
                          images: ImageFeatures | None = None) -> list[list[float]]:
    """Mean answer-token log-probability of every option of every item (``PosedItem``s).

    ``batch_size`` bounds the option rows per batch (as it bounded the sequences per batch when
    each option was its own sequence), so peak memory is that of the per-option computation.
    ``images`` may be shared with other passes over the same items.
    """
    images = images or ImageFeatures(model, batch_size)
    device = next(model.parameters()).device
    prompts = [encoder.encode(Example(a.item.question, None, a.image)) for a in asked]
    cache: dict[str, torch.Tensor] = {}  # options repeat across items
    continuations = [[cache.setdefault(text, encoder.continuation_ids(text)) for text in a.item.options.values()]
                     for a in asked]
    images.add([(a.image, prompt) for a, prompt in zip(asked, prompts)])
    lengths = [(p["input_ids"].shape[0], max(c.shape[0] for c in options)) for p, options in zip(prompts, continuations)]
    batches = list(by_length(lengths, [len(options) for options in continuations], batch_size))
    scores: list[list[float]] = [[] for _ in asked]
    for batch in tqdm(batches, desc=desc, mininterval=5):
        collated = to_device(encoder.collate([prompts[i] for i in batch]), device)
        inputs = images.inputs([asked[i].image for i in batch], collated)
        values = iter(_score_batch(model, inputs, [continuations[i] for i in batch], encoder.pad_id))
        for i in batch:
            scores[i] = [next(values) for _ in continuations[i]]
    return scores
