"""Methods beyond the paper (SimNPO, IdkDPO, RMU), and the readings of the paper's KL_Min and NPO
(the authors' code, the paper's equations): each loss against a hand computation from unbatched,
unpadded forward passes, their data and trainable tensors, and their refusals."""

import json
import math

import pytest
import torch
from accelerate import Accelerator

from pipeline_steps.models.encoding import IGNORE_INDEX, Example, PromptEncoder
from pipeline_steps.models.families import FAMILIES
from pipeline_steps.models.loading import load_model
from pipeline_steps.study.config_check import ConfigError, check_unlearn_block
from pipeline_steps.unlearning.loop import UnlearnSettings, unlearn
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.unlearning.refusals import REFUSALS, refusal
from pipeline_steps.unlearning.settings import parse_hyperparameters

from helpers import call_stage, forget_examples, full_logprobs, retain_examples, single_inputs

NEW_METHODS = ("simnpo", "idk_dpo", "rmu")


def batch_of(encoder, examples):
    return encoder.collate([encoder.encode(e) for e in examples])


def perturbed_copy(model):
    """A frozen model that differs from ``model``, as a reference."""
    reference = load_model(model.source).model
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return reference


def answer_hidden(model, encoder, examples, layer):
    """Per example, decoder layer ``layer``'s output at the positions that predict its answer
    tokens, read from the model's own ``hidden_states`` (entry 0 is the embeddings), one unpadded
    example at a time: from the last prompt position to the one before the last answer token
    (the answer is the end of the row)."""
    result = []
    for example in examples:
        encoded = encoder.encode(example)
        hidden = model(**single_inputs(encoded), output_hidden_states=True).hidden_states[layer + 1][0].float()
        answer = (encoded["labels"].reshape(-1) != IGNORE_INDEX).nonzero().reshape(-1)
        first, last = int(answer[0]), int(answer[-1])
        assert last == hidden.shape[0] - 1 and len(answer) == last - first + 1
        result.append(hidden[first - 1:last])
    return result


def test_kl_min_loss_by_hand_in_each_reading(loaded):
    """The default is the authors' code, KL(p_vanilla || p_theta) plus the retain NLL; the paper's
    Eq. 17-18, KL(p_theta || p_vanilla) alone, is a setting; the two choices combine freely."""
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = perturbed_copy(model)
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    batches = {"forget": batch_of(encoder, forget), "retain": batch_of(encoder, retain)}
    method = get_method("kl_min")
    with torch.no_grad():
        current, vanilla = full_logprobs(model.model, encoder, retain), full_logprobs(reference, encoder, retain)
        # KL(p || q) per answer token, averaged per example, then over the batch.
        kl = lambda p, q: torch.stack([(a.exp() * (a - b)).sum(-1).mean() for (a, _), (b, _) in zip(p, q)]).mean()
        nll = lambda examples: torch.stack([-lp.gather(1, t[:, None]).mean()
                                            for lp, t in full_logprobs(model.model, encoder, examples)]).mean()
        authors, paper = kl(vanilla, current), kl(current, vanilla)
        assert not torch.isclose(authors, paper)  # the directions are told apart
        expected = {(): authors + nll(retain),
                    ("kl_direction=current_first", "retain_nll=false"): paper,
                    ("kl_direction=current_first",): paper + nll(retain),
                    ("retain_nll=false",): authors}
        for settings, retain_term in expected.items():
            terms = method.terms(model.model, batches, parse_hyperparameters(method, [*settings, "retain_weight=0.7"]),
                                 reference)
            torch.testing.assert_close(terms.forget, -nll(forget), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(terms.retain, 0.7 * retain_term, rtol=1e-4, atol=1e-5)


def test_npo_log_ratio_by_hand_of_token_means_and_of_sequence_sums(loaded):
    """The default log-ratio is of per-example mean answer-token log-probabilities (the authors'
    code); ``sequence_sum`` is of whole-answer sums (the paper's Eq. 19)."""
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = perturbed_copy(model)
    forget = forget_examples()[:3]
    batches = {"forget": batch_of(encoder, forget)}
    method, beta = get_method("npo"), 0.4
    with torch.no_grad():
        pooled = lambda m, pool: torch.stack([pool(lp.gather(1, t[:, None]))
                                              for lp, t in full_logprobs(m, encoder, forget)])
        for settings, pool in (((), torch.mean), (("log_ratio=sequence_sum",), torch.sum)):
            ratio = (pooled(model.model, pool) - pooled(reference, pool)).exp()  # pi_theta(y|x) / pi_ref(y|x)
            expected = (2 / beta * torch.log1p(ratio ** beta)).mean()
            terms = method.terms(model.model, batches, parse_hyperparameters(method, [f"beta={beta}", *settings]),
                                 reference)
            torch.testing.assert_close(terms.forget, expected, rtol=1e-4, atol=1e-5)
            assert terms.retain is None


@pytest.mark.parametrize("method,key,value,allowed", [
    ("kl_min", "kl_direction", "sideways", "vanilla_first, current_first"),
    ("npo", "log_ratio", "mean", "token_mean, sequence_sum"),
])
def test_kl_min_and_npo_refuse_an_unknown_reading(method, key, value, allowed):
    with pytest.raises(ValueError, match=f"hyper-parameter '{key}' takes one of {allowed}, not '{value}'"):
        parse_hyperparameters(get_method(method), [f"{key}={value}"])
    with pytest.raises(ConfigError) as error:
        check_unlearn_block({"methods": [method], "shared": {"learning_rate": 1e-4}, method: {key: value}}, "x")
    assert f"x.{method}.{key}: '{value}' is not one of" in str(error.value)


def test_table_notes_say_which_reading_of_kl_min_and_npo_ran():
    from pipeline_steps.unlearning.methods import REGISTRY

    kl, npo = get_method("kl_min"), get_method("npo")
    note = lambda method, *settings: method.table_note(parse_hyperparameters(method, list(settings)))
    assert note(kl).startswith("KL_Min's retain term: KL(p_vanilla || p_theta) + retain NLL (the authors' code")
    assert note(kl, "kl_direction=current_first", "retain_nll=false").startswith(
        "KL_Min's retain term: KL(p_theta || p_vanilla) alone (")
    assert note(npo).startswith("NPO (beta 0.4): log-ratio of the answer tokens' mean log-probability (")
    assert note(npo, "beta=0.1", "log_ratio=sequence_sum").startswith(
        "NPO (beta 0.1): log-ratio of the answer tokens' sum log-probability (")
    assert all(method.table_note(method.Hyperparameters()) is None
               for name, method in REGISTRY.items() if name not in ("kl_min", "npo"))


def test_simnpo_loss_by_hand(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    batches = {"forget": batch_of(encoder, forget), "retain": batch_of(encoder, retain)}
    beta, gamma = 1.5, 0.3
    with torch.no_grad():
        # (beta/|y|) log pi(y|x): the mean answer-token log-probability, scaled.
        mean_lp = torch.stack([lp.gather(1, t[:, None]).mean() for lp, t in full_logprobs(model.model, encoder, forget)])
        expected = (-(2 / beta) * torch.log(torch.sigmoid(-beta * mean_lp - gamma))).mean()
        retain_nll = torch.stack([-lp.gather(1, t[:, None]).mean()
                                  for lp, t in full_logprobs(model.model, encoder, retain)]).mean()
        method = get_method("simnpo")
        terms = method.terms(model.model, batches,
                             parse_hyperparameters(method, [f"beta={beta}", f"gamma={gamma}", "retain_weight=0.7"]))
    torch.testing.assert_close(terms.forget, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.retain, 0.7 * retain_nll, rtol=1e-4, atol=1e-5)
    # The margin matters: gamma moves the loss, in the direction the formula says.
    with torch.no_grad():
        no_margin = method.terms(model.model, batches, parse_hyperparameters(method, [f"beta={beta}"]))
    assert no_margin.forget < terms.forget


def test_idk_dpo_loss_by_hand(loaded):
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = perturbed_copy(model)
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    refused = [Example(e.question, refusal(e), e.image) for e in forget]
    batches = {"forget": batch_of(encoder, forget), "refusal": batch_of(encoder, refused),
               "retain": batch_of(encoder, retain)}
    beta = 0.3
    with torch.no_grad():
        seq = lambda m, ex: torch.stack([lp.gather(1, t[:, None]).sum() for lp, t in full_logprobs(m, encoder, ex)])
        margin = (seq(model.model, refused) - seq(reference, refused)) - (seq(model.model, forget) - seq(reference, forget))
        expected = (-(2 / beta) * torch.log(torch.sigmoid(beta * margin))).mean()
        retain_nll = torch.stack([-lp.gather(1, t[:, None]).mean()
                                  for lp, t in full_logprobs(model.model, encoder, retain)]).mean()
        method = get_method("idk_dpo")
        terms = method.terms(model.model, batches, parse_hyperparameters(method, [f"beta={beta}", "retain_weight=0.7"]),
                             reference)
    torch.testing.assert_close(terms.forget, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.retain, 0.7 * retain_nll, rtol=1e-4, atol=1e-5)
    # Against itself every log-ratio is 0: the loss is (2/beta) log 2 exactly.
    with torch.no_grad():
        same = method.terms(model.model, batches, parse_hyperparameters(method, [f"beta={beta}"]), model.model)
    torch.testing.assert_close(same.forget, torch.tensor(2 / beta * math.log(2)), rtol=1e-5, atol=1e-6)


def rmu_forget_term_by_hand(model, encoder, examples, layer, c, seed):
    """RMU's forget term from unpadded forward passes: per example, the mean over its answer tokens
    of ||h - c u||^2 / width, then the mean over the examples."""
    hidden = model.config.get_text_config().hidden_size
    u = torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
    target = c * u / torch.sqrt((u ** 2).sum())
    return torch.stack([((h - target) ** 2).sum(1).mean() / hidden
                        for h in answer_hidden(model, encoder, examples, layer)]).mean()


def test_rmu_loss_by_hand(loaded):
    """WMDP's absolute rule (``steering_mode: absolute``): c is ``steering_coeff`` itself."""
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = perturbed_copy(model)
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    batches = {"forget": batch_of(encoder, forget), "retain": batch_of(encoder, retain)}
    layer, c, alpha, seed = 0, 4.0, 50.0, 3
    with torch.no_grad():
        hidden = model.model.config.get_text_config().hidden_size
        forget_term = rmu_forget_term_by_hand(model.model, encoder, forget, layer, c, seed)
        retain_term = torch.stack([((h - r) ** 2).sum(1).mean() / hidden for h, r in
                                   zip(answer_hidden(model.model, encoder, retain, layer),
                                       answer_hidden(reference, encoder, retain, layer))]).mean()
        method = get_method("rmu")
        hparams = parse_hyperparameters(method, [f"layer={layer}", f"steering_coeff={c}", f"alpha={alpha}",
                                                 f"direction_seed={seed}", "steering_mode=absolute"])
        assert method.resolve_hyperparameters(hparams, reference, encoder, forget, 2) is hparams  # nothing to do
        terms = method.terms(model.model, batches, hparams, reference)
    torch.testing.assert_close(terms.forget, forget_term, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms.retain, alpha * retain_term, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the retain term is 0 against the model itself
        assert method.terms(model.model, batches, hparams, model.model).retain.item() < 1e-9


def frozen_answer_norm(model, encoder, examples, layer):
    """The mean over ``examples`` of each one's mean ||h|| at decoder layer ``layer`` over its answer
    tokens, from unpadded forward passes."""
    return torch.stack([h.norm(dim=1).mean() for h in answer_hidden(model, encoder, examples, layer)]).mean()


def test_rmu_relative_coefficient_is_the_scale_times_the_frozen_activation_norm(loaded):
    """The default rule: c = steering_coeff x the frozen model's mean activation norm at ``layer``
    over the forget answers, resolved once by ``resolve_hyperparameters`` (in uneven batches here); the forget
    term with that c against a hand computation."""
    _, model = loaded
    encoder = PromptEncoder(model.processor)
    reference = perturbed_copy(model)  # the frozen model differs: its norm is the one that counts
    forget, retain = forget_examples()[:3], retain_examples()[:3]
    batches = {"forget": batch_of(encoder, forget), "retain": batch_of(encoder, retain)}
    method, layer, scale = get_method("rmu"), 0, 3.0  # layer 0: the last one's hidden_states are normed
    hparams = parse_hyperparameters(method, [f"layer={layer}"])
    assert (hparams.steering_coeff, hparams.steering_mode, hparams.alpha) == (scale, "relative", 1200.0)
    with pytest.raises(ValueError, match="resolved by `resolve_hyperparameters` before the first step"):
        method.terms(model.model, batches, hparams, reference)
    with torch.no_grad():
        norm = frozen_answer_norm(reference, encoder, forget, layer)
        assert not torch.isclose(norm, frozen_answer_norm(model.model, encoder, forget, layer), rtol=1e-3)
        resolved = method.resolve_hyperparameters(hparams, reference, encoder, forget, 2)
        assert resolved.steering_mode == "absolute" and resolved.layer == layer
        torch.testing.assert_close(torch.tensor(resolved.steering_coeff), scale * norm, rtol=1e-5, atol=1e-6)
        terms = method.terms(model.model, batches, resolved, reference)
        expected = rmu_forget_term_by_hand(model.model, encoder, forget, layer, scale * norm, 0)
    torch.testing.assert_close(terms.forget, expected, rtol=1e-4, atol=1e-5)


def test_rmu_steps_read_the_coefficient_fixed_before_the_first(loaded):
    """The loop resolves the coefficient once, on the whole forget set, from the frozen model: every
    step's terms see the same absolute c, the scale times the frozen model's norm."""
    _, model = loaded
    encoder, method = PromptEncoder(model.processor), get_method("rmu")
    forget, retain = forget_examples()[:4], retain_examples()[:4]
    frozen = frozen_model(model, method)
    with torch.no_grad():
        expected = 3.0 * frozen_answer_norm(frozen, encoder, forget, 0)
    seen, original = [], method.terms

    def spy(model, batches, hparams, reference_model=None):
        seen.append(hparams)
        return original(model, batches, hparams, reference_model)

    method.terms = spy
    try:
        unlearn(model.model, method, encoder, forget, retain,
                UnlearnSettings(epochs=1, batch_size=2, learning_rate=1e-3, max_grad_norm=1.0, seed=0),
                parse_hyperparameters(method, ["layer=0"]), Accelerator(cpu=True),
                trainable={name for name, _ in model.model.named_parameters()}, reference_model=frozen)
    finally:
        del method.terms
    assert len(seen) == 2 and all(h.steering_mode == "absolute" for h in seen)
    for hparams in seen:
        torch.testing.assert_close(torch.tensor(hparams.steering_coeff), expected, rtol=1e-5, atol=1e-6)


def test_rmu_trains_the_down_projections_up_to_its_layer_and_refuses_a_missing_layer(loaded):
    family, model = loaded
    method, everything = get_method("rmu"), {name for name, _ in model.model.named_parameters()}
    pick = lambda *hparams: method.trainable(model.model, FAMILIES[family], parse_hyperparameters(method, hparams),
                                             everything)
    assert pick("layer=1", "updated_layers=3") == {f"model.language_model.layers.{i}.mlp.down_proj.weight"
                                                   for i in (0, 1)}
    assert pick("layer=1", "updated_layers=1") == {"model.language_model.layers.1.mlp.down_proj.weight"}
    assert pick("layer=0", "updated_layers=0") == everything
    with pytest.raises(ValueError, match=f"decoder layer 2 does not exist: the {family} model's language model "
                                         r"has 2 \(0-1\)"):
        pick("layer=2")
    vision = {name for name in everything if FAMILIES[family].in_group(name, "vision")}
    with pytest.raises(ValueError, match="none of which is in the job's module group"):
        method.trainable(model.model, FAMILIES[family], parse_hyperparameters(method, ["layer=1"]), vision)


def test_refusals_are_fixed_per_example_varied_and_tokenize_in_both_families(tiny_models):
    examples = forget_examples() + retain_examples()
    chosen = [refusal(e) for e in examples]
    assert chosen == [refusal(Example(e.question, e.answer)) for e in examples]  # not the image, not the run
    assert set(chosen) <= set(REFUSALS) and len(set(chosen)) >= 3
    for family, path in tiny_models.items():
        tokenizer = load_model(str(path)).processor.tokenizer
        for text in REFUSALS:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, (family, text)
            assert tokenizer.decode(ids) == text, (family, text)


def short_run(loaded_model, method_name, *hparams, epochs=3, learning_rate=1e-2):
    """A few steps of ``method_name`` on six forget and six retain examples; the batches each step's
    ``terms`` saw, and the log."""
    model = loaded_model.model
    method = get_method(method_name)
    seen = []
    original = method.terms

    def spy(model, batches, hparams, reference_model=None):
        seen.append({name: {k: v.clone() for k, v in batch.items()} for name, batch in batches.items()})
        return original(model, batches, hparams, reference_model)

    settings = UnlearnSettings(epochs=epochs, batch_size=2, learning_rate=learning_rate, max_grad_norm=1.0, seed=0)
    method.terms = spy
    try:
        history = unlearn(model, method, PromptEncoder(loaded_model.processor), forget_examples(), retain_examples(),
                          settings, parse_hyperparameters(method, list(hparams)), Accelerator(cpu=True),
                          trainable={name for name, _ in model.named_parameters()},
                          reference_model=frozen_model(loaded_model, method))
    finally:
        del method.terms
    return seen, history


def frozen_model(loaded_model, method):
    return load_model(loaded_model.source).model.eval() if method.frozen_model else None


@pytest.mark.parametrize("method,hparams", [("simnpo", ("beta=0.1",)), ("idk_dpo", ("beta=0.5",)),
                                            ("rmu", ("layer=1", "steering_mode=absolute", "steering_coeff=20",
                                                     "alpha=10"))])
def test_each_new_method_unlearns_on_both_families(loaded, method, hparams):
    """A few steps lower the method's forget term over the whole forget set, with the retain term on.

    SimNPO at a small beta: the untrained model's answer NLL (about log 600) already saturates
    the sigmoid at the default beta, where the forget gradient vanishes by design."""
    _, model = loaded
    encoder, chosen = PromptEncoder(model.processor), get_method(method)
    frozen, parsed = frozen_model(model, chosen), parse_hyperparameters(chosen, list(hparams))
    everything = {"forget": batch_of(encoder, forget_examples()), "retain": batch_of(encoder, retain_examples())}
    everything |= {name: batch_of(encoder, examples)
                   for name, examples in chosen.alternative_answers(forget_examples()).items()}

    def forget_term():
        with torch.no_grad():
            return chosen.terms(model.model, everything, parsed, frozen).forget.item()

    before = forget_term()
    _, history = short_run(model, method, *hparams, learning_rate=1e-3)
    assert len(history) == 9 and {"forget_loss", "retain_loss"} <= set(history[0])
    assert forget_term() < before


def test_idk_dpo_steps_pair_each_forget_example_with_its_own_refusal(loaded):
    _, model = loaded
    seen, _ = short_run(model, "idk_dpo", epochs=2)
    tokenizer = model.processor.tokenizer
    by_question = {}
    for batches in seen:
        forget, refused = batches["forget"], batches["refusal"]
        assert forget["input_ids"].shape[0] == refused["input_ids"].shape[0] == 2
        for row in range(2):
            prompt = lambda b: [t for t, l, m in zip(b["input_ids"][row].tolist(), b["labels"][row].tolist(),
                                                     b["attention_mask"][row].tolist()) if l == IGNORE_INDEX and m]
            answer = lambda b: tokenizer.decode([t for t in b["labels"][row].tolist() if t != IGNORE_INDEX])
            assert prompt(forget) == prompt(refused)  # the same question (and image tokens)
            assert any(text in answer(refused) for text in REFUSALS)
            by_question.setdefault(answer(forget), set()).add(answer(refused))
        if "pixel_values" in forget:  # the same images, in the same order
            assert torch.equal(forget["pixel_values"], refused["pixel_values"])
    assert len(by_question) == 6 and all(len(refusals) == 1 for refusals in by_question.values())


@pytest.mark.parametrize("method,assignment,message", [
    ("simnpo", "beta=0", "hyper-parameter 'beta' of method 'simnpo' must be > 0, not 0"),
    ("simnpo", "gamma=-0.1", "hyper-parameter 'gamma' of method 'simnpo' must be >= 0, not -0.1"),
    ("idk_dpo", "beta=-1", "hyper-parameter 'beta' of method 'idk_dpo' must be > 0, not -1"),
    ("rmu", "layer=-1", "hyper-parameter 'layer' of method 'rmu' must be >= 0, not -1"),
    ("rmu", "steering_coeff=0", "hyper-parameter 'steering_coeff' of method 'rmu' must be > 0, not 0"),
    ("rmu", "layer=1.5", "hyper-parameter 'layer' of method 'rmu' takes a int, not '1.5'"),
    ("rmu", "beta=1", "method 'rmu' has no hyper-parameter 'beta'"),
    ("rmu", "steering_mode=scaled", "hyper-parameter 'steering_mode' takes one of relative, absolute, not 'scaled'"),
    ("salun", "mask_fraction=0", "hyper-parameter 'mask_fraction' of method 'salun' must be > 0, not 0"),
    ("salun", "mask_fraction=1.5", "hyper-parameter 'mask_fraction' of method 'salun' must be <= 1, not 1.5"),
])
def test_bad_hyperparameters_are_refused_on_the_command_line(method, assignment, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hyperparameters(get_method(method), [assignment])


@pytest.mark.parametrize("block,message", [
    ({"simnpo": {"gamma": -1}}, "x.simnpo.gamma: -1 is less than the minimum of 0"),
    ({"idk_dpo": {"beta": 0}}, "x.idk_dpo.beta: 0 is less than or equal to the minimum of 0"),
    ({"rmu": {"updated_layers": 2.5}}, "x.rmu.updated_layers: 2.5 is not of type 'integer'"),
    ({"rmu": {"retain_weight": 1}}, "x.rmu: Additional properties are not allowed ('retain_weight'"),
    ({"salun": {"mask_fraction": [0.5, 0]}}, "x.salun.mask_fraction[1]: 0 is less than or equal to the minimum of 0"),
])
def test_bad_hyperparameters_are_refused_in_a_config(block, message):
    with pytest.raises(ConfigError) as error:
        check_unlearn_block({"methods": list(NEW_METHODS), "shared": {"learning_rate": 1e-4}, **block}, "x")
    assert message in str(error.value)


@pytest.mark.slow
def test_rmu_stage_changes_only_its_down_projections(benchmark, tiny_models, tmp_path):
    model_dir = tiny_models["llava"]
    call_stage("unlearn", "--vanilla", model_dir, "--benchmark", benchmark, "--forget-ratio", "10", "--method", "rmu",
               "--hparam", "layer=1", "--hparam", "updated_layers=2", "--hparam", "steering_coeff=20",
               "--out", tmp_path / "out", "--epochs", "1", "--batch-size", "8", "--learning-rate", "1e-3",
               "--device", "cpu")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    index = json.loads((tmp_path / "out" / "weights.safetensors.index.json").read_text())
    stored = {name.split("::")[0] for name in index["weight_map"]}
    assert stored == {f"model.language_model.layers.{i}.mlp.down_proj.weight" for i in (0, 1)}
    assert manifest["hyperparameters"]["layer"] == 1 and manifest["changed_tensors"] == 2
