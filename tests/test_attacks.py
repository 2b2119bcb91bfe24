"""Attacks on unlearned models (pipeline_steps/attacks/): the membership-inference scores and AUCs
against hand computations, relearning's data kept apart from what it is read on, quantized
weights within bitsandbytes' rounding error, and the attack stage on a tiny model."""

from __future__ import annotations

import copy
import csv
import json
import math
import zlib

import numpy as np
import pytest
import torch

from pipeline_steps.attacks import get_attack, parse_settings
from pipeline_steps.attacks.membership import auc, lowest_mean, privleak_gap, token_scores
from pipeline_steps.attacks.quantize import QuantizeSettings, quantized
from pipeline_steps.attacks.relearn import RelearnSettings, relearning_examples
from pipeline_steps.benchmarks.layouts import LAYOUTS
from pipeline_steps.benchmarks.records import forget_split, read_split
from pipeline_steps.models.encoding import IGNORE_INDEX
from pipeline_steps.reporting.estimates import half
from pipeline_steps.study.config_check import ConfigError, check_config

from helpers import SMALL, call_stage


def test_auc_is_the_share_of_member_non_member_pairs_the_members_win():
    members, nonmembers = [0.9, 0.4, 0.4], [0.4, 0.1]
    # 0.9 beats both; each 0.4 ties one (half) and beats one: (2 + 1.5 + 1.5) / 6.
    assert auc(members, nonmembers) == pytest.approx(5 / 6)
    assert auc(nonmembers, members) == pytest.approx(1 / 6)
    assert auc([1, 1], [1, 1, 1]) == pytest.approx(0.5)


def test_privleak_is_muses_relative_gap_on_one_minus_the_auc():
    """MUSE's PrivLeak (open-unlearning's ``privleak``): 100 ((1 - a) - (1 - b)) / (1 - b), a the
    variant's AUC and b the oracle's; negative for a variant that still tells its members apart."""
    def pairs(scores, people):
        return [(person, s) for person, s in zip(people, scores)]

    members, nonmembers = ["m1", "m1", "m2"], ["n1", "n2", "n2"]
    variant = (pairs([2.0, 3.0, 0.5], members), pairs([0.0, 1.0, 0.6], nonmembers))  # wins 3 + 3 + 1 of 9
    oracle = (pairs([0.0, 1.0, 0.5], members), pairs([0.0, 1.0, 0.6], nonmembers))  # 0.5+0+0 + 1+0.5+1 + 1+0+0
    a, b = 7 / 9, 4 / 9
    result = privleak_gap(variant, oracle)
    assert result["gap"]["value"] == pytest.approx(a - b)
    assert result["privleak"]["value"] == pytest.approx(100 * ((1 - a) - (1 - b)) / (1 - b))
    assert result["privleak"]["value"] == pytest.approx(-60.0)
    assert result["privleak"]["low"] <= -60.0 <= result["privleak"]["high"]
    same = privleak_gap(variant, variant)
    assert same["gap"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert same["privleak"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="same examples"):
        privleak_gap(variant, (oracle[0][:2], oracle[1]))


def test_auc_interval_resamples_members_and_nonmembers_by_person():
    """Five member people, each with 20 pairs scored alike: the AUC's spread is which people were
    drawn, so the interval over people is far wider than one over 100 independent pairs; and the
    AUC of resampled people weighs each drawn person's pairs as the plain AUC of those pairs."""
    from pipeline_steps.attacks.membership import MemberWins, auc_estimate
    from pipeline_steps.reporting.estimates import multiplicity

    members = [(f"m{p}", float(p)) for p in range(5) for _ in range(20)]  # people scoring 0..4
    nonmembers = [(f"n{p}", float(p) + 0.5) for p in range(5) for _ in range(20)]  # 0.5..4.5
    estimate = auc_estimate(members, nonmembers)
    assert estimate["auc"] == pytest.approx(10 / 25) and (estimate["member_people"], estimate["nonmember_people"]) == (5, 5)
    assert estimate["high"] - estimate["low"] > 0.4
    wins = MemberWins(members, nonmembers)
    drawn_m, drawn_n = np.array([0, 0, 4, 2, 2]), np.array([1, 1, 1, 3, 0])
    resampled = [(f"m{p}", float(p)) for p in drawn_m for _ in range(20)]
    resampled_n = [(f"n{p}", float(p) + 0.5) for p in drawn_n for _ in range(20)]
    expected = auc([s for _, s in resampled], [s for _, s in resampled_n])
    assert wins.resampled(multiplicity(drawn_m, 5), multiplicity(drawn_n, 5)) == pytest.approx(expected)


def test_scores_match_a_hand_computation():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]])  # one example, 3 positions
    targets = torch.tensor([[0, 2, IGNORE_INDEX]])  # two answer tokens
    scores = token_scores(logits, targets, k=0.5)

    def log_softmax(row):
        total = math.log(sum(math.exp(v) for v in row))
        return [v - total for v in row]

    first, second = log_softmax([2.0, 0.0, 0.0]), log_softmax([0.0, 1.0, 0.0])
    picked = [first[0], second[2]]
    assert float(scores["loss"][0]) == pytest.approx(sum(picked) / 2)
    # k = 0.5 of 2 tokens: the lowest one.
    assert float(scores["min_k"][0]) == pytest.approx(min(picked))

    def standardised(row, token):
        probabilities = [math.exp(v) for v in row]
        mean = sum(p * v for p, v in zip(probabilities, row))
        spread = math.sqrt(sum(p * v * v for p, v in zip(probabilities, row)) - mean ** 2)
        return (row[token] - mean) / spread

    assert float(scores["min_k_plus_plus"][0]) == pytest.approx(min(standardised(first, 0), standardised(second, 2)),
                                                                rel=1e-5)
    # At least one token, and the mean of the lowest floor(k * n) when k * n >= 1.
    values = torch.tensor([[-3.0, -1.0, -2.0, -0.5], [-1.0, -4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    assert lowest_mean(values, mask, 0.5).tolist() == pytest.approx([-2.5, -4.0])
    assert lowest_mean(values, mask, 0.1).tolist() == pytest.approx([-3.0, -4.0])
    assert len(zlib.compress("chef".encode())) > 0


@pytest.mark.slow
def test_membership_inference_stage_scores_forget_and_holdout_pairs(benchmark, tiny_models, tmp_path):
    out = tmp_path / "mia"
    call_stage("attack", "--kind", "mia", "--model", tiny_models["llava"], "--benchmark", benchmark,
               "--forget-ratio", "10", "--out", out, "--batch-size", "16", "--threads", "1")
    record = json.loads((out / "attack.json").read_text())
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    forget, holdout = read_split(benchmark, forget_split(10)), read_split(benchmark, "holdout")
    for membership, records in (("member", forget), ("nonmember", holdout)):
        for modality in ("vqa", "text"):
            expected = sum(1 for r in records for p in r.train if p.modality == modality)
            assert sum(1 for r in rows if r["membership"] == membership and r["modality"] == modality) == expected
    for group in ("vqa", "text", "all"):
        for score in ("loss", "zlib", "min_k", "min_k_plus_plus"):
            chosen = [r for r in rows if group in ("all", r["modality"])]
            members = [r[score] for r in chosen if r["membership"] == "member"]
            nonmembers = [r[score] for r in chosen if r["membership"] == "nonmember"]
            value = record["result"]["auc"][group][score]
            assert value["auc"] == pytest.approx(float(auc(members, nonmembers)))
            assert value["low"] <= value["auc"] <= value["high"]
            assert value["member_people"] == len({r["profile"] for r in chosen if r["membership"] == "member"}) > 1
    assert all(r["zlib"] == pytest.approx(r["loss"] / len(zlib.compress(r["answer"].encode()))) for r in rows)


def test_attack_settings_are_checked():
    with pytest.raises(ValueError, match="has no setting 'kk'"):
        parse_settings(get_attack("mia"), '{"kk": 0.2}')
    with pytest.raises(ValueError, match="must be <= 1"):
        parse_settings(get_attack("mia"), '{"k": 2.0}')
    with pytest.raises(ValueError, match="is one of"):
        parse_settings(get_attack("quantize"), '{"bits": 3}')
    assert parse_settings(get_attack("relearn"), '{"data": "retain"}').data == "retain"


@pytest.mark.parametrize("attacks,message", [
    ({"mia": {}}, "attacks.mia: MIA needs never-trained people, and benchmark 'mini' has none: set its "
                  "synthetic.holdout_profiles > 0"),
    ({"jailbreak": {}}, "attacks.jailbreak: unknown attack kind 'jailbreak'"),
    ({"relearn": {"steps": 3}}, "attacks.relearn: Additional properties are not allowed ('steps' was unexpected)"),
    ({"relearn_retain": {"kind": "relearn", "data": "unrelated"}}, "attacks.relearn_retain.data: 'unrelated' is not one of"),
    ({"q": {"kind": "quantize", "variants": "some"}}, "attacks.q.variants: 'some' is not one of"),
])
def test_bad_attack_entries_are_refused_by_the_config_check(attacks, message):
    config = copy.deepcopy(SMALL)
    config["experiments"][0]["attacks"] = attacks
    with pytest.raises(ConfigError, match="experiments\\[1\\]." + message.replace("(", r"\(").replace(")", r"\)")):
        check_config(config)


def test_relearning_trains_on_one_half_of_the_forget_people_and_is_read_on_the_other(benchmark):
    forget = read_split(benchmark, forget_split(10))
    pairs = relearning_examples(benchmark, 10, RelearnSettings())
    relearned = {profile for profile, _ in pairs}
    # What the evaluation of the relearned model reads: the Forget VQA items of the report half.
    records, _ = LAYOUTS["mllmu_bench"].records(benchmark, 10)["forget_vqa"]
    items = [(r.id, 1.0) for r in records for item in r.multiple_choice if item.modality == "vqa"]
    evaluated = {profile for profile, _ in half(items, "report")}
    assert relearned and evaluated and not relearned & evaluated
    assert relearned | evaluated == {r.id for r in forget}
    # Every VQA training pair of the relearned people, and of no one else.
    assert len(pairs) == sum(1 for r in forget if r.id in relearned for p in r.train if p.modality == "vqa")
    retain = {profile for profile, _ in relearning_examples(benchmark, 10, RelearnSettings(data="retain"))}
    assert len(retain) == len(relearned) and not retain & {r.id for r in forget}


@pytest.mark.slow
def test_relearning_stage_stores_a_model_the_evaluation_loads(benchmark, tiny_models, tmp_path):
    from pipeline_steps.models.loading import load_model, model_fingerprint
    from pipeline_steps.unlearning.weights import apply_changes

    out = tmp_path / "relearn"
    call_stage("attack", "--kind", "relearn", "--settings", '{"batch_size": 16}', "--model", tiny_models["llava"],
               "--benchmark", benchmark, "--forget-ratio", "10", "--out", out, "--threads", "1")
    record = json.loads((out / "attack.json").read_text())
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps[-1] == record["result"]["steps"] == math.ceil(record["result"]["pairs"] / 16)
    assert record["stored"]["changed_tensors"] > 0
    model = load_model(str(tiny_models["llava"])).model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    apply_changes(model, out / "weights", model_fingerprint(tiny_models["llava"]))
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_weights_are_within_half_a_step_of_their_block_scale(quant_type):
    import bitsandbytes.functional as bnb

    weight = torch.randn(48, 80, generator=torch.Generator().manual_seed(0))
    settings = QuantizeSettings(bits=4, quant_type=quant_type, blocksize=64)
    value = quantized(weight, settings)
    code = bnb.get_4bit_type(quant_type, device="cpu").sort().values
    largest_gap = float((code[1:] - code[:-1]).max())
    blocks = weight.reshape(-1, 64)
    # bitsandbytes' documented 4-bit scheme: each block scaled by its absmax onto the code's [-1, 1]
    # and rounded to the nearest code value, so no entry moves more than half the widest gap.
    bound = blocks.abs().amax(dim=1, keepdim=True) * largest_gap / 2
    assert ((value.reshape(-1, 64) - blocks).abs() <= bound * (1 + 1e-5)).all()
    assert value.shape == weight.shape and not torch.equal(value, weight)
    assert len(torch.unique(value.reshape(-1, 64)[0])) <= 16  # one block holds at most 16 values


def test_8bit_weights_are_within_half_a_step_of_their_row_scale():
    weight = torch.randn(32, 50, generator=torch.Generator().manual_seed(1))
    value = quantized(weight, QuantizeSettings(bits=8))
    # Row-wise absmax int8 (LLM.int8's weights): steps of absmax / 127, rounded to the nearest.
    bound = weight.abs().amax(dim=1, keepdim=True) / 127 / 2
    assert ((value - weight).abs() <= bound * (1 + 1e-4) + 1e-7).all()
    assert not torch.equal(value, weight)


@pytest.mark.slow
def test_quantize_stage_leaves_the_vision_tower_unless_asked(benchmark, tiny_models, tmp_path):
    from pipeline_steps.models.loading import load_model, model_fingerprint
    from pipeline_steps.unlearning.weights import apply_changes

    source = tiny_models["llava"]
    for vision in (False, True):
        out = tmp_path / f"vision_{vision}"
        call_stage("attack", "--kind", "quantize", "--settings", json.dumps({"bits": 4, "vision": vision}),
                   "--model", source, "--benchmark", benchmark, "--forget-ratio", "10", "--out", out, "--threads", "1")
        model = load_model(str(source)).model
        family = load_model(str(source)).family
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        apply_changes(model, out / "weights", model_fingerprint(source))
        moved = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
        assert any(family.module_of(n) == "language" for n in moved)
        assert any(family.module_of(n) == "vision" for n in moved) == vision
        assert not any(n.startswith("lm_head") or not n.endswith("weight") for n in moved)


def _evaluation(directory, correct: dict[str, list[bool]], changes: str = "", retain=(True, False, True, False)):
    """A hand-made evaluation: Forget VQA items of each person and Retain VQA items of four others
    (the other Table 1 columns empty)."""
    directory.mkdir(parents=True)
    columns = {"forget_vqa": [(p, c) for p, answers in correct.items() for c in answers],
               "retain_vqa": [(f"r{i}", c) for i, c in enumerate(retain)]}
    table = {column: None for column in LAYOUTS["mllmu_bench"].table1}
    table |= {column: sum(c for _, c in items) / len(items) for column, items in columns.items()}
    (directory / "metrics.json").write_text(json.dumps({"table": table, "primary_scoring": "likelihood",
                                                        "changes": changes}))
    (directory / "predictions.jsonl").write_text("".join(
        json.dumps({"column": column, "kind": "multiple_choice", "profile": p, "likelihood": {"correct": c}}) + "\n"
        for column, items in columns.items() for p, c in items))
    return directory / "metrics.json"


def _membership(directory, members: list[float], nonmembers: list[float]):
    directory.mkdir(parents=True)
    rows = [{"membership": m, "modality": "vqa", "profile": "x", **{s: v for s in ("loss", "zlib", "min_k", "min_k_plus_plus")}}
            for m, values in (("member", members), ("nonmember", nonmembers)) for v in values]
    (directory / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    value = {"auc": float(auc(members, nonmembers)), "low": 0.0, "high": 1.0}
    (directory / "attack.json").write_text(json.dumps({"kind": "mia", "result": {
        "auc": {"vqa": {s: value for s in ("loss", "zlib", "min_k", "min_k_plus_plus")}}}}))
    return directory / "attack.json"


def test_robustness_table_reads_each_attack_on_its_people_and_the_gap_to_the_oracle(tmp_path):
    people = {"1": [True, True], "2": [False, False], "3": [True, False], "4": [False, False]}  # report half: 2, 4
    cells = []
    for variant, members in (("vanilla", [3.0, 2.0]), ("oracle", [0.0, 1.0])):
        cells.append(f"m|{variant}|b|-={_evaluation(tmp_path / 'eval' / variant, people)}")
        attacked = tmp_path / "relearn" / variant
        attacked.mkdir(parents=True)
        (attacked / "attack.json").write_text(json.dumps({"kind": "relearn"}))
        relearned = {"1": [True, True], "2": [True, False], "3": [True, True], "4": [False, False]}
        metrics = _evaluation(tmp_path / "relearn_eval" / variant, relearned, changes=str(attacked / "weights"))
        cells.append(f"m|{variant}|b|relearn={metrics}")
        cells.append(f"m|{variant}|b|mia={_membership(tmp_path / 'mia' / variant, members, [0.0, 1.0])}")
    out = tmp_path / "robustness"
    call_stage("render_robustness", "--title", "R", *[a for c in cells for a in ("--cell", c)], "--out", out,
              "--figure", tmp_path / "figure")
    with open(tmp_path / "robustness.csv") as handle:
        header, *body = list(csv.reader(handle))
    rows = {row[2]: dict(zip(header, row)) for row in body}
    vanilla = rows["Vanilla"]
    assert vanilla["Forget VQA"].startswith("37.5 ")  # 3 of 8
    assert vanilla["Forget VQA (report half)"].startswith("0.0 ")  # people 2 and 4
    assert vanilla["relearn: Forget VQA (report half)"].startswith("25.0 ")  # 1 of their 4 after relearning
    assert vanilla["mia: AUC LOSS"].startswith("1.00 ")
    assert vanilla["mia: AUC gap to oracle (LOSS)"].startswith("0.50 ")  # 1 - 0.5, as the hand count above
    assert vanilla["mia: privleak % (LOSS)"].startswith("-100.0 ")  # 100 ((1 - 1) - (1 - 0.5)) / (1 - 0.5)
    assert set(rows) == {"Vanilla", "Oracle (retain only)"}
    assert "\nMultiple-choice accuracies by likelihood scoring (evaluation.primary).\n" in (tmp_path / "robustness.md").read_text()
    assert (tmp_path / "figure.png").stat().st_size > 10_000 and (tmp_path / "figure.pdf").exists()


@pytest.mark.slow
def test_probes_rewrite_every_forget_vqa_question_and_keep_the_answer_out_of_the_context(benchmark, tiny_models,
                                                                                         tmp_path):
    from pipeline_steps.attacks.probe import ProbeSettings, probed_question

    forget = read_split(benchmark, forget_split(10))
    record = forget[0]
    item = next(i for i in record.multiple_choice if i.modality == "vqa")
    assert probed_question(record, item, ProbeSettings(style="name")).startswith(f"The person in the image is {record.name}.")
    context = probed_question(record, item, ProbeSettings(style="context", context_facts=10))
    assert context.endswith(item.question) and len(context) > len(item.question)
    assert not any(f" {option}." in context for option in item.options.values())

    out = tmp_path / "probe"
    call_stage("attack", "--kind", "probe", "--settings", '{"style": "dialogue"}', "--model", tiny_models["llava"],
               "--benchmark", benchmark, "--forget-ratio", "10", "--out", out, "--threads", "1")
    result = json.loads((out / "attack.json").read_text())["result"]
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    expected = sum(1 for r in forget for i in r.multiple_choice if i.modality == "vqa")
    assert result["n"] == len(rows) == len(result["items"]) == expected
    names = {r.id: r.name for r in forget}
    assert all(f" {names[row['profile']]}. " in row["question"] for row in rows)
    assert result["accuracy"] == pytest.approx(sum(v for _, v in result["items"]) / expected)


def test_a_row_at_several_points_shows_its_equal_forgetting_point(tmp_path):
    oracle = {"1": [True, True], "2": [False], "3": [True, False], "4": [False]}  # selection half (1, 3): 0.75
    cells = [f"m|oracle|b|-={_evaluation(tmp_path / 'oracle', oracle)}",
             f"m|ga/lr~0.0003|b|-={_evaluation(tmp_path / 'low', {p: [False] * len(v) for p, v in oracle.items()})}",
             f"m|ga/lr~0.001|b|-={_evaluation(tmp_path / 'high', {'1': [True, True], '2': [True], '3': [True, False], '4': [True]})}"]
    args = [a for c in cells for a in ("--cell", c)]
    out = tmp_path / "robustness"
    with pytest.raises(SystemExit, match="has several operating points"):
        call_stage("render_robustness", "--title", "R", *args, "--out", out)
    call_stage("render_robustness", "--title", "R", *args, "--equal-forgetting", "0.05", "--out", out)
    markdown = (tmp_path / "robustness.md").read_text()
    # lr 0.001 matches the oracle's 0.75 on the selection half (people 1, 3): 5 of its 6 items right
    # overall, both of the report half's (people 2, 4).
    assert "GA: lr 0.001, its equal-forgetting point (Forget VQA +0.0 pts" in markdown
    (row,) = [line for line in markdown.splitlines() if line.startswith("| m | b | GA |")]
    # Two of two: Wilson's interval [n / (n + z^2), 1] = [34.2 %, 100 %] is the floor.
    assert row.split(" | ")[3].startswith("83.3 ± ") and row.split(" | ")[4] == "100.0 ± 32.9 |"


def test_an_attack_job_depends_on_its_own_kind_module_only():
    """The attack rule's code inputs: the stage and its kind's module (the package lists its kinds at
    run time, so no import names the others): editing quantize.py reruns no relearning job."""
    from pathlib import Path

    from pipeline_steps.study.code_dependencies import stage_sources

    from helpers import REPO

    files = {Path(p).name for p in stage_sources("pipeline_steps.attack", REPO) + stage_sources(
        "pipeline_steps.attacks.relearn", REPO)}
    assert {"attack.py", "relearn.py", "__init__.py", "loop.py"} <= files
    assert not {"quantize.py", "membership.py", "probe.py", "evaluate.py"} & files
