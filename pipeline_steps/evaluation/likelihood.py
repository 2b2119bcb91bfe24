"""Multiple-choice likelihood in one forward pass over each item's distinct tokens.

An item's options share everything up to the answer: the image and the question. Scoring each
option as its own sequence (what training's ``answer_logits`` does for one example) encodes that
prefix once per option: four passes through the vision tower and the prompt per MLLMU-Bench item.
Here each item is one row, its prompt followed by all its options' answer tokens,

    [pad ... | image + question | answer A | answer B | answer C | answer D]

with an attention mask that lets every answer see the prompt and itself but not the other
answers, and positions that start every answer where the prompt ends. Each answer token then
gets exactly the context it has in its own sequence, and the row costs one pass over its
distinct tokens (the floor ``perf/evaluation_cost.py`` measures against). The images come from
``ImageFeatures`` (once per distinct image, not per item). Only float rounding differs from
the per-option computation (~1e-6 on float32 log-likelihoods; ``tests/test_evaluation_speedups``).

The mask is a 4-D additive one, which transformers hands to ``sdpa`` and ``eager`` attention as
given. Attention kernels that take no custom mask (flash-attention) get the per-option
computation (``reference.per_option_loglikelihoods``) instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..models.encoding import IGNORE_INDEX, Example, PromptEncoder
from ..training.losses import answer_token_logprobs
from .batching import by_length, to_device, with_tokens
from .images import ImageFeatures
from .reference import per_option_loglikelihoods

MASKABLE_ATTENTION = ("sdpa", "eager")


def _layout(lengths: list[list[int]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of the left-padded rows: which answer it belongs to (0: prompt or padding,
    k: the k-th answer) and its offset inside that answer."""
    segment = torch.zeros((len(lengths), width), dtype=torch.long)
    offset = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, answers in enumerate(lengths):
        column = width - sum(answers)
        for k, length in enumerate(answers, start=1):
            segment[row, column:column + length] = k
            offset[row, column:column + length] = torch.arange(length)
            column += length
    return segment, offset


def _answers_mask(segment: torch.Tensor, padding: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, 1, L, L]`` additive mask: causal, no padding, answers blind to each other. Every
    column may see itself, so padding rows stay finite."""
    width = segment.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=segment.device).tril()
    shared = (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None])
    allowed = causal & shared & padding.bool()[:, None, :]
    allowed |= torch.eye(width, dtype=torch.bool, device=segment.device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _positions(model, inputs: dict, segment: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Position ids of the packed rows: the prompt's as the model numbers it, each answer's
    continuing from the prompt's last.

    Models with multimodal rotary positions (Qwen2-VL's ``get_rope_index``) number image tokens
    by their grid and skip padding; their prompt positions come from that function, exactly as
    their forward computes them ([3, B, L]). Every other model numbers columns 0..L-1, padding
    included, as a plain forward call does ([B, L]).
    """
    ids = inputs["input_ids"]
    rope_index = getattr(model.model, "get_rope_index", None)
    if rope_index is not None and inputs.get("image_grid_thw") is not None:
        placement = {key: inputs[key] for key in ("image_grid_thw", "video_grid_thw", "mm_token_type_ids")
                     if key in inputs}
        base, _ = rope_index(ids, attention_mask=inputs["attention_mask"], **placement)
    else:
        base = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    prompt_end = (segment == 0).sum(dim=1) - 1  # the prompt's last column, per row
    index = prompt_end.view(*[1] * (base.ndim - 2), -1, 1).expand(*base.shape[:-1], 1)
    last = base.gather(-1, index)
    return torch.where(segment > 0, last + 1 + offset, base)


def _score_batch(model, inputs: dict, continuations: list[list[torch.Tensor]]) -> list[float]:
    """Mean answer-token log-probability of every continuation, item by item, options in order."""
    device = inputs["input_ids"].device
    lengths = [[c.shape[0] for c in options] for options in continuations]
    segment, offset = (t.to(device) for t in _layout(lengths, inputs["input_ids"].shape[1]))
    position_ids = _positions(model, inputs, segment, offset)
    mask = _answers_mask(segment, inputs["attention_mask"], next(model.parameters()).dtype)
    kept = max(sum(answers) for answers in lengths) + 1
    logits = model(**inputs | {"attention_mask": mask}, position_ids=position_ids, use_cache=False,
                   logits_to_keep=kept).logits
    # Answer k's token j is predicted at the column before it, its first token at the prompt's last.
    rows, columns, targets = [], [], []
    width = max(max(answers) for answers in lengths)
    for row, (answers, options) in enumerate(zip(lengths, continuations)):
        prompt_last = kept - 1 - sum(answers)  # the prompt's last column among the kept ones
        first = prompt_last + 1  # the current answer's first column
        for length, ids in zip(answers, options):
            rows.append(row)
            predictors = [prompt_last] + list(range(first, first + length - 1))
            columns.append(predictors + [prompt_last] * (width - length))
            targets.append(torch.cat([ids, torch.full((width - length,), IGNORE_INDEX)]))
            first += length
    picked = logits[torch.tensor(rows, device=device)[:, None], torch.tensor(columns, device=device)]
    logprobs, scored = answer_token_logprobs(picked, torch.stack(targets).to(device))
    return (logprobs.sum(dim=1) / scored.sum(dim=1)).tolist()


@torch.no_grad()
def option_loglikelihoods(model, encoder: PromptEncoder, asked: Sequence, batch_size: int, desc: str = "likelihood",
                          images: ImageFeatures | None = None) -> list[list[float]]:
    """Mean answer-token log-probability of every option of every item (``PosedItem``s).

    ``batch_size`` bounds the items (rows) per batch. A row holds an item's prompt once and all
    its answers, so a batch is about as large as ``batch_size`` per-option sequences (the prompt
    dominates) while scoring four times as many options. ``images`` may be shared with other
    passes over the same items.
    """
    if model.config.get_text_config()._attn_implementation not in MASKABLE_ATTENTION:
        return per_option_loglikelihoods(model, encoder, asked, batch_size)
    images = images or ImageFeatures(model, batch_size)
    device = next(model.parameters()).device
    prompts = [encoder.encode(Example(a.item.question, None, a.image)) for a in asked]
    tokenized = {text: encoder.continuation_ids(text)  # each distinct option once: they repeat across items
                 for text in dict.fromkeys(text for a in asked for text in a.item.options.values())}
    continuations = [[tokenized[text] for text in a.item.options.values()] for a in asked]
    images.add([(a.image, prompt) for a, prompt in zip(asked, prompts)])
    rows = [with_tokens(prompt, torch.cat(options)) for prompt, options in zip(prompts, continuations)]
    scores: list[list[float]] = [[] for _ in asked]
    for batch in tqdm(list(by_length([row["input_ids"].shape[0] for row in rows], budget=batch_size)), desc=desc,
                      mininterval=5):
        collated = to_device(encoder.collate([rows[i] for i in batch]), device)
        inputs = images.inputs([asked[i].image for i in batch], collated)
        values = iter(_score_batch(model, inputs, [continuations[i] for i in batch]))
        for i in batch:
            scores[i] = [next(values) for _ in continuations[i]]
    return scores
