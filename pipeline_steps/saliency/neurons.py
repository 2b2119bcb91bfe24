"""MLP neurons of the language model: their activation statistics on a split, MANU's importance
scores from them, and the pruning of the selected neurons.

MANU's rule follows its released code (franciscoliu/MANU, ``prune/prune_utility.py``,
``collect_feedforward_activations`` and ``compute_combined_scores_incremental``) where the code
defines one: the four importance functions mean |a|, the fraction of tokens with |a| > 0.1, the
standard deviation (``torch.std``, n - 1) and sqrt(mean a^2); each one's forget/retain ratio with
eps 1e-5, less 1, weighted 2, 0, 2, 2 (frequency has weight 0 there) and summed; the top
fraction of the candidate neurons per modality. Where the code departs from any per-neuron
rule we keep selective pruning's reading (Pochinkov & Schoots 2024, whose importance functions
MANU adopts; their ``taker`` library): its statistics are taken over the batch at each token position (padding
zeros included) and then averaged over positions, here over every attended token of the split;
its retain statistics are over a random draw of as many batches as the forget set has, here over
the whole retain split; its hooks add every layer's activations under the same three layer
names, so a score pools all layers and only the last three layers of each tower are pruned, here
each layer's neurons are scored and ranked across layers; and its language "neurons" are the
outputs of ``gate_proj``, ``up_proj`` and ``down_proj``, each masked by its own score, here a
neuron is one hidden unit of the MLP, as selective pruning's (below).

A neuron is one unit of a decoder layer's MLP hidden layer: one entry of ``down_proj``'s input,
``act(gate_proj(h)) * up_proj(h)`` in both families (Llama and Qwen2 MLPs). Its activation is
read at every attended token of an example (image, prompt and answer tokens; padding excluded):
MANU scores neurons on the forget data's inputs as the model reads them, and an image's tokens
are where a portrait's identity enters the language model.

Statistics are sums (float64, so variances from them stay exact at a 7B's token counts), written
per split by ``compute_neuron_importance`` like the Fisher diagonals: a sweep over pruned
fractions reads them again without another forward pass. A file names its statistics and the
frequency's threshold in its metadata; one without the statistics this module reads (written
before the threshold became MANU's) is refused, not misread.
"""

from __future__ import annotations

from typing import Sequence

import torch
from tqdm import tqdm

from ..models.encoding import Example, PromptEncoder
from ..models.families import Family

STATISTICS = ("abs_sum", "active_count", "sum", "square_sum")  # per neuron, over tokens
# A token counts toward a neuron's frequency when |a| exceeds this: MANU's released cut
# (``(clamped_activations.abs() > 1e-1)``); selective pruning counts a > 0. An absolute cut counts
# few tokens on a model whose activations are small (the tiny test models'); the score gives the
# frequency no weight, so it is recorded, not used.
ACTIVE_THRESHOLD = 0.1
# MANU's importance functions (Liu et al. 2025, Sec. 3.1, after Pochinkov & Schoots 2024): per
# neuron n on a data set D, over its activations a_n(t) at D's tokens t, and the weight of each
# one's ratio in the score, as its released code combines them.
IMPORTANCE_FUNCTIONS = ("absolute", "frequency", "std", "rms")
IMPORTANCE_WEIGHTS = (2.0, 0.0, 2.0, 2.0)
EPSILON = 1e-5  # in the ratio's denominator (MANU's code): a neuron silent on the retain data


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
            for statistic, value in (("abs_sum", a.abs()), ("active_count", (a.abs() > ACTIVE_THRESHOLD).double()),
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
    of ``IMPORTANCE_FUNCTIONS``: mean |a|, fraction of tokens with |a| > ``ACTIVE_THRESHOLD``,
    standard deviation of a (with n - 1, as ``torch.std``), and sqrt(mean a^2)."""
    missing = [s for s in STATISTICS if statistic_name(family, 0, s) not in statistics]
    if missing:
        raise ValueError(f"the neuron statistics lack {', '.join(missing)}: they were written by an older "
                         f"compute_neuron_importance; run it again")

    def stacked(statistic):
        return torch.stack([statistics[statistic_name(family, i, statistic)] for i in range(layers)]) / tokens

    mean, mean_square = stacked("sum"), stacked("square_sum")
    variance = (mean_square - mean.square()).clamp_min(0) * (tokens / (tokens - 1))
    return torch.stack([stacked("abs_sum"), stacked("active_count"), variance.sqrt(), mean_square.sqrt()])


def manu_scores(forget: torch.Tensor, retain: torch.Tensor) -> torch.Tensor:
    """Each neuron's score on one modality's data, ``[layers, intermediate]``, from the importance
    (``importance``) of its forget and retain data: sum_k w_k (I_k(D_f, n) / (I_k(D_r, n) + eps) - 1),
    how much more the neuron serves the forget people than the others, as MANU's code combines
    the functions (``IMPORTANCE_WEIGHTS``; the ratios are unitless, so they are summed as they are)."""
    weights = torch.tensor(IMPORTANCE_WEIGHTS, dtype=forget.dtype).view(-1, 1, 1)
    return (weights * (forget / (retain + EPSILON) - 1)).sum(0)


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
