"""MANU (modality-aware neuron pruning): its activation statistics against the MLP recomputed by
hand, its scores and selection against a hand computation on written-out activations, its
pruning, the stages that produce and apply it, and its settings."""

import json
import math
import statistics as stats

import pytest
import torch

from pipeline_steps.models.encoding import Example, PromptEncoder
from pipeline_steps.models.families import FAMILIES
from pipeline_steps.saliency.neurons import (activation_statistics, importance, manu_scores, mlp_prefix,
                                             prune_neurons, select_neurons, statistic_name)
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.study.config_check import ConfigError, check_unlearn_block
from pipeline_steps.unlearning.settings import sweep_points

from helpers import call_stage, forget_examples, single_inputs


def hand_activations(model, family, encoder, example, layer):
    """Layer ``layer``'s MLP hidden activations act(gate(h)) * up(h) at every token of one unpadded
    example, recomputed from the MLP's input h and its own weights: [tokens, intermediate]."""
    mlp = model.get_submodule(mlp_prefix(family, layer))
    captured = []
    handle = mlp.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0][0].detach()))
    try:
        with torch.no_grad():
            model(**single_inputs(encoder.encode(example)))
    finally:
        handle.remove()
    h = captured[0].double()
    gate = h @ mlp.gate_proj.weight.double().T
    up = h @ mlp.up_proj.weight.double().T
    return torch.nn.functional.silu(gate) * up


def test_activation_statistics_against_the_mlp_by_hand(loaded):
    """Sums over the attended tokens of padded batches equal those of each example's own
    activations, recomputed from the MLP's weights (padding contributes nothing); the importance
    functions from them are MANU's: the standard deviation with n - 1 (``torch.std``) and the
    fraction of tokens with |a| > 0.1, of the activations by hand."""
    name, model = loaded
    family, encoder = FAMILIES[name], PromptEncoder(model.processor)
    examples = forget_examples()[:3] + [Example("Who is Ada Okafor?", "a pilot from Lima", None)]
    for group in (examples[:3], examples[3:]):  # with images, and text-only
        sums, tokens = activation_statistics(model.model, family, encoder, group, batch_size=2)
        layers = len(model.model.get_submodule(family.decoder_layers))
        by_hand = {i: torch.cat([hand_activations(model.model, family, encoder, e, i) for e in group])
                   for i in range(layers)}
        assert tokens == sum(len(encoder.encode(e)["input_ids"]) for e in group)
        for i, a in by_hand.items():
            # The count at the 0.1 cut is exact except for activations within float noise of it,
            # which a padded batch and an example alone may put on either side.
            active = sums[statistic_name(family, i, "active_count")]
            assert ((a.abs() > 0.1 + 1e-5).double().sum(0) <= active).all()
            assert (active <= (a.abs() > 0.1 - 1e-5).double().sum(0)).all()
            for statistic, expected in (("abs_sum", a.abs().sum(0)),
                                        ("sum", a.sum(0)), ("square_sum", a.square().sum(0))):
                torch.testing.assert_close(sums[statistic_name(family, i, statistic)], expected,
                                           rtol=1e-5, atol=1e-6)
        functions = importance(sums, tokens, family, layers)  # [4, layers, intermediate]
        for i, a in by_hand.items():
            torch.testing.assert_close(functions[1, i], (a.abs() > 0.1).double().mean(0), rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(functions[2, i], a.std(0), rtol=1e-4, atol=1e-6)


def sums_of(family, activations):
    """Statistics files' sums from written-out activations: {layer: [[a at token t] per neuron]}."""
    sums = {}
    for layer, neurons in activations.items():
        columns = torch.tensor(neurons, dtype=torch.float64).T  # [tokens, neurons]
        sums |= {statistic_name(family, layer, "abs_sum"): columns.abs().sum(0),
                 statistic_name(family, layer, "active_count"): (columns.abs() > 0.1).double().sum(0),
                 statistic_name(family, layer, "sum"): columns.sum(0),
                 statistic_name(family, layer, "square_sum"): columns.square().sum(0)}
    return sums, len(neurons[0])


def hand_importance(values):
    """The four importance functions of one neuron, from its activations, with the statistics module:
    mean |a|, the share of |a| > 0.1, the sample standard deviation, sqrt(mean a^2)."""
    return [stats.fmean(abs(v) for v in values), stats.fmean(abs(v) > 0.1 for v in values), stats.stdev(values),
            math.sqrt(stats.fmean(v * v for v in values))]


def test_manu_scores_and_selection_by_hand():
    family = FAMILIES["llava"]
    # Two layers of three neurons, four tokens per data set. Neuron (0, 1) fires on the forget
    # people only, under both kinds of input; (1, 2) on the forget people's images only.
    forget_vqa = {0: [[0.1, 0.2, 0.1, 0.2], [2.0, 1.5, 2.5, 3.0], [0.5, -0.5, 0.5, -0.5]],
                  1: [[0.3, 0.3, 0.2, 0.2], [0.0, 0.1, 0.0, 0.1], [4.0, 3.0, 5.0, 4.0]]}
    forget_text = {0: [[0.1, 0.2, 0.2, 0.1], [1.0, 2.0, 1.5, 1.5], [0.5, -0.5, 0.5, -0.5]],
                   1: [[0.3, 0.2, 0.3, 0.2], [0.1, 0.0, 0.1, 0.0], [0.1, 0.1, 0.1, 0.1]]}
    retain = {0: [[0.1, 0.2, 0.1, 0.2], [0.0, 0.1, -0.1, 0.0], [0.5, -0.5, 0.5, -0.5]],
              1: [[0.3, 0.3, 0.2, 0.2], [0.1, 0.0, 0.1, 0.0], [0.1, 0.2, 0.1, 0.1]]}
    data = {"forget_vqa": forget_vqa, "forget_text": forget_text, "retain_vqa": retain, "retain_text": retain}
    functions = {split: importance(*sums_of(family, acts), family, 2) for split, acts in data.items()}
    for split, acts in data.items():  # the four functions, [4, layers, neurons]
        expected = torch.tensor([[hand_importance(acts[layer][n]) for n in range(3)] for layer in range(2)],
                                dtype=torch.float64).permute(2, 0, 1)
        torch.testing.assert_close(functions[split], expected)
    scores = {modality: manu_scores(functions[f"forget_{modality}"], functions[f"retain_{modality}"])
              for modality in ("vqa", "text")}
    # By hand, per modality, MANU's released combination: sum_k w_k (forget / (retain + 1e-5) - 1)
    # with weights 2 (mean |a|), 0 (frequency), 2 (std), 2 (rms).
    for modality, forget in (("vqa", forget_vqa), ("text", forget_text)):
        expected = [[sum(w * (f / (r + 1e-5) - 1) for w, f, r in
                         zip((2, 0, 2, 2), hand_importance(forget[layer][n]), hand_importance(retain[layer][n])))
                     for n in range(3)] for layer in range(2)]
        torch.testing.assert_close(scores[modality], torch.tensor(expected, dtype=torch.float64))
    assert select_neurons(scores["vqa"], 1 / 6) == {0: [1]}  # the one neuron of both modalities first
    assert select_neurons(scores["vqa"], 2 / 6) == {0: [1], 1: [2]}  # then the image-only one
    assert select_neurons(scores["text"], 1 / 6) == {0: [1]}
    assert select_neurons(scores["text"], 0.01) == {0: [1]}  # at least one neuron
    # Frequency weighs nothing: changing it alone moves no score.
    other_frequency = functions["forget_text"].clone()
    other_frequency[1] += 0.5
    torch.testing.assert_close(manu_scores(other_frequency, functions["retain_text"]), scores["text"])
    # Statistics written before MANU's frequency cut are refused, not misread.
    old, tokens = sums_of(family, retain)
    old = {name.replace("active_count", "positive_count"): value for name, value in old.items()}
    with pytest.raises(ValueError, match="lack active_count: they were written by an older"):
        importance(old, tokens, family, 2)
    # Ties at the threshold are broken by position across layers, the first first.
    assert select_neurons(torch.tensor([[1.0, 2.0], [2.0, 0.0]]), 0.25) == {0: [1]}


def test_pruning_silences_the_chosen_neurons_and_nothing_else(loaded):
    name, model = loaded
    family, encoder = FAMILIES[name], PromptEncoder(model.processor)
    example = forget_examples()[0]
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    activations_before = hand_activations(model.model, family, encoder, example, 1)
    prune_neurons(model.model, family, {1: [0, 5], 0: [3]})
    changed = {n for n, p in model.model.named_parameters() if not torch.equal(p, before[n])}
    prefix = mlp_prefix(family, 1)
    assert changed == {f"{mlp_prefix(family, i)}.{p}.weight" for i in (0, 1) for p in ("gate_proj", "up_proj", "down_proj")}
    mlp = model.model.get_submodule(prefix)
    assert mlp.gate_proj.weight[[0, 5]].abs().sum() == 0 and mlp.up_proj.weight[[0, 5]].abs().sum() == 0
    assert mlp.down_proj.weight[:, [0, 5]].abs().sum() == 0
    kept = [i for i in range(mlp.down_proj.weight.shape[1]) if i not in (0, 5)]
    torch.testing.assert_close(mlp.down_proj.weight[:, kept], before[f"{prefix}.down_proj.weight"][:, kept], rtol=0, atol=0)
    # Layer 0 changed too, so layer 1's inputs moved; its pruned neurons are silent all the same.
    after = hand_activations(model.model, family, encoder, example, 1)
    assert after[:, [0, 5]].abs().max() == 0 and activations_before[:, [0, 5]].abs().max() > 0


MANU_SPLITS = ("forget_vqa", "forget_text", "retain_vqa", "retain_text")


def test_manu_stages_prune_the_top_neurons_and_refuse_foreign_statistics(benchmark, tiny_models, tmp_path):
    statistics = tmp_path / "neuron_importance"
    for split in MANU_SPLITS:
        call_stage("compute_neuron_importance", "--model", tiny_models["llava"], "--benchmark", benchmark,
                   "--forget-ratio", "10", "--split", split, "--out", statistics / split, "--device", "cpu")
    index = json.loads((statistics / "forget_vqa.safetensors.index.json").read_text())
    assert index["metadata"]["kind"] == "mlp_activation_statistics" and int(index["metadata"]["tokens"]) > 0
    assert index["metadata"]["statistics"] == "abs_sum,active_count,sum,square_sum"
    assert index["metadata"]["active_count"] == "tokens with |a| > 0.1"
    call_stage("unlearn", "--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10",
               "--method", "manu", "--hparam", "prune_fraction=0.05", "--neuron-importance", statistics,
               "--out", tmp_path / "manu", "--device", "cpu")
    manifest = json.loads((tmp_path / "manu" / "manifest.json").read_text())
    records = [json.loads(line) for line in (tmp_path / "manu" / "train_log.jsonl").read_text().splitlines()]
    stored = json.loads((tmp_path / "manu" / "weights.safetensors.index.json").read_text())["weight_map"]
    layers, width = 2, 176  # the fixture's tiny models: 2 decoder layers, MLP width 2.75 * 64
    # Each modality selects its own top 5 % of the neurons; the union is pruned.
    budget = round(0.05 * layers * width)
    for modality in ("image", "text"):
        assert sum(len(r["selected_by"][modality]) for r in records) == budget
    assert all(r["neurons"] == sorted(set(r["selected_by"]["image"]) | set(r["selected_by"]["text"]))
               and r["pruned"] == len(r["neurons"]) for r in records)
    assert budget <= sum(r["pruned"] for r in records) <= 2 * budget
    assert manifest["training"] is None and manifest["hyperparameters"] == {"prune_fraction": 0.05}
    assert {name.split("::")[0] for name in stored} <= {
        f"model.language_model.layers.{r['layer']}.mlp.{p}.weight" for r in records
        for p in ("gate_proj", "up_proj", "down_proj")}
    pruned = [(layer_, n) for r in records for layer_, n in [(r["layer"], n) for n in r["neurons"]]]
    assert len(set(pruned)) == len(pruned) and all(0 <= n < width for _, n in pruned)
    # Statistics of another model are refused before anything is written.
    with pytest.raises(SystemExit, match="were computed on the model with fingerprint"):
        call_stage("unlearn", "--vanilla", tiny_models["qwen2_vl"], "--benchmark", benchmark, "--forget-ratio", "10",
                   "--method", "manu", "--neuron-importance", statistics, "--out", tmp_path / "foreign",
                   "--device", "cpu")
    assert not (tmp_path / "foreign").exists()


def test_manu_has_its_own_sweep_axis_and_no_loop_settings():
    block = {"methods": ["ga", "manu"], "shared": {"epochs": 2, "batch_size": 4, "learning_rate": [3e-4, 1e-3],
                                                   "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0},
             "manu": {"prune_fraction": [0.02, 0.1]}}
    check_unlearn_block(block, "x")
    assert [p.swept for p in sweep_points("manu", block)] == [(("prune_fraction", 0.02),), (("prune_fraction", 0.1),)]
    assert all(p.settings["loop"] == {} for p in sweep_points("manu", block))
    assert len(sweep_points("ga", block)) == 2
    with pytest.raises(ConfigError, match=r"x.manu: Additional properties are not allowed \('learning_rate'"):
        check_unlearn_block({**block, "manu": {"learning_rate": 1e-3}}, "x")
    with pytest.raises(ConfigError, match="x.manu.prune_fraction: 0 is less than or equal to the minimum of 0"):
        check_unlearn_block({**block, "manu": {"prune_fraction": 0}}, "x")
