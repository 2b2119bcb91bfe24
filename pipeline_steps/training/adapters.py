"""LoRA adapters: how every stage that trains through them attaches them and merges them back.

Fine-tuning (``finetune``), the relearning attack and LoRA unlearning (``unlearning/loop.py``)
train low-rank adapters instead of the weights: a frozen linear layer ``W`` gains ``A`` (r x in,
random) and ``B`` (out x r, zero), and computes ``W x + (alpha / r) B A x``, with dropout on the
adapter's input. Every stage merges them before it writes anything (``W + (alpha / r) B A``), so
what later stages read is a plain checkpoint with the base model's parameter names.

Adapters sit on linear layers only, never on the output head (``all-linear``, as the MMUnlearner
authors' ``find_all_linear_names`` and PEFT's own ``all-linear`` choose): embeddings, norms,
biases and convolutions stay frozen. Their initial ``A`` is drawn from torch's generator, seeded
here, so a run is reproducible. The adapters train in float32 under the model's autocast, as any
trained tensor does (``precision.py``); the frozen weights keep their storage dtype.
"""

from __future__ import annotations

import torch

ADAPTER = "default"  # PEFT's name of the one adapter a stage trains
ALL_LINEAR = "all-linear"


def linear_modules(model: torch.nn.Module, parameters: set[str] | None = None) -> list[str]:
    """Names of the linear layers an adapter may sit on: every ``nn.Linear`` but the output head,
    those whose weight is in ``parameters`` (the parameter names a method trains) if given."""
    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
            and (parameters is None or f"{name}.weight" in parameters)]


def attach_lora(model: torch.nn.Module, r: int, alpha: float, dropout: float, seed: int,
                target_modules: str | list[str] = ALL_LINEAR):
    """``model`` with LoRA adapters of rank ``r`` on ``target_modules`` (module names, or
    ``all-linear``); only the adapters require a gradient. ``model``'s layers are wrapped in place:
    ``merge_lora`` gives it back with the adapters folded into its weights."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)  # LoRA's initial A matrices are random: seed them, or runs differ
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                            target_modules=target_modules, bias="none"))


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """The base model of an adapted ``model``, each adapter merged into its layer's weight
    (``W + (alpha / r) B A``, PEFT's merge), with the base model's parameter names again."""
    return model.merge_and_unload()


def is_adapted(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model an adapted ``model`` wraps (its modules at their usual paths), or ``model``."""
    return model.get_base_model() if is_adapted(model) else model


@torch.no_grad()
def merged_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of the model an adapted ``model`` stands for, by the base model's names:
    each adapted layer's weight plus its adapter's delta, computed without merging (the adapters
    keep training), and every other parameter itself. An unadapted model's own parameters."""
    if not is_adapted(model):
        return dict(model.named_parameters())
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {f"{name}.weight": module.get_delta_weight(ADAPTER) for name, module in base.named_modules()
              if isinstance(module, LoraLayer) and ADAPTER in module.lora_A}
    merged = {}
    for name, parameter in base.named_parameters():
        if ".lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        merged[name] = parameter.float() + deltas[name] if name in deltas else parameter
    return merged


def lora_record(r: int, alpha: float, dropout: float, target_modules: str | list[str],
                adapted_modules: int | None = None) -> dict:
    """What a manifest says about a stage's adapters: rank, alpha, dropout, which layers (a list
    unless ``all-linear``) and, if given, how many layers that is."""
    record = {"r": r, "alpha": alpha, "dropout": dropout, "target_modules": target_modules}
    if adapted_modules is not None:
        record["adapted_modules"] = adapted_modules
    return record
