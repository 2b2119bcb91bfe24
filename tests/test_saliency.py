"""Fisher diagonals against independent oracles, the union rule, masks, and their files; SalUn's
summed gradient against autograd and its mask against a hand ranking."""

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from pipeline_steps import build_mask
from pipeline_steps.models.encoding import Example, PromptEncoder
from pipeline_steps.models.families import PARTS, family_of, parts_reached
from pipeline_steps.models.loading import load_model, model_fingerprint
from pipeline_steps.saliency import reach
from pipeline_steps.saliency.fisher import estimate_fisher
from pipeline_steps.saliency.masks import MaskStats, salun_keep, select
from pipeline_steps.training.examples import fisher_split_source, split_examples
from pipeline_steps.unlearn import load_mask
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.unlearning.settings import parse_hyperparameters
from pipeline_steps.unlearning.weights import apply_changes
from pipeline_steps.saliency.tensor_files import TensorFile, write_tensors
from pipeline_steps.training.losses import answer_logits, answer_nll

from helpers import call_stage

COLOURS = ("red", "blue", "green", "white", "black")
ANSWERS = ("chef", "a pilot", "nurse", "baker of bread", "ox")


def vqa_examples():
    return [Example("What is the profession of the person in the image?", answer, Image.new("RGB", (40, 40), colour))
            for answer, colour in zip(ANSWERS, COLOURS)]


def text_examples():
    return [Example(f"What pet does Person {i} keep?", answer) for i, answer in enumerate(ANSWERS)]


def oracle(model, encoder, examples, groups):
    """sum over groups of the squared gradient of the group's mean loss, one backward per group, fp64."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros(p.shape, dtype=torch.float64) for n, p in params.items()}
    for group in groups:
        model.zero_grad()
        batch = encoder.collate([encoder.encode(examples[i]) for i in group])
        answer_nll(*answer_logits(model, batch)).mean().backward()
        for name, p in params.items():
            if p.grad is not None:
                sums[name] += p.grad.double() ** 2
    model.zero_grad()
    return sums


def assert_close_per_tensor(actual, expected, rtol=1e-5, floor=1e-9):
    scale = max(float(t.abs().max()) for t in expected.values())
    for name, reference in expected.items():
        # Tensors whose true gradient is zero (attention key biases: softmax ignores a constant
        # added to every key) are compared against a floor (a share of the largest value of any
        # tensor) instead of their own rounding noise.
        floor_ = max(float(reference.abs().max()), floor * scale)
        error = float((actual[name].double() - reference).abs().max())
        assert error <= rtol * floor_, f"{name}: relative error {error / floor_:.2e}"


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def model(request, tiny_models):
    loaded = load_model(str(tiny_models[request.param]))
    return loaded.model, PromptEncoder(loaded.processor)


@pytest.mark.parametrize("make", [vqa_examples, text_examples], ids=["vqa", "text"])
def test_per_sample_fisher_matches_one_backward_per_example(model, make):
    model, encoder = model
    examples = make()
    result = estimate_fisher(model, encoder, examples, batch_size=2, estimator="per_sample")
    assert result.count == len(examples)
    assert_close_per_tensor(result.sums, oracle(model, encoder, examples, [[i] for i in range(len(examples))]))


@pytest.mark.parametrize("make", [vqa_examples, text_examples], ids=["vqa", "text"])
def test_batch_estimator_is_the_squared_minibatch_gradient(model, make):
    model, encoder = model
    examples = make()
    result = estimate_fisher(model, encoder, examples, batch_size=2, estimator="batch")
    assert result.count == 3
    assert_close_per_tensor(result.sums, oracle(model, encoder, examples, [[0, 1], [2, 3], [4]]))


def test_fisher_of_a_union_is_the_sum_of_sums(model):
    model, encoder = model
    examples = text_examples()
    a = estimate_fisher(model, encoder, examples[:2], batch_size=4)
    b = estimate_fisher(model, encoder, examples[2:], batch_size=4)
    both = estimate_fisher(model, encoder, examples, batch_size=4)
    assert a.count + b.count == both.count
    assert_close_per_tensor({n: a.sums[n] + b.sums[n] for n in both.sums}, {n: t.double() for n, t in both.sums.items()})


@pytest.mark.parametrize("estimator", ["per_sample", "batch"])
def test_text_only_examples_leave_the_vision_tower_and_connector_at_zero(model, estimator):
    """What ``saliency/reach.py`` rests on: without an image the vision tower and the connector
    never run, so a text split's sums there are exactly zero (not small), and the split says it
    has no images; an image split reaches every part."""
    model, encoder = model
    family = family_of(model.config.model_type)
    for make, images in ((text_examples, False), (vqa_examples, True)):
        result = estimate_fisher(model, encoder, make(), batch_size=2, estimator=estimator)
        assert result.images is images
        reached = {part: any(bool(t.any()) for n, t in result.sums.items() if family.module_of(n) == part)
                   for part in PARTS}
        assert reached == {part: part in parts_reached(images) for part in PARTS}
        assert reach.counts_by_part(result.count, result.images) == \
            {part: result.count if reached[part] else 0 for part in PARTS}


@pytest.mark.slow
def test_fisher_files_say_how_many_examples_reach_each_part(benchmark, tiny_models, tmp_path):
    """compute_fisher records, per part, the examples its mean is over: a text split's never
    reach the vision tower or the connector."""
    call_stage("compute_fisher", "--model", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "5",
               "--split", "forget_text", "--batch-size", "16", "--out", tmp_path / "f", "--device", "cpu")
    metadata = TensorFile(tmp_path / "f").metadata
    count = int(metadata["sample_count"])
    assert count > 0 and reach.read_counts(metadata, "f") == {"vision": 0, "connector": 0, "language": count}


def test_every_module_needs_a_per_sample_rule():
    odd = torch.nn.Sequential(torch.nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match="no per-sample gradient rule.*Conv1d.*'batch' estimator"):
        estimate_fisher(odd, None, [Example("q", "a")], batch_size=1)


def test_mask_rule_on_zeros_ties_and_infinities():
    inf = float("inf")
    target = torch.tensor([0.0, 0.0, 2.0, 2.0, 1.0, 3.0, inf, inf, 1.0])
    preserve = torch.tensor([0.0, 1.0, 0.0, 2.0, 2.0, 1.0, 5.0, inf, inf])
    # 0vs0, 0vsx, x/0, tie, below, above, inf vs x, inf vs inf (tie), x vs inf
    expected = [False, False, True, True, False, True, True, True, False]
    assert select(target, 1, preserve, 1, beta=1.0).tolist() == expected
    # Means, not sums: a target of 2 examples against a preserved set of 4 compares 2/2 with 4/4.
    assert select(torch.tensor([2.0]), 2, torch.tensor([4.0]), 4, beta=1.0).tolist() == [True]
    assert select(torch.tensor([2.0]), 2, torch.tensor([4.1]), 4, beta=1.0).tolist() == [False]
    with pytest.raises(ValueError, match="beta must be positive"):
        select(target, 1, preserve, 1, beta=0)


def test_larger_beta_never_selects_more():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(10_000, generator=generator) ** 4
    preserve = torch.rand(10_000, generator=generator) ** 4
    target[::7] = 0
    preserve[::5] = 0
    previous = None
    for beta in (0.1, 0.5, 1.0, 1.0001, 2.0, 10.0, 1e6):
        mask = select(target, 3, preserve, 7, beta)
        if previous is not None:
            assert not (mask & ~previous).any()
        previous = mask


def test_stats_add_up_to_the_mask():
    stats = MaskStats()
    masks = {"model.language_model.layers.0.self_attn.q_proj.weight": torch.tensor([[True, False], [True, True]]),
             "model.language_model.layers.1.mlp.down_proj.weight": torch.tensor([False, False, True]),
             "model.vision_tower.encoder.layers.0.mlp.fc1.bias": torch.tensor([True]),
             "lm_head.weight": torch.tensor([[False, True]])}
    for name, mask in masks.items():
        stats.add(name, "vision" if "vision" in name else "language", int(mask.sum()), mask.numel())
    summary = stats.summary()
    assert summary["overall"]["selected"] == sum(int(m.sum()) for m in masks.values()) == 6
    assert summary["overall"]["total"] == sum(m.numel() for m in masks.values()) == 10
    for kind in ("per_part", "per_layer", "per_module_type", "per_tensor"):
        assert sum(e["selected"] for e in summary[kind].values()) == 6
        assert sum(e["total"] for e in summary[kind].values()) == 10
    assert summary["per_layer"]["language.1"] == {"selected": 1, "total": 3, "fraction": 1 / 3}
    assert summary["per_module_type"]["language.q_proj"]["selected"] == 3
    assert summary["per_module_type"]["language.lm_head"]["selected"] == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool, torch.bfloat16])
def test_tensor_files_round_trip_with_shards(tmp_path, dtype):
    generator = torch.Generator().manual_seed(1)
    tensors = {f"t{i}": (torch.rand(5, 3 + i, generator=generator) * 4).to(dtype) for i in range(5)}
    specs = {name: (t.dtype, tuple(t.shape)) for name, t in tensors.items()}
    write_tensors(tmp_path / "x", specs, tensors.__getitem__, {"kind": "test"}, max_shard_bytes=60)
    index = json.loads((tmp_path / "x.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # sharded
    loaded = TensorFile(tmp_path / "x")
    assert loaded.metadata == {"kind": "test"} and loaded.names() == list(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded.get(name), tensor)
        with safe_open(str(tmp_path / index["weight_map"][name]), "pt") as handle:  # readable by safetensors
            assert torch.equal(handle.get_tensor(name), tensor)


def test_tensor_file_refuses_a_tensor_unlike_its_declaration(tmp_path):
    with pytest.raises(ValueError, match="tensor 'a' is"):
        write_tensors(tmp_path / "y", {"a": (torch.float32, (2,))}, lambda name: torch.zeros(3), {})
    assert not list(tmp_path.iterdir())


def fisher_file(path, tensors, count=4, fingerprint="abc", model_type="llava", kind="fisher_diagonal_sum",
                images=True, counted_by_part=True):
    """A Fisher file as compute_fisher writes it (``counted_by_part=False``: as it did before the
    per-part counts, ``saliency/reach.py``)."""
    metadata = {"kind": kind, "sample_count": str(count), "model_fingerprint": fingerprint,
                "model_type": model_type, "estimator": "per_sample" if kind == "fisher_diagonal_sum" else "gradient"}
    if counted_by_part:
        metadata[reach.COUNTS] = reach.encode(reach.counts_by_part(count, images))
    write_tensors(path, {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}, tensors.__getitem__, metadata)
    return path


LANG = "model.language_model.layers.0.mlp.up_proj.weight"
VISION = "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
CONNECTOR = "model.multi_modal_projector.linear_1.weight"


def test_build_mask_stage_selects_within_the_module_group(tmp_path):
    target = fisher_file(tmp_path / "t", {LANG: torch.tensor([4.0, 1.0, 0.0]), VISION: torch.tensor([5.0, 5.0])})
    preserve_a = fisher_file(tmp_path / "a", {LANG: torch.tensor([2.0, 4.0, 1.0]), VISION: torch.tensor([1.0, 9.0])})
    preserve_b = fisher_file(tmp_path / "b", {LANG: torch.tensor([2.0, 4.0, 1.0]), VISION: torch.tensor([3.0, 11.0])})
    for modules, expected in (("all", {LANG: [True, False, False], VISION: [True, False]}),
                              ("language", {LANG: [True, False, False], VISION: [False, False]}),
                              ("vision", {LANG: [False, False, False], VISION: [True, False]})):
        out = tmp_path / modules
        call_stage("build_mask", "--target", target, "--preserve", preserve_a, preserve_b, "--beta", "1",
                  "--modules", modules, "--out", out)
        mask = TensorFile(out / "mask")
        assert {name: mask.get(name).tolist() for name in mask.names()} == expected
        stats = json.loads((out / "mask_stats.json").read_text())
        assert stats["overall"]["selected"] == sum(sum(v) for v in expected.values())


def test_preserve_saliency_is_the_mean_over_the_examples_that_reach_each_tensor(tmp_path):
    """S_P of a vision-tower or connector tensor is the retain-VQA mean alone (the text split never
    reaches it); of a language-model tensor, the mean over both splits' examples together. By hand,
    with S_T = 1 everywhere (forget VQA: sums 4 over 4 examples)."""
    ones = torch.full((4,), 4.0)
    target = fisher_file(tmp_path / "forget_vqa", {LANG: ones, CONNECTOR: ones, VISION: ones}, count=4)
    image_side = torch.tensor([1.5, 2.7, 3.3, 6.0])  # over 3 retain VQA examples: mean [0.5, 0.9, 1.1, 2.0]
    retain_vqa = fisher_file(tmp_path / "retain_vqa", {LANG: torch.tensor([0.3, 1.5, 3.0, 6.0]),
                                                       CONNECTOR: image_side, VISION: image_side}, count=3)
    zeros = torch.zeros(4)  # the text examples never reach the vision tower or the connector
    retain_text = fisher_file(tmp_path / "retain_text", {LANG: torch.tensor([2.4, 6.6, 9.0, 1.2]),
                                                         CONNECTOR: zeros, VISION: zeros}, count=6, images=False)
    # Language model: S_P = (retain VQA sums + retain text sums) / (3 + 6) = [0.3, 0.9, 1.333, 0.8]
    # (retain VQA alone would be [0.1, 0.5, 1.0, 2.0], retain text alone [0.4, 1.1, 1.5, 0.2]).
    # Vision tower and connector: S_P = [0.5, 0.9, 1.1, 2.0]; divided by all 9 preserve examples,
    # as before this rule, it was [0.167, 0.3, 0.367, 0.667], and every entry was selected at beta 1.
    expected = {1.0: {LANG: [True, True, False, True], "image side": [True, True, False, False]},
                2.0: {LANG: [True, False, False, False], "image side": [True, False, False, False]},
                0.75: {LANG: [True, True, True, True], "image side": [True, True, True, False]}}
    assert select(ones, 4, image_side, 9, 1.0).all()  # the old division by all 9 at beta 1
    for beta, masks in expected.items():
        out = tmp_path / f"beta~{beta}"
        call_stage("build_mask", "--target", target, "--preserve", retain_text, retain_vqa, "--beta", str(beta),
                   "--modules", "all", "--out", out)
        mask = TensorFile(out / "mask")
        assert mask.get(LANG).tolist() == masks[LANG], beta
        assert mask.get(VISION).tolist() == mask.get(CONNECTOR).tolist() == masks["image side"], beta
        assert json.loads(mask.metadata["preserve_count_by_part"]) == {"vision": 3, "connector": 3, "language": 9}


@pytest.mark.parametrize("problem,message", [
    ("old", "has no 'sample_count_by_part' .* rerun compute_fisher"),
    ("fingerprint", "has model_fingerprint 'other'"),
    ("missing", f"tensor '{VISION}' is missing"),
    ("shape", f"tensor '{LANG}' has shape \\[2\\]"),
    ("nan", f"tensor '{VISION}' of .* contains NaN"),
])
def test_build_mask_refuses_mismatched_or_corrupt_inputs(tmp_path, problem, message):
    good = {LANG: torch.tensor([1.0, 2.0, 3.0]), VISION: torch.tensor([1.0, 1.0])}
    bad = dict(good)
    if problem == "missing":
        del bad[VISION]
    elif problem == "shape":
        bad[LANG] = torch.tensor([1.0, 2.0])
    elif problem == "nan":
        bad[VISION] = torch.tensor([1.0, float("nan")])
    target = fisher_file(tmp_path / "t", good)
    preserve = fisher_file(tmp_path / "p", bad, fingerprint="other" if problem == "fingerprint" else "abc",
                           counted_by_part=problem != "old")
    with pytest.raises(SystemExit, match=message):
        call_stage("build_mask", "--target", target, "--preserve", preserve, "--out", tmp_path / "out")
    assert not list((tmp_path / "out").glob("mask*")) if (tmp_path / "out").exists() else True


def test_control_masks_keep_the_fisher_masks_per_tensor_sparsity(tmp_path):
    """A random and a gradient-magnitude control of a Fisher-ratio mask select exactly as many
    entries of every tensor; the gradient-magnitude one the entries of largest target Fisher, the
    random one the same entries on a rebuild."""
    generator = torch.Generator().manual_seed(0)
    target_values = {LANG: torch.rand(40, generator=generator), VISION: torch.rand(30, generator=generator)}
    target = fisher_file(tmp_path / "t", target_values)
    preserve = fisher_file(tmp_path / "p", {LANG: torch.rand(40, generator=generator) * 1.5,
                                            VISION: torch.rand(30, generator=generator) * 0.8})
    call_stage("build_mask", "--target", target, "--preserve", preserve, "--out", tmp_path / "fisher")
    fisher = TensorFile(tmp_path / "fisher" / "mask")
    counts = {name: int(fisher.get(name).sum()) for name in fisher.names()}
    assert 0 < counts[LANG] < 40 and 0 < counts[VISION] < 30
    built = []
    for control in ("random", "gradient_magnitude", "random"):
        out = tmp_path / control
        call_stage("build_mask", "--control", control, "--like", tmp_path / "fisher", "--target", target, "--out", out)
        mask = TensorFile(out / "mask")
        built.append({name: mask.get(name) for name in mask.names()})
        assert {name: int(mask.get(name).sum()) for name in mask.names()} == counts
        stats = json.loads((out / "mask_stats.json").read_text())
        assert stats["control"] == control and stats["overall"]["selected"] == sum(counts.values())
        if control == "gradient_magnitude":
            for name, values in target_values.items():
                assert set(torch.nonzero(mask.get(name)).flatten().tolist()) == \
                    set(torch.topk(values, counts[name]).indices.tolist())
    assert all(torch.equal(built[0][name], built[2][name]) for name in counts)  # a rebuild: the same mask
    assert not torch.equal(built[0][LANG], fisher.get(LANG))
    with pytest.raises(SystemExit, match="--control needs --like"):
        call_stage("build_mask", "--control", "random", "--target", target, "--out", tmp_path / "x")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_salun_gradient_file_is_the_gradient_of_the_summed_forget_loss(benchmark, tiny_models, tmp_path, family):
    """The Fisher stage's ``gradient`` estimator, in batches of 5, against one autograd over the
    whole forget VQA set at once; SalUn's mask built from it names every parameter of the family,
    keeps half of the entries, the unlearn stage's mask check accepts it for SalUn only, and SalUn's
    stage without retain term moves entries inside it only."""
    call_stage("compute_fisher", "--model", tiny_models[family], "--benchmark", benchmark, "--forget-ratio", "10",
               "--split", "forget_vqa", "--estimator", "gradient", "--batch-size", "5", "--out", tmp_path / "g",
               "--device", "cpu")
    stored = TensorFile(tmp_path / "g")
    loaded = load_model(str(tiny_models[family]))
    model, encoder = loaded.model, PromptEncoder(loaded.processor)
    examples = split_examples(benchmark, [fisher_split_source("forget_vqa", 10)[0]], ["vqa"])
    assert len(examples) % 5  # a last, partial batch: a sum of batch means would weigh it differently
    assert stored.metadata["kind"] == "gradient_sum" and stored.metadata["sample_count"] == str(len(examples))
    assert stored.metadata["count_unit"] == "examples"
    model.eval()
    params = dict(model.named_parameters())
    batch = encoder.collate([encoder.encode(e) for e in examples])
    grads = torch.autograd.grad(answer_nll(*answer_logits(model, batch)).sum(), list(params.values()),
                                allow_unused=True)
    expected = {name: (g if g is not None else torch.zeros_like(p)).double()
                for (name, p), g in zip(params.items(), grads)}
    assert stored.names() == list(params)
    # Signed sums, unlike squares, keep zero-gradient tensors' noise at 1e-9 of the largest gradient.
    assert_close_per_tensor({name: stored.get(name) for name in params}, expected, rtol=1e-4, floor=1e-6)

    call_stage("build_mask", "--salun", "0.5", "--target", tmp_path / "g", "--out", tmp_path / "mask")
    mask = TensorFile(tmp_path / "mask" / "mask")
    assert mask.names() == list(params) and all(mask.spec(n)[1] == tuple(p.shape) for n, p in params.items())
    total = sum(p.numel() for p in params.values())
    assert sum(int(mask.get(name).sum()) for name in params) == total // 2
    salun = get_method("salun")
    loaded_mask, modules = load_mask(tmp_path / "mask", model, model_fingerprint(tiny_models[family]), salun,
                                     parse_hyperparameters(salun, []))
    assert modules == "all" and set(loaded_mask) == set(params)
    with pytest.raises(Exception, match="mask_fraction=0.3"):
        load_mask(tmp_path / "mask", model, model_fingerprint(tiny_models[family]), salun,
                  parse_hyperparameters(salun, ["mask_fraction=0.3"]))
    mmunlearner = get_method("mmunlearner")
    with pytest.raises(Exception, match="is a salun mask; method 'mmunlearner' needs a fisher_ratio mask"):
        load_mask(tmp_path / "mask", model, model_fingerprint(tiny_models[family]), mmunlearner,
                  parse_hyperparameters(mmunlearner, []))

    # The unlearn stage with that mask and no retain term moves entries inside the mask only.
    call_stage("unlearn", "--vanilla", tiny_models[family], "--benchmark", benchmark, "--forget-ratio", "10",
               "--method", "salun", "--mask", tmp_path / "mask", "--hparam", "retain_weight=0", "--epochs", "1",
               "--batch-size", "4", "--learning-rate", "1e-3", "--out", tmp_path / "out", "--device", "cpu")
    start = {name: p.detach().clone() for name, p in params.items()}
    apply_changes(model, tmp_path / "out" / "weights", model_fingerprint(tiny_models[family]))
    moved = {name: p.detach() != start[name] for name, p in model.named_parameters()}
    assert any(m.any() for m in moved.values())
    assert not any((m & ~loaded_mask[name]).any() for name, m in moved.items())


def test_salun_mask_keeps_exactly_the_fraction_of_largest_magnitudes_ties_by_position(tmp_path, monkeypatch):
    """By hand: |g| ranks -3 (LANG[1]), -2 (VISION[2]), then three ties at 1 (LANG[2], LANG[3],
    VISION[0]) of which those met first in the file come first. Read 3 entries at a time, so the
    threshold passes and the ties cross chunk and tensor boundaries."""
    gradient = fisher_file(tmp_path / "g", {LANG: torch.tensor([0.5, -3.0, 1.0, -1.0]),
                                            VISION: torch.tensor([1.0, 0.0, -2.0, 0.25])}, kind="gradient_sum")
    monkeypatch.setattr(build_mask, "CHUNK", 3)
    expected = {0.3: ({LANG: [0, 1, 0, 0], VISION: [0, 0, 1, 0]}, 2.0),   # floor(0.3 * 8) = 2
                0.5: ({LANG: [0, 1, 1, 1], VISION: [0, 0, 1, 0]}, 1.0),   # two of the three ties
                0.625: ({LANG: [0, 1, 1, 1], VISION: [1, 0, 1, 0]}, 1.0),
                0.75: ({LANG: [1, 1, 1, 1], VISION: [1, 0, 1, 0]}, 0.5),
                1.0: ({LANG: [1, 1, 1, 1], VISION: [1, 1, 1, 1]}, 0.0)}
    for fraction, (chosen, threshold) in expected.items():
        out = tmp_path / str(fraction)
        build_mask.main(build_mask.build_parser().parse_args(
            ["--salun", str(fraction), "--target", str(gradient), "--out", str(out)]))
        mask = TensorFile(out / "mask")
        assert {name: mask.get(name).int().tolist() for name in mask.names()} == chosen, fraction
        stats = json.loads((out / "mask_stats.json").read_text())
        assert stats["overall"]["selected"] == salun_keep(8, fraction) == int(fraction * 8)
        assert (stats["mask"], float(stats["fraction"]), float(stats["threshold"])) == ("salun", fraction, threshold)


def test_salun_mask_is_the_top_k_of_the_whole_model_not_of_each_tensor(tmp_path, monkeypatch):
    """Random gradients, one tensor ten times larger than the other: the mask is exactly the global
    top-k of |g| (no ties in continuous values), so the large tensor takes most of it."""
    generator = torch.Generator().manual_seed(0)
    values = {LANG: torch.randn(300, generator=generator) * 10, VISION: torch.randn(200, generator=generator)}
    gradient = fisher_file(tmp_path / "g", values, kind="gradient_sum")
    monkeypatch.setattr(build_mask, "CHUNK", 64)
    build_mask.main(build_mask.build_parser().parse_args(["--salun", "0.5", "--target", str(gradient),
                                                          "--out", str(tmp_path / "m")]))
    mask = TensorFile(tmp_path / "m" / "mask")
    flat = torch.cat([values[LANG], values[VISION]]).abs()
    expected = torch.zeros(500, dtype=torch.bool)
    expected[torch.topk(flat, 250).indices] = True
    assert torch.equal(torch.cat([mask.get(LANG), mask.get(VISION)]), expected)
    assert int(mask.get(LANG).sum()) > 200


def test_salun_and_fisher_ratio_masks_refuse_each_others_inputs(tmp_path):
    fisher = fisher_file(tmp_path / "f", {LANG: torch.tensor([1.0, 2.0])})
    gradient = fisher_file(tmp_path / "g", {LANG: torch.tensor([1.0, -2.0])}, kind="gradient_sum")
    with pytest.raises(SystemExit, match="is not a gradient file written by compute_fisher"):
        call_stage("build_mask", "--salun", "0.5", "--target", fisher, "--out", tmp_path / "a")
    with pytest.raises(SystemExit, match="is not a Fisher file written by compute_fisher"):
        call_stage("build_mask", "--target", gradient, "--preserve", fisher, "--out", tmp_path / "b")
    with pytest.raises(SystemExit, match="the mask fraction must be in"):
        call_stage("build_mask", "--salun", "1.5", "--target", gradient, "--out", tmp_path / "c")
