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
# Qwen2-VL has no fixed image size: its processor resizes an image to multiples of patch x merge
# (28) pixels and keeps every patch (up to 12.8 M pixels). Assumed: images up to 1024 x 1024
# (CLEAR's faces): 37 x 37 merged tokens, 74 x 74 = 5,476 patches through the vision tower.
ASSUMED_IMAGE_SIDE = 1024


@dataclass(frozen=True)
class ModelShape:
    parameters: int
    hidden: int  # width of the language model
    layers: int  # depth of the language model
    # The vision tower (0: not counted): its width, depth and patches per image (with CLIP's class
    # token; at ASSUMED_IMAGE_SIDE for a model without a fixed image size).
    vision_hidden: int = 0
    vision_layers: int = 0
    vision_patches: int = 0
    # Entries of the largest parameter tensor (0: unknown, and every gradient is counted at once).
    largest_tensor: int = 0


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
    vision = getattr(config, "vision_config", None)
    vision_shape = dict(vision_hidden=0, vision_layers=0, vision_patches=0)
    if vision is not None:
        # Qwen2-VL's vision config: embed_dim is the tower's width (hidden_size is the merger's output).
        hidden = getattr(vision, "embed_dim", None) or vision.hidden_size
        layers = getattr(vision, "depth", None) or vision.num_hidden_layers
        vision_shape = dict(vision_hidden=hidden, vision_layers=layers, vision_patches=image_patches(vision))
    return ModelShape(sum(p.numel() for p in model.parameters()), text.hidden_size, text.num_hidden_layers,
                      **vision_shape, largest_tensor=max(p.numel() for p in model.parameters()))


def image_patches(vision_config, side: int = ASSUMED_IMAGE_SIDE) -> int:
    """Patches one image puts through the vision tower: (image_size / patch)^2 + CLIP's class token
    for a fixed-size tower (LLaVA-1.5: 577); for Qwen2-VL, a ``side`` x ``side`` image resized to
    multiples of patch x merge pixels, as its processor does (1024: 5,476)."""
    patch = vision_config.patch_size
    if getattr(vision_config, "image_size", None):
        return (vision_config.image_size // patch) ** 2 + 1
    merge = getattr(vision_config, "spatial_merge_size", 1)
    per_side = max(1, round(side / (patch * merge))) * merge
    return per_side ** 2


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
    * ``compute_fisher``: the weights, fp32 sums of every weight (4 P), the gradients and the
      activations of a batch, the vision tower's included (below). Each parameter's gradient is
      freed as soon as it is accumulated (``saliency/fisher.py``), so with the largest tensor's
      size known (n entries) the gradient part is that tensor's gradient and its fp32 per-example
      outer product, square and sum (n (b + 12)); without it, every gradient at once (P b);
    * ``unlearn``, per GPU: every weight trained in float32 (16 P) and the largest extra of the
      configured methods, a frozen second model (P b, methods with a ``frozen_model``: KL_Min,
      NPO, IdkDPO, RMU) or a boolean mask of every weight (P bytes, methods that ``needs_mask``:
      MMUnlearner, SalUn), all divided by ``plan.unlearn_gpus`` when sharded (FSDP), plus the
      activations of a batch. Only the largest extra counts because each unlearning job runs
      one method. The copy of the starting weights is in host memory.

    * ``attack``: an attack that trains (relearning) as ``finetune`` with its own LoRA rank and
      batch; otherwise (membership inference, quantization) as ``evaluate`` without generation:
      the weights and one batch's answer logits, which the weights dominate.

    Vision activations in ``compute_fisher``: A x patches x vision width x vision layers x b / 2
    per image, A = 34 bytes as for the language model. The Fisher covers the vision tower's
    tensors, so its activations stay for the backward pass: per layer the inputs of both norms,
    of the QKV, output and two MLP projections, Q, K and V, the attention output and the MLP's 4x
    wide hidden state before and after its activation; in eval mode without dropout masks, with
    SDPA storing no patches x patches scores (eager attention would add heads x patches^2 x b per
    layer), and with the per-sample hooks holding references to these inputs, not copies. Patches
    per image: ``ModelShape.vision_patches`` (LLaVA-1.5: 577 = 24^2 + 1; Qwen2-VL-7B at the
    assumed 1024 x 1024: 5,476, i.e. 7.6 GB per image in bf16 against 3.5 GB for the language
    model's 1,024 tokens); the tokens they become in the language model are part of ``plan.tokens``.
    The other training stages do not count them yet (fine-tuning's LoRA and unlearning's 4 shards
    leave more room than these few GB).

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

    vision_per_image = (ACTIVATION_BYTES_PER_TOKEN_WIDTH_LAYER * shape.vision_patches * shape.vision_hidden
                        * shape.vision_layers * b / 2)
    gradient = ({"largest gradient and its fp32 per-example products": shape.largest_tensor * (b + 12)}
                if shape.largest_tensor else {"gradients": weights})
    tuned = trained(plan.finetune_lora_r)
    extras = unlearning_extras(shape, weights, plan.methods)
    largest_extra = dict([max(extras.items(), key=lambda item: item[1])]) if extras else {}
    stages = {
        "evaluate": {"weights": weights, "generation cache": plan.eval_batch_size * cache_per_sequence},
        "finetune": {**tuned, activations: plan.finetune_batch_size * kept},
        "compute_fisher": {"weights": weights, **gradient, "fp32 Fisher sums": 4 * shape.parameters,
                           "activations": plan.fisher_batch_size * per_layer * shape.layers,
                           **({"vision activations": plan.fisher_batch_size * vision_per_image}
                              if vision_per_image else {})},
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
