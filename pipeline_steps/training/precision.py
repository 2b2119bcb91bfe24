"""Precision and memory settings of the stages that train (fine-tuning and unlearning).

A model stored in bfloat16 is not trained in bfloat16. AdamW moves a weight by about the learning
rate each step (2e-5 in the paper), while neighbouring bfloat16 values around a typical weight of
0.02 lie 1.2e-4 apart: applied to bfloat16 weights, most updates round back to the value they
started from, and unlearning silently does little (``perf/bf16_updates.py`` measures how many
entries stop moving). So the tensors a stage trains are upcast to float32 and stay there while
it runs (they are their own master weights), the forward and backward passes run under bfloat16
autocast (accelerate's mixed precision), frozen tensors stay in the storage dtype to save memory,
and the result is cast back to the storage dtype when it is written. ``float16`` would also need
loss scaling, which the loops do not do, so training refuses it.

Gradient checkpointing (non-reentrant, so frozen inputs need no ``requires_grad`` tricks and
per-step results are unchanged) trades a second forward pass for the activations a 7B model keeps
for backward.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from ..models.loading import resolve_device

TRAINING_DTYPES = ("float32", "bfloat16")


def training_accelerator(device: str, dtype: str) -> Accelerator:
    """The accelerator of a training stage: its device, and bfloat16 autocast for bfloat16 models."""
    if dtype not in TRAINING_DTYPES:
        raise ValueError(f"dtype '{dtype}' cannot be trained here (no loss scaling); use bfloat16 (the same "
                         "memory for weights and activations) or float32")
    return Accelerator(cpu=resolve_device(device).type == "cpu",
                       mixed_precision="bf16" if dtype == "bfloat16" else "no")


def upcast_trainable(model: torch.nn.Module) -> int:
    """Hold every tensor that requires a gradient in float32; return how many were upcast.

    The training loops call it once their trainable set is fixed, before the optimizer is built."""
    upcast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            upcast += 1
    return upcast


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder and vision layer's activations during backward instead of storing them."""
    model.activation_checkpointing_enable({"use_reentrant": False})
