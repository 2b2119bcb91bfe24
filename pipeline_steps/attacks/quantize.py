"""Quantization: does rounding the weights to 8 or 4 bits undo the unlearning?

Unlearning at a small learning rate moves weights by less than a 4-bit quantization step, so the
quantized unlearned model can land on the same grid points as the quantized vanilla model and
answer as it does (Zhang et al. 2025, "Catastrophic failure of LLM unlearning via quantization").
The attack quantizes the variant's linear layers with **bitsandbytes** and stores the weights the
quantized model computes with, for the ``evaluate`` stage:

* ``bits: 4``: blockwise 4-bit, NF4 by default (``quant_type``), ``blocksize`` entries per absmax
  (``bitsandbytes.functional.quantize_4bit``, what ``Linear4bit`` / transformers'
  ``BitsAndBytesConfig(load_in_4bit=True)`` store);
* ``bits: 8``: row-wise absmax int8 (``int8_vectorwise_quant``, what ``Linear8bitLt`` stores for
  its weights; with the default threshold 0 there is no outlier decomposition).

Every ``nn.Linear`` weight is quantized except the output head (``lm_head``; transformers keeps it
unquantized too); the vision tower's only with ``vision: true``, so the vision tower's share of what
comes back is measured by the difference of the two. Biases, norms and embeddings stay as they are.

Why bitsandbytes: it is what the field quantizes LLaVA and Qwen2-VL with (transformers'
``BitsAndBytesConfig``, the "quantized unlearned model" of the papers above), it is maintained,
its wheel runs on CPU (a CPU backend of the same ops since 0.45) and on CUDA from one package,
and it asks only ``torch>=2.4,<3``, so it installs beside the pinned torch without pulling
another. torchao targets GPU kernels first; optimum-quanto has not been released since early
2025.

Why dequantized weights and not quantized kernels: weight-only quantization computes
``x @ dequantize(W_q)`` in the compute dtype (bitsandbytes dequantizes 4-bit weights before the
matmul), so evaluating the dequantized weights scores the quantized model up to the order of
float additions, on any device, with the unchanged evaluation stage and no quantized
checkpoint format. The stored weights are within the library's rounding error of the originals:
half a quantization step of each block's (4-bit) or row's (8-bit) absmax scale, which
``tests/test_attacks.py`` checks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..unlearning.methods import hyperparameter
from . import Attack, Target, register

if TYPE_CHECKING:
    import torch

# torch and what is built on it are imported where they compute: the workflow reads this module's
# declarations while Snakemake parses a config (attacks/__init__.py), in every job of a cluster run.

log = logging.getLogger(__name__)
BITS = (4, 8)
QUANT_TYPES = ("nf4", "fp4")


@dataclass(frozen=True)
class QuantizeSettings:
    bits: int = hyperparameter(4, "4 (blockwise NF4/FP4) or 8 (row-wise absmax int8)", enum=list(BITS))
    vision: bool = hyperparameter(False, "also quantize the vision tower's linear layers")
    quant_type: str = hyperparameter("nf4", "4-bit data type", enum=list(QUANT_TYPES))
    blocksize: int = hyperparameter(64, "4-bit: entries per absmax scale (bitsandbytes' default)",
                                    enum=[32, 64, 128, 256, 512, 1024, 2048, 4096])


def quantized(weight: torch.Tensor, settings: QuantizeSettings) -> torch.Tensor:
    """``weight`` quantized by bitsandbytes and dequantized back, in its own dtype and device."""
    import bitsandbytes.functional as bnb
    import torch

    if settings.bits == 4:
        # Blocks of consecutive entries of the flattened tensor, as Linear4bit's CUDA kernels read
        # them. Flattened first: bitsandbytes 0.50's CPU backend, handed a matrix whose rows are not
        # a whole number of blocks, dequantizes entries of other blocks (errors up to the block's
        # absmax, measured); on the flat tensor both backends agree with the documented scheme.
        packed, state = bnb.quantize_4bit(weight.contiguous().reshape(-1), blocksize=settings.blocksize,
                                          quant_type=settings.quant_type)
        return bnb.dequantize_4bit(packed, state).to(weight.dtype).reshape(weight.shape)
    if settings.bits == 8:
        codes, scales, _ = bnb.int8_vectorwise_quant(weight.contiguous().to(torch.float16 if weight.is_cuda
                                                                               else weight.dtype))
        return bnb.int8_vectorwise_dequant(codes, scales).to(weight.dtype).reshape(weight.shape)
    raise ValueError(f"bits must be one of {BITS}, not {settings.bits}")


def quantized_layers(model, family, vision: bool) -> list[str]:
    """Names of the ``nn.Linear`` modules the attack quantizes."""
    import torch

    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.startswith("lm_head"):
            continue
        if family.module_of(f"{name}.weight") == "vision" and not vision:
            continue
        names.append(name)
    return names


@register
class Quantize(Attack):
    kind, label = "quantize", "Quantized"
    Settings = QuantizeSettings
    scope = "protocol"
    produces_model = True

    def run(self, target: Target, settings: QuantizeSettings, scratch: Path) -> dict:
        import torch

        layers = quantized_layers(target.model, target.family, settings.vision)
        moved, entries, largest = 0, 0, 0.0
        for name in layers:
            weight = target.model.get_submodule(name).weight
            with torch.no_grad():
                value = quantized(weight.data, settings)
                moved += int((value != weight.data).sum())
                entries += weight.numel()
                largest = max(largest, float((value.float() - weight.data.float()).abs().max()))
                weight.data.copy_(value)
        log.info("%d-bit: %d linear layers, %.1f %% of their entries moved, largest change %.3g",
                 settings.bits, len(layers), 100 * moved / max(entries, 1), largest)
        return {"layers": len(layers), "entries": entries, "moved_entries": moved, "largest_change": largest,
                "vision_quantized": settings.vision}
