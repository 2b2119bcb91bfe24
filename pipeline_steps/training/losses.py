"""Answer-token losses shared by fine-tuning, Fisher estimation, unlearning and scoring.

Batches are left-padded (``PromptEncoder.collate``'s default), so every example's answer sits at
the end of its row. The model is then asked for logits at the last positions only
(``logits_to_keep``): the output head and the softmax never run over prompt and image tokens,
which saves most of their cost for a 32k vocabulary and keeps ordinary forward calls, so PEFT
and DDP wrappers see nothing unusual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.encoding import IGNORE_INDEX


def answer_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that predict the answer tokens, and those tokens: ``[B, k, V]`` and ``[B, k]``.

    ``batch`` holds ``labels`` (IGNORE_INDEX outside answers); it is not modified.
    """
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    labels = batch["labels"]
    answer_columns = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    if answer_columns.numel() == 0:
        raise ValueError("the batch has no answer tokens to score")
    span = labels.shape[1] - int(answer_columns[0])
    if (labels[:, : labels.shape[1] - span] != IGNORE_INDEX).any():
        raise ValueError("answers must sit at the end of each row: collate training batches left-padded")
    logits = model(**inputs, logits_to_keep=span + 1).logits
    return logits[:, :-1], labels[:, -span:]


def predicting_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` mask of the positions whose outputs predict an answer token: one to the left of
    each answer token, since a causal model's output at position t is read for token t + 1 (the
    positions whose logits ``answer_logits`` returns). Losses on hidden states (RMU) read these,
    so they act where the answer is produced, as every likelihood loss does."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return mask


def answer_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example mean negative log-likelihood of the answer tokens (paper Eq. 13), shape [batch]."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                reduction="none")
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    if (counts == 0).any():
        raise ValueError("an example has no answer tokens to score")
    return per_token.sum(dim=1) / counts


def answer_token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each answer token (0 elsewhere) and the answer mask, both ``[B, k]``."""
    mask = targets != IGNORE_INDEX
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask
