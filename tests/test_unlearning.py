"""Unlearning: the masking invariants, each method's loss by hand, stored changes, refusals."""

import json
import math

import pytest
import torch
import torch.optim.optimizer as optimizer_hooks
from accelerate import Accelerator

from pipeline_steps.benchmarks.records import forget_split
from pipeline_steps.models.encoding import Example, PromptEncoder
from pipeline_steps.models.families import FAMILIES
from pipeline_steps.models.loading import load_model, model_fingerprint, save_model
from pipeline_steps.training.examples import split_examples
from pipeline_steps.unlearning.loop import UnlearnSettings, unlearn
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.unlearning.settings import parse_hyperparameters
from pipeline_steps.unlearning.weights import apply_changes, save_changes

from helpers import Killed, KilledAfter, call_stage, forget_examples, full_logprobs, mask_file, random_mask, retain_examples, stage_output


def run(loaded_model, method, *, mask=None, trainable=None, retain_weight=1.0, steps_epochs=3, weight_decay=0.1,
        reference=None):
    model = loaded_model.model
    settings = UnlearnSettings(epochs=steps_epochs, batch_size=2, learning_rate=1e-2, weight_decay=weight_decay,
                               max_grad_norm=0.5, seed=0)
    trainable = trainable or {name for name, _ in model.named_parameters()}
    method = get_method(method)
    hparams = parse_hyperparameters(method, [f"retain_weight={retain_weight}"] if method.uses_retain else [])
    return unlearn(model, method, PromptEncoder(loaded_model.processor), forget_examples(),
                   retain_examples(), settings, hparams, Accelerator(cpu=True),
                   trainable=trainable, mask=mask, reference_model=reference)


def test_without_retain_term_entries_outside_the_mask_never_move(loaded):
    _, model = loaded
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    mask = random_mask(model.model)
    history = run(model, "mmunlearner", mask=mask, retain_weight=0.0)  # Adam, clipping and weight decay on
    assert len(history) == 9 and history[-1]["forget_loss"] < history[0]["forget_loss"]
    moved_inside = 0
    for name, parameter in model.model.named_parameters():
        outside = ~mask[name]
        assert torch.equal(parameter.detach()[outside], before[name][outside]), name
        moved_inside += int((parameter.detach() != before[name])[mask[name]].sum())
    assert moved_inside > 0


def test_forget_gradient_never_reaches_outside_the_mask_optimizer_state_included(loaded):
    """With the retain term on, Adam's first moment outside the mask is built from retain gradients
    alone: at every step it equals beta1 * previous + (1 - beta1) * clip * retain gradient."""
    _, model = loaded
    mask = random_mask(model.model, seed=1)
    contributions: dict[str, list[torch.Tensor]] = {n: [] for n, _ in model.model.named_parameters()}
    handles = [p.register_hook(lambda g, n=n: contributions[n].append(g.detach().clone()))
               for n, p in model.model.named_parameters()]
    states, grads = [], []

    def before_step(optimizer, args, kwargs):
        grads.append({id(p): p.grad.detach().clone() for group in optimizer.param_groups for p in group["params"]
                      if p.grad is not None})

    def after_step(optimizer, args, kwargs):
        states.append({id(p): optimizer.state[p]["exp_avg"].clone() for group in optimizer.param_groups
                       for p in group["params"] if p in optimizer.state})

    pre = optimizer_hooks.register_optimizer_step_pre_hook(before_step)
    post = optimizer_hooks.register_optimizer_step_post_hook(after_step)
    try:
        history = run(model, "mmunlearner", mask=mask, retain_weight=1.0, weight_decay=0.0)
    finally:
        pre.remove(), post.remove()
        for handle in handles:
            handle.remove()
    beta1, checked, unreached = 0.9, 0, []
    for name, parameter in model.model.named_parameters():
        pieces = contributions[name]  # forget gradient, then retain gradient, at every step
        if not pieces:  # a tensor no batch reaches (LLaVA's last vision layer: it reads the one before)
            unreached.append(name)
            continue
        assert len(pieces) == 2 * len(history), name
        checked += 1
        previous = torch.zeros_like(parameter)
        outside = ~mask[name]
        for step, entry in enumerate(history):
            forget_grad, retain_grad = pieces[2 * step], pieces[2 * step + 1]
            clip = min(1.0, 0.5 / (entry["grad_norm"] + 1e-6))
            fed = grads[step][id(parameter)]
            torch.testing.assert_close(fed[outside], clip * retain_grad[outside], rtol=1e-5, atol=1e-9)
            torch.testing.assert_close(fed[mask[name]], clip * (forget_grad + retain_grad)[mask[name]],
                                       rtol=1e-5, atol=1e-9)
            expected = beta1 * previous + (1 - beta1) * clip * retain_grad
            torch.testing.assert_close(states[step][id(parameter)][outside], expected[outside], rtol=1e-5, atol=1e-9)
            previous = states[step][id(parameter)]
    # The check ran on the model's weights: only vision-tower tensors can be out of reach.
    assert checked >= len(contributions) / 2 and all("vision" in name for name in unreached), unreached


@pytest.mark.parametrize("group", ["language", "vision"])
def test_tensors_outside_the_module_group_stay_frozen(loaded, group):
    family, model = loaded
    before = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    trainable = {n for n, _ in model.model.named_parameters() if FAMILIES[family].in_group(n, group)}
    run(model, "mmunlearner", mask=random_mask(model.model, fraction=1.0), trainable=trainable)
    for name, parameter in model.model.named_parameters():
        if name not in trainable:
            assert torch.equal(parameter.detach(), before[name]), name
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.model.named_parameters() if n in trainable)


def test_each_baseline_loss_by_hand(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = load_model(model.source).model
    with torch.no_grad():  # a reference that differs from the model
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    batches = {"forget": encoder.collate([encoder.encode(e) for e in forget]),
               "retain": encoder.collate([encoder.encode(e) for e in retain])}
    with torch.no_grad():
        nll = lambda m, ex: torch.stack([-lp.gather(1, t[:, None]).mean() for lp, t in full_logprobs(m, encoder, ex)])
        seq = lambda m, ex: torch.stack([lp.gather(1, t[:, None]).sum() for lp, t in full_logprobs(m, encoder, ex)])
        forget_nll, retain_nll = nll(model.model, forget).mean(), nll(model.model, retain).mean()
        # KL_Min and NPO by their defaults, the authors' code: KL(p_vanilla || p_theta) plus the retain
        # NLL; NPO's ratio of mean answer-token probabilities (``seq`` checks the paper's reading in
        # test_methods.py's by-hand tests).
        kl = torch.stack([(ref.exp() * (ref - cur)).sum(-1).mean() for (cur, _), (ref, _) in
                          zip(full_logprobs(model.model, encoder, retain), full_logprobs(reference, encoder, retain))]).mean()
        ratio = (nll(reference, forget) - nll(model.model, forget)).exp()
        npo = (2 / 0.4 * torch.log1p(ratio ** 0.4)).mean()
        assert not torch.allclose(ratio, (seq(model.model, forget) - seq(reference, forget)).exp())
        expected = {"ga": (-forget_nll, None), "ga_diff": (-forget_nll, 0.7 * retain_nll),
                    "kl_min": (-forget_nll, 0.7 * (kl + retain_nll)), "npo": (npo, None),
                    "mmunlearner": (-forget_nll, 0.7 * retain_nll)}
        for name, (forget_term, retain_term) in expected.items():
            method = get_method(name)
            hparams = parse_hyperparameters(method, ["retain_weight=0.7"] if method.uses_retain else ["beta=0.4"]
                                            if name == "npo" else [])
            terms = method.terms(model.model, batches, hparams, reference)
            torch.testing.assert_close(terms.forget, forget_term, rtol=1e-4, atol=1e-5)
            if retain_term is None:
                assert terms.retain is None
            else:
                torch.testing.assert_close(terms.retain, retain_term, rtol=1e-4, atol=1e-5)


def test_kl_term_is_zero_against_an_identical_model(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    batches = {"forget": encoder.collate([encoder.encode(e) for e in forget_examples()[:2]]),
               "retain": encoder.collate([encoder.encode(e) for e in retain_examples()[:2]])}
    with torch.no_grad():
        terms = get_method("kl_min").terms(model.model, batches, get_method("kl_min").Hyperparameters(retain_nll=False),
                                           reference_model=model.model)
    assert abs(terms.retain.item()) < 1e-6


def test_a_non_finite_loss_stops_unlearning(loaded):
    _, model = loaded
    with torch.no_grad():
        model.model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="the forget loss is nan at step 0"):
        run(model, "ga")


@pytest.mark.parametrize("fraction", [0.05, 0.9])
def test_stored_changes_rebuild_the_unlearned_model(loaded, tmp_path, fraction):
    """Sparse (few entries moved) and dense storage both reproduce the weights bit for bit."""
    _, model = loaded
    save_model(model.model, model.processor, tmp_path / "vanilla")
    start = {n: p.detach().clone() for n, p in model.model.named_parameters()}
    run(model, "mmunlearner", mask=random_mask(model.model, fraction=fraction), retain_weight=0.0)
    counts = save_changes(dict(model.model.named_parameters()), start, tmp_path / "weights",
                          {"vanilla_fingerprint": model_fingerprint(tmp_path / "vanilla")})
    assert (counts["sparse_tensors"] > 0) == (fraction < 1 / 3)
    rebuilt = load_model(str(tmp_path / "vanilla")).model
    apply_changes(rebuilt, tmp_path / "weights", model_fingerprint(tmp_path / "vanilla"))
    for (name, expected), (_, actual) in zip(model.model.named_parameters(), rebuilt.named_parameters()):
        assert torch.equal(expected, actual), name
    with pytest.raises(ValueError, match="fingerprint"):
        apply_changes(rebuilt, tmp_path / "weights", "another-model")


@pytest.mark.parametrize("problem,message", [
    ("fingerprint", "built from the model with fingerprint"),
    ("missing", "tensor 'lm_head.weight' is missing from the mask"),
    ("extra", "tensor 'model.extra.weight' is missing from the model"),
    ("shape", "mask tensor 'lm_head.weight' has shape"),
])
def test_a_mask_that_does_not_fit_is_refused_before_training(benchmark, tiny_models, tmp_path, problem, message):
    model_dir = tiny_models["llava"]
    model = load_model(str(model_dir)).model
    fingerprint = "not-this-one" if problem == "fingerprint" else model_fingerprint(model_dir)
    changes = {"missing": lambda t: t.pop("lm_head.weight"),
               "extra": lambda t: t.update({"model.extra.weight": torch.ones(2, dtype=torch.bool)}),
               "shape": lambda t: t.update({"lm_head.weight": torch.ones(3, dtype=torch.bool)})}
    mask = mask_file(tmp_path / "mask", model, fingerprint, changes.get(problem))
    with pytest.raises(SystemExit, match=message):
        call_stage("unlearn", "--vanilla", model_dir, "--benchmark", benchmark, "--forget-ratio", "10",
                  "--method", "mmunlearner", "--mask", mask, "--out", tmp_path / "out", "--device", "cpu")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_unlearn_stage_writes_changes_log_and_manifest(benchmark, tiny_models, tmp_path):
    model_dir = tiny_models["qwen2_vl"]
    call_stage("unlearn", "--vanilla", model_dir, "--benchmark", benchmark, "--forget-ratio", "10", "--method",
               "ga_diff", "--out", tmp_path / "out", "--epochs", "1", "--batch-size", "4", "--learning-rate", "1e-3",
               "--device", "cpu")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    forget = split_examples(benchmark, [forget_split(10)], ["vqa"])  # every VQA pair of the forget people
    assert len(forget) > 4 and manifest["method"] == "ga_diff" and manifest["forget_examples"] == len(forget)
    assert len(log) == math.ceil(len(forget) / 4) and {"forget_loss", "retain_loss", "grad_norm"} <= set(log[0])
    assert 0 < log[-1]["changed_fraction"] <= 1 and "changed_fraction" not in log[0]  # at epoch ends
    assert (tmp_path / "out" / "weights.safetensors.index.json").exists()


@pytest.mark.parametrize("method", ["mmunlearner", "salun"])
def test_a_masked_method_with_an_all_ones_mask_is_ga_diff(loaded, tiny_models, method):
    """With every entry in the mask, a masked method's forget gradient (MMUnlearner's, SalUn's:
    both GA_Diff's terms) is the whole forget gradient: the same batches and steps as GA_Diff give
    the same train log and the same weights, within float tolerance (the two gradients are summed
    by two backward passes instead of one)."""
    family, first = loaded
    second = load_model(str(tiny_models[family]))
    ones = {name: torch.ones(p.shape, dtype=torch.bool) for name, p in first.model.named_parameters()}
    masked, plain = run(first, method, mask=ones), run(second, "ga_diff")
    assert len(masked) == len(plain) == 9
    for step_masked, step_plain in zip(masked, plain):
        assert step_masked.keys() == step_plain.keys()
        for key, value in step_plain.items():
            assert step_masked[key] == pytest.approx(value, rel=1e-5, abs=1e-7), (key, step_plain["step"])
    weights = dict(second.model.named_parameters())
    for name, parameter in first.model.named_parameters():
        torch.testing.assert_close(parameter.detach(), weights[name].detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_examples_are_encoded_once_and_only_when_read(loaded):
    """The retain split is read a batch per step: encoding only what is read (once) is the loop's
    saving for retain-based methods, and must not change which examples a step sees."""
    _, model = loaded

    class CountingEncoder(PromptEncoder):
        def __init__(self, processor):
            super().__init__(processor)
            self.counts = {}

        def encode(self, example):
            self.counts[example.answer] = self.counts.get(example.answer, 0) + 1
            return super().encode(example)

    encoder = CountingEncoder(model.processor)
    retain = [Example(f"Which city is person {i} from?", f"city{i}", None) for i in range(40)]
    settings = UnlearnSettings(epochs=3, batch_size=2, learning_rate=1e-3, seed=0)
    method = get_method("ga_diff")
    unlearn(model.model, method, encoder, forget_examples(), retain, settings,
            parse_hyperparameters(method, []), Accelerator(cpu=True),
            trainable={name for name, _ in model.model.named_parameters()})
    forget_answers = {e.answer for e in forget_examples()}
    assert {a: n for a, n in encoder.counts.items() if a in forget_answers} == dict.fromkeys(forget_answers, 1)
    retain_read = [a for a in encoder.counts if a.startswith("city")]
    assert all(encoder.counts[a] == 1 for a in retain_read)
    assert 0 < len(retain_read) <= 3 * 3 * 2 < len(retain)  # 3 epochs of 3 steps, 2 retain examples each


class RecordingEncoder(PromptEncoder):
    """Records the answers of every batch the loop collates, in order: which examples each
    optimizer step's forward pass reads."""

    def __init__(self, processor):
        super().__init__(processor)
        self.answers, self.collated = {}, []

    def encode(self, example):
        encoded = super().encode(example)
        self.answers[id(encoded)] = example.answer
        return encoded

    def collate(self, items):
        self.collated.append([self.answers[id(item)] for item in items])
        return super().collate(items)


def scheduled_run(model, method_name, retain_schedule, *, forget, retain, epochs=2, progress=None,
                  hparams=(), retain_weight=None):
    """Unlearn with batches of 2 under ``retain_schedule``; (log, collated batches, optimizer steps),
    the optimizer steps counted by torch's global step hook."""
    encoder = RecordingEncoder(model.processor)
    settings = UnlearnSettings(epochs=epochs, batch_size=2, learning_rate=1e-3, weight_decay=0.01, seed=0,
                               retain_schedule=retain_schedule)
    method = get_method(method_name)
    steps = []
    handle = optimizer_hooks.register_optimizer_step_post_hook(lambda *_: steps.append(len(encoder.collated)))
    try:
        history = unlearn(model.model, method, encoder, forget, retain, settings,
                          parse_hyperparameters(method, list(hparams)), Accelerator(cpu=True),
                          trainable={name for name, _ in model.model.named_parameters()},
                          reference_model=load_model(model.source).model.eval() if method.frozen_model else None,
                          progress=progress)
    finally:
        handle.remove()
    return history, encoder.collated, steps


def city_examples(count):
    return [Example(f"Which city is person {i} from?", f"city{i}", None) for i in range(count)]


@pytest.mark.parametrize("method_name", ["ga_diff", "kl_min"])
def test_the_retain_schedule_takes_the_configured_number_of_retain_steps(loaded, method_name):
    """The authors' schedule: with 2 forget and 5 retain batches an epoch reads each retain batch
    once, the joint step takes the forget batch and the first retain batch of its share (2, then
    3), and each further retain batch takes a retain-only optimizer step: 5 optimizer steps per
    epoch, as many as retain batches."""
    _, model = loaded
    forget, retain = forget_examples()[:4], city_examples(10)
    history, collated, steps = scheduled_run(model, method_name, "all_per_epoch", forget=forget, retain=retain)
    forget_answers = {e.answer for e in forget}
    kinds = "".join("F" if set(batch) <= forget_answers else "R" for batch in collated
                    if set(batch) <= forget_answers or all(a.startswith("city") for a in batch))
    assert len(kinds) == len(collated), "a batch mixed forget and retain examples"
    assert kinds == "FRRFRRR" * 2  # the joint step reads forget then retain; then retain-only steps
    assert len(steps) == 2 * 5  # one optimizer step per retain batch: 5 per epoch
    # Every optimizer step is preceded by its forward passes: after the joint step 2 batches, after
    # a retain-only step one more.
    assert steps == [2, 3, 5, 6, 7, 9, 10, 12, 13, 14]
    retain_batches = [batch for batch in collated if batch[0].startswith("city")]
    for epoch in (retain_batches[:5], retain_batches[5:]):
        read = sorted(answer for batch in epoch for answer in batch)
        assert read == sorted(e.answer for e in retain)  # each retain example exactly once an epoch
    assert retain_batches[:5] != retain_batches[5:]  # reshuffled each epoch
    assert [(e["step"], e["epoch"], e["retain_batches"]) for e in history] == [(1, 0, 2), (2, 0, 3), (3, 1, 2),
                                                                                (4, 1, 3)]


def test_the_default_retain_schedule_is_one_cycled_retain_batch_per_forget_step(loaded):
    """The default: one joint step per forget batch, the retain batches cycled across epochs (the
    second epoch continues the first's cycle: 5 retain batches, 2 steps an epoch)."""
    _, model = loaded
    forget, retain = forget_examples()[:4], city_examples(10)
    history, collated, steps = scheduled_run(model, "ga_diff", "one_per_step", forget=forget, retain=retain, epochs=3)
    assert len(steps) == 6 and steps == [2, 4, 6, 8, 10, 12]
    retain_batches = collated[1::2]
    assert all(batch[0].startswith("city") for batch in retain_batches)
    first_cycle = sorted(answer for batch in retain_batches[:5] for answer in batch)
    assert first_cycle == sorted(e.answer for e in retain)  # one cycle spans the epochs' 6 steps
    assert all("retain_batches" not in entry for entry in history)


@pytest.mark.parametrize("method_name, hparams, message", [
    ("ga", [], "has no retain term"),
    ("ga_diff", ["retain_weight=0"], "retain term off"),
    ("ga_diff", [], "at least one retain batch per forget batch"),
])
def test_the_authors_retain_schedule_is_refused_where_it_cannot_apply(loaded, method_name, hparams, message):
    _, model = loaded
    retain = city_examples(2) if message.startswith("at least") else city_examples(10)
    with pytest.raises(ValueError, match=message):
        scheduled_run(model, method_name, "all_per_epoch", forget=forget_examples(), retain=retain, hparams=hparams)


def test_the_retain_schedule_resumes_bit_identically(loaded, tmp_path):
    """Killed after any whole step of the authors' schedule (mid-epoch included), a rerun from the
    saved progress ends on the same weights and log as a straight run."""
    from pipeline_steps.training.progress import Progress

    _, model = loaded
    forget, retain = forget_examples(), city_examples(10)  # 3 forget steps an epoch, 1 + 2 + 2 retain batches
    straight, _, _ = scheduled_run(model, "ga_diff", "all_per_epoch", forget=forget, retain=retain)
    straight_weights = {n: p.detach().clone() for n, p in model.model.named_parameters()}

    fresh = load_model(model.source)
    with pytest.raises(Killed):
        scheduled_run(fresh, "ga_diff", "all_per_epoch", forget=forget, retain=retain,
                      progress=KilledAfter(tmp_path / "progress", {"job": "schedule"}, 4))
    assert torch.load(tmp_path / "progress" / "state.pt", weights_only=False)["step"] == 4  # epoch 2, step 1
    fresh = load_model(model.source)
    resumed, collated, steps = scheduled_run(fresh, "ga_diff", "all_per_epoch", forget=forget, retain=retain,
                                             progress=Progress(tmp_path / "progress", {"job": "schedule"}, 0))
    assert resumed == straight and len(steps) == 2 + 2  # the last two steps: 2 + 2 retain batches
    for name, parameter in fresh.model.named_parameters():
        assert torch.equal(parameter.detach(), straight_weights[name]), name


def test_the_retain_schedule_is_a_setting_of_the_methods_with_a_retain_term_only():
    """A shared value reaches every method with a retain term and no other (their jobs' flags do
    not change); the command line refuses it for a method without one."""
    from pipeline_steps.unlearning.methods import REGISTRY
    from pipeline_steps.unlearning.settings import resolve

    block = {"methods": sorted(REGISTRY),
             "shared": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "retain_schedule": "all_per_epoch"}}
    for name, method in REGISTRY.items():
        loop = resolve(name, block)["loop"]
        assert loop.get("retain_schedule") == ("all_per_epoch" if method.uses_retain and method.trains else None), name
    with pytest.raises(ValueError, match="retain_schedule takes one of one_per_step, all_per_epoch"):
        UnlearnSettings(epochs=1, batch_size=2, learning_rate=1e-3, retain_schedule="every_epoch")


def test_unlearn_stage_refuses_the_retain_schedule_for_a_method_without_a_retain_term(benchmark, tiny_models,
                                                                                    tmp_path):
    with pytest.raises(SystemExit, match="method 'ga' has no retain term"):
        call_stage("unlearn", "--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10",
                   "--method", "ga", "--retain-schedule", "all_per_epoch", "--out", tmp_path / "out", "--device", "cpu")
    assert not (tmp_path / "out").exists()


def test_each_methods_retain_term_is_its_joint_steps_retain_term(loaded):
    """A retain-only step of the authors' schedule minimises exactly the retain term of the joint step."""
    from pipeline_steps.unlearning.methods import REGISTRY

    _, model = loaded
    encoder = PromptEncoder(model.processor)
    batches = {"forget": encoder.collate([encoder.encode(e) for e in forget_examples()[:2]]),
               "retain": encoder.collate([encoder.encode(e) for e in retain_examples()[:3]])}
    reference = load_model(model.source).model.eval()
    for name, method in REGISTRY.items():
        if not method.uses_retain:
            continue
        hparams = parse_hyperparameters(method, ["steering_mode=absolute", "layer=1"] if name == "rmu" else [])
        if method.alternative_answers(forget_examples()[:2]):
            batches["refusal"] = encoder.collate([encoder.encode(e) for e in method.alternative_answers(
                forget_examples()[:2])["refusal"]])
        with torch.no_grad():
            joint = method.terms(model.model, batches, hparams, reference).retain
            alone = method.retain_term(model.model, batches["retain"], hparams, reference)
        assert torch.equal(joint, alone), name


# --- LoRA unlearning (UnlearnSettings.lora_r; training/adapters.py) ------------------------------

@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_lora_unlearning_changes_only_adapter_weights_and_merges(benchmark, tiny_models, tmp_path, monkeypatch,
                                                                 family):
    """Through the stage: only the adapters receive gradients and the optimizer's steps, the base
    weights stay bit-identical while training, and the saved (merged) weights are W + (alpha/r) B A of
    the adapters as they ended, computed here by hand; every other tensor is the vanilla one, bit for bit."""
    from pipeline_steps.training import adapters

    vanilla = tiny_models[family]
    start = dict(load_model(str(vanilla)).model.named_parameters())
    seen, steps, ends = {}, [], {}
    attach, merge = adapters.attach_lora, adapters.merge_lora

    def attach_and_keep(*args, **kwargs):
        seen["model"] = attach(*args, **kwargs)
        seen["names"] = {id(p): n for n, p in seen["model"].named_parameters()}
        return seen["model"]

    def before_step(optimizer, args, kwargs):
        stepped = [seen["names"][id(p)] for group in optimizer.param_groups for p in group["params"]]
        with_grad = [n for n, p in seen["model"].named_parameters() if p.grad is not None]
        steps.append((stepped, with_grad))

    def check_then_merge(model):
        from peft.tuners.lora import LoraLayer

        for name, parameter in model.named_parameters():
            if ".lora_" not in name:  # base weights: frozen and untouched while the adapters trained
                base_name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
                assert not parameter.requires_grad and torch.equal(parameter.detach(), start[base_name]), name
        ends.update({name.removeprefix("base_model.model.") + ".weight":
                     (m.lora_A["default"].weight.detach().clone(), m.lora_B["default"].weight.detach().clone())
                     for name, m in model.named_modules() if isinstance(m, LoraLayer)})
        return merge(model)

    monkeypatch.setattr(adapters, "attach_lora", attach_and_keep)
    monkeypatch.setattr(adapters, "merge_lora", check_then_merge)
    hook = optimizer_hooks.register_optimizer_step_pre_hook(before_step)
    try:
        call_stage("unlearn", "--vanilla", vanilla, "--benchmark", benchmark, "--forget-ratio", "5", "--method",
                   "ga", "--out", tmp_path / "out", "--epochs", "1", "--batch-size", "16", "--learning-rate",
                   "1e-2", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0.1", "--device", "cpu")
    finally:
        hook.remove()

    assert steps and all(stepped and all(".lora_" in n for n in stepped) and set(with_grad) <= set(stepped)
                         for stepped, with_grad in steps)
    # Adapters on every linear layer but the output head (the method trains every parameter).
    rebuilt = load_model(str(vanilla)).model
    linear = {f"{n}.weight" for n, m in rebuilt.named_modules()
              if isinstance(m, torch.nn.Linear) and m is not rebuilt.get_output_embeddings()}
    assert set(ends) == linear and "lm_head.weight" not in ends
    apply_changes(rebuilt, tmp_path / "out" / "weights", model_fingerprint(vanilla))
    moved = 0
    for name, parameter in rebuilt.named_parameters():
        if name in ends:
            a, b = ends[name]
            torch.testing.assert_close(parameter.detach(), start[name] + (8 / 4) * (b @ a), rtol=1e-6, atol=1e-8,
                                       msg=name)
            moved += not torch.equal(parameter.detach(), start[name])
        else:
            assert torch.equal(parameter.detach(), start[name]), name
    assert moved > len(ends) / 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": "all-linear",
                                "adapted_modules": len(linear)}
    assert manifest["training"]["lora_r"] == 4
    assert json.loads(stage_output("inspect", tmp_path / "out", "--json"))["facts"]["lora"] == manifest["lora"]


@pytest.mark.parametrize("method,reason", [("mmunlearner", "its Fisher-ratio mask"), ("salun", "its saliency mask"),
                                           ("manu", "it prunes")])
def test_a_method_that_needs_the_weights_refuses_lora_before_any_work(benchmark, tiny_models, tmp_path, method,
                                                                      reason):
    with pytest.raises(SystemExit, match=f"method '{method}' cannot unlearn through LoRA .--lora-r 8.: {reason}"
                                         ".* run it without --lora-r"):
        call_stage("unlearn", "--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10",
                   "--method", method, "--lora-r", "8", "--out", tmp_path / "out", "--device", "cpu")
    assert not (tmp_path / "out").exists()


def test_lora_adapts_only_the_linear_layers_the_method_trains(tiny_models):
    """RMU trains two MLP down-projections: through LoRA, only those two weights change (its
    steered layer found through PEFT's wrapper), and the model keeps its own parameter names."""
    loaded = load_model(str(tiny_models["llava"]))
    method = get_method("rmu")
    hparams = parse_hyperparameters(method, ["layer=1", "updated_layers=2"])
    start = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    trainable = method.trainable(loaded.model, loaded.family, hparams, set(start))
    settings = UnlearnSettings(epochs=1, batch_size=2, learning_rate=1e-2, seed=0, lora_r=2)
    frozen = load_model(str(tiny_models["llava"])).model
    unlearn(loaded.model, method, PromptEncoder(loaded.processor), forget_examples(), retain_examples(), settings,
            hparams, Accelerator(cpu=True), trainable=trainable, reference_model=frozen)
    params = dict(loaded.model.named_parameters())
    assert params.keys() == start.keys()
    assert {n for n, p in params.items() if not torch.equal(p.detach(), start[n])} == trainable == {
        f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}


def test_lora_unlearning_refuses_a_sharded_launch_before_loading(benchmark, tiny_models, tmp_path, monkeypatch):
    from pipeline_steps.training.distributed import Processes

    monkeypatch.setattr(Processes, "shards", property(lambda self: True))  # as under an FSDP launch of 2
    with pytest.raises(SystemExit, match=r"LoRA unlearning \(--lora-r\) does not run sharded"):
        call_stage("unlearn", "--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "5",
                   "--method", "ga", "--lora-r", "4", "--out", tmp_path / "out", "--device", "cpu")
    assert not (tmp_path / "out").exists()
