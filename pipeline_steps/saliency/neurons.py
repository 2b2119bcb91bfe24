"""MLP neurons of the language model: their activation statistics on a split, MANU's importance
scores from them, and the pruning of the selected neurons.

A neuron is one unit of a decoder layer's MLP hidden layer: one entry of ``down_proj``'s input,
``act(gate_proj(h)) * up_proj(h)`` in both families (Llama and Qwen2 MLPs). Its activation is
read at every attended token of an example (image, prompt and answer tokens; padding excluded):
MANU scores neurons on the forget data's inputs as the model reads them, and an image's tokens
are where a portrait's identity enters the language model.

Statistics are sums (float64, so variances from them stay exact at a 7B's token counts), written
per split by ``compute_neuron_importance`` like the Fisher diagonals: a sweep over pruned
fractions reads them again without another forward pass.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..models.encoding import Example, PromptEncoder
from ..models.families import Family

STATISTICS = ("abs_sum", "positive_count", "sum", "square_sum")  # per neuron, over tokens
# MANU's importance functions (Liu et al. 2025, Sec. 3.1, after Pochinkov & Schoots 2024): per
# neuron n on a data set D, over its activations a_n(t) at D's tokens t.
IMPORTANCE_FUNCTIONS = ("absolute", "frequency", "variance", "rms")
EPSILON = 1e-8  # in the score's denominator: a neuron silent on the retain data


def mlp_prefix(family: Family, layer: int) -> str:
    return f"{family.decoder_layers}.{layer}.mlp"


def statistic_name(family: Family, layer: int, statistic: str) -> str:
    """The tensor name of one layer's statistic in an importance file."""
    return f"{mlp_prefix(family, layer)}.down_proj.input.{statistic}"


def layer_count(model, family: Family) -> int:
    return len(model.get_submodule(family.decoder_layers))


def activation_statistics(model, family: Family, encoder: PromptEncoder, examples: Sequence[Example], *,
                          batch_size: int, description: str = "neurons") -> tuple[dict[str, torch.Tensor], int]:
    """Every MLP neuron's activation sums over the attended tokens of ``examples``:
    ``({statistic_name: float64 [intermediate]}, token count)``."""
    device = next(model.parameters()).device
    layers = layer_count(model, family)
    sums = {}
    mask: list[torch.Tensor] = []  # the current batch's attended tokens, [batch, seq] bool

    def hook(layer):
        def capture(module, inputs):
            a = inputs[0].detach().double()[mask[0]]  # [tokens, intermediate]
            for statistic, value in (("abs_sum", a.abs()), ("positive_count", (a > 0).double()),
                                     ("sum", a), ("square_sum", a.square())):
                name = statistic_name(family, layer, statistic)
                total = value.sum(0)
                sums[name] = sums[name] + total if name in sums else total
        return capture

    handles = [model.get_submodule(f"{mlp_prefix(family, i)}.down_proj").register_forward_pre_hook(hook(i))
               for i in range(layers)]
    tokens = 0
    model.eval()
    try:
        with torch.no_grad():
            for start in tqdm(range(0, len(examples), batch_size), desc=description, mininterval=5):
                chunk = examples[start:start + batch_size]
                batch = {k: v.to(device) for k, v in encoder.collate([encoder.encode(e) for e in chunk]).items()}
                mask[:] = [batch["attention_mask"].bool()]
                tokens += int(mask[0].sum())
                model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name].cpu() for name in sorted(sums)}, tokens


def importance(statistics: dict[str, torch.Tensor], tokens: int, family: Family, layers: int) -> torch.Tensor:
    """MANU's four importance functions of every neuron, ``[4, layers, intermediate]`` in the order
    of ``IMPORTANCE_FUNCTIONS``: mean |a|, fraction of tokens with a > 0, variance of a, and
    sqrt(mean a^2)."""
    def stacked(statistic):
        return torch.stack([statistics[statistic_name(family, i, statistic)] for i in range(layers)]) / tokens

    mean, mean_square = stacked("sum"), stacked("square_sum")
    return torch.stack([stacked("abs_sum"), stacked("positive_count"), (mean_square - mean.square()).clamp_min(0),
                        mean_square.sqrt()])


def manu_scores(forget: Sequence[torch.Tensor], retain: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each neuron's score, ``[layers, intermediate]``, from the importance (``importance``) of the
    forget and retain data of each modality, paired in order (multimodal, text-only).

    Per modality m and importance function k, MANU's ratio S_k,m(n) = I_k(D_f,m, n) /
    (I_k(D_r,m, n) + eps) says how much more a neuron serves the forget people than the others;
    the ratios are put on one scale (each divided by its mean over the model's neurons, so that no
    function or modality counts more for having larger numbers) and added up, so a neuron that
    carries the forget people's knowledge under either kind of input ranks high: MANU's point is
    that pruning for image inputs alone leaves the text route in place.
    """
    total = None
    for f, r in zip(forget, retain, strict=True):
        ratio = f / (r + EPSILON)  # [4, layers, intermediate]
        scaled = ratio / ratio.mean(dim=(1, 2), keepdim=True).clamp_min(EPSILON)
        total = scaled.sum(0) if total is None else total + scaled.sum(0)
    return total


def select_neurons(scores: torch.Tensor, fraction: float) -> dict[int, list[int]]:
    """The ``fraction`` of the model's MLP neurons with the highest scores, ranked across all layers
    at once (at least one neuron), ties broken by position: ``{layer: sorted neuron indices}``."""
    flat = scores.reshape(-1)
    count = max(1, round(fraction * flat.numel()))
    order = torch.sort(-flat, stable=True).indices[:count]  # stable: equal scores keep their order
    width = scores.shape[1]
    chosen: dict[int, list[int]] = {}
    for index in sorted(order.tolist()):
        chosen.setdefault(index // width, []).append(index % width)
    return chosen


def prune_neurons(model, family: Family, neurons: dict[int, list[int]]) -> None:
    """Remove the neurons from the model in place: their rows of ``gate_proj`` and ``up_proj``
    (and biases, where a checkpoint has them) and their column of ``down_proj`` set to zero, so the
    neuron's activation is zero and nothing it computed reaches the residual stream."""
    with torch.no_grad():
        for layer, indices in neurons.items():
            mlp = model.get_submodule(mlp_prefix(family, layer))
            index = torch.tensor(indices, dtype=torch.long, device=mlp.down_proj.weight.device)
            for projection in (mlp.gate_proj, mlp.up_proj):
                projection.weight[index] = 0
                if projection.bias is not None:
                    projection.bias[index] = 0
            mlp.down_proj.weight[:, index] = 0
