"""Estimated peak GPU memory of each GPU stage, from a model's shape and what the experiment runs.

The environment check compares these with the GPU before any job starts, and
``perf/gpu_stage_memory.py`` sets them against measured peaks; they live with the models, not in
either, so both read the same numbers. Which methods hold a frozen second model or a saliency
mask comes from the method registry, so a new method is counted without touching this file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..unlearning.methods import get_method

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
GIB = 1024 ** 3
# Assumptions of the memory model (see memory_estimates).
TOKENS_PER_EXAMPLE = 1024  # LLaVA-1.5: 576 image tokens + question and answer; Qwen2-VL: depends on the image size
ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER = 34  # 16-bit activations kept for backward, per token x width x layer
LORA_PARAMETERS_PER_RANK = 0.0004  # LoRA on every linear layer: about 0.04 % of the parameters per unit of rank
OVERHEAD = 0.10  # CUDA context, allocator fragmentation, temporary buffers


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden: int  # width of the language model
    layers: int  # depth of the language model


@dataclass(frozen=True)
class RunPlan:
    """What the experiment will run, as far as GPU memory goes."""

    finetune_lora_r: int
    finetune_batch_size: int
    fisher_batch_size: int
    unlearn_batch_size: int
    eval_batch_size: int
    methods: tuple[str, ...]
    tokens: int = TOKENS_PER_EXAMPLE
    gradient_checkpointing: bool = False
    unlearn_gpus: int = 1  # an unlearning job shards its model over this many GPUs
    # The attack stage (pipeline_steps/attacks/): the LoRA rank (0: every parameter) and batch of its
    # largest training attack (relearning), or None when no configured attack trains.
    attack_lora_r: int | None = None
    attack_batch_size: int = 0


def model_shape(config_source: str) -> ModelShape:
    """Parameter count and language-model shape from the model's config alone (meta device), so
    that a 7B model is sized without downloading or allocating its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(config_source)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    text = config.get_text_config()
    return ModelShape(sum(p.numel() for p in model.parameters()), text.hidden_size, text.num_hidden_layers)


def _labels(methods: tuple[str, ...], holds) -> str:
    """The table labels of the planned methods with a trait, to name the memory part it costs."""
    return ", ".join(dict.fromkeys(get_method(m).label for m in methods if holds(get_method(m))))


def unlearning_extras(shape: ModelShape, weights: float, methods: tuple[str, ...]) -> dict[str, float]:
    """What the planned methods hold besides the trained model: a frozen second model, a mask."""
    extras = {}
    frozen = _labels(methods, lambda method: method.frozen_model is not None)
    if frozen:
        extras[f"frozen reference model ({frozen})"] = weights
    masked = _labels(methods, lambda method: method.needs_mask)
    if masked:
        extras[f"saliency mask ({masked})"] = shape.parameters
    return extras


def memory_estimates(shape: ModelShape, dtype: str, plan: RunPlan) -> dict[str, dict]:
    """Estimated peak GPU memory of each GPU stage: stage -> {"bytes", "parts": {what: bytes}}.

    From the parameter count P and the bytes per stored weight b of ``dtype``:

    * ``evaluate``: the weights (P b) and the generation cache of a batch (2 x tokens x width x
      layers x b per sequence);
    * ``finetune`` (vanilla and NPO's reference model): the stored weights, and what trains in
      float32 with its gradient and AdamW's two moments (16 bytes per trained entry,
      ``training/precision.py``): the LoRA adapters (about 0.04 % of P per unit of rank), or
      every weight without LoRA (16 P, which replaces the stored copy);
    * ``compute_fisher``: the weights, their gradients, fp32 sums of every weight (4 P) and the
      activations of a batch;
    * ``unlearn``, per GPU: every weight trained in float32 (16 P) and the largest extra of the
      configured methods, a frozen second model (P b, methods with a ``frozen_model``: KL_Min,
      NPO, IdkDPO, RMU) or a boolean mask of every weight (P bytes, methods that ``needs_mask``:
      MMUnlearner, SalUn), all divided by ``plan.unlearn_gpus`` when sharded (FSDP), plus the
      activations of a batch. Only the largest extra counts because each unlearning job runs
      one method. The copy of the starting weights is in host memory.

    * ``attack``: an attack that trains (relearning) as ``finetune`` with its own LoRA rank and
      batch; otherwise (membership inference, quantization) as ``evaluate`` without generation:
      the weights and one batch's answer logits, which the weights dominate.

    Activations kept for backward: 34 bytes x tokens x width x layers per example in 16 bit
    (Korthikanti et al. 2022 without the attention scores, which SDPA does not store; twice that
    in fp32); with gradient checkpointing, each layer's input (2 bytes x tokens x width) plus one
    layer's activations. Every total carries 10 % for the CUDA context and fragmentation; tokens
    per example are ``plan.tokens`` (1,024 by default). Estimates, to catch a run that cannot fit,
    not to size one to the last gigabyte.
    """
    b = DTYPE_BYTES[dtype]
    weights = shape.parameters * b
    per_layer = ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER * plan.tokens * shape.hidden * b / 2
    kept = per_layer * shape.layers
    if plan.gradient_checkpointing:
        kept = (b * plan.tokens * shape.hidden) * shape.layers + per_layer
    activations = "activations (checkpointed)" if plan.gradient_checkpointing else "activations"
    cache_per_sequence = 2 * plan.tokens * shape.hidden * shape.layers * b
    float32_training = 16 * shape.parameters

    def trained(lora_r: int) -> dict[str, float]:
        if lora_r:
            return {"weights": weights, "LoRA adapters, gradients and AdamW moments (fp32)":
                    16 * LORA_PARAMETERS_PER_RANK * lora_r * shape.parameters}
        return {"fp32 weights, gradients and AdamW moments": float32_training}

    tuned = trained(plan.finetune_lora_r)
    extras = unlearning_extras(shape, weights, plan.methods)
    largest_extra = dict([max(extras.items(), key=lambda item: item[1])]) if extras else {}
    stages = {
        "evaluate": {"weights": weights, "generation cache": plan.eval_batch_size * cache_per_sequence},
        "finetune": {**tuned, activations: plan.finetune_batch_size * kept},
        "compute_fisher": {"weights": weights, "gradients": weights, "fp32 Fisher sums": 4 * shape.parameters,
                           "activations": plan.fisher_batch_size * per_layer * shape.layers},
        "unlearn": {**{part: value / plan.unlearn_gpus for part, value in
                       {"fp32 weights, gradients and AdamW moments": float32_training, **largest_extra}.items()},
                    activations: plan.unlearn_batch_size * kept},
        "attack": ({"weights": weights} if plan.attack_lora_r is None
                   else {**trained(plan.attack_lora_r), activations: plan.attack_batch_size * kept}),
    }
    return {stage: {"bytes": int(sum(parts.values()) * (1 + OVERHEAD)), "parts": {k: int(v) for k, v in parts.items()}}
            for stage, parts in stages.items()}


def gpus_to_fit(shape: ModelShape, dtype: str, plan: RunPlan, total: int) -> int:
    """The fewest GPUs of ``total`` bytes the unlearning stage fits on, sharded (at most 64)."""
    return next((n for n in range(1, 65)
                 if memory_estimates(shape, dtype, replace(plan, unlearn_gpus=n))["unlearn"]["bytes"] <= total), 64)
