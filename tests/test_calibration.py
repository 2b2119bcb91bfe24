"""Calibrated equal forgetting (``unlearning/calibration.py``): the stopping rule, the loop that
stops at it, the stage that measures the oracle as ``evaluate`` scores it, a method's own axis for
a method that takes no step, and the calibrated runs the plan asks for."""

import json

import pytest
from accelerate import Accelerator

from pipeline_steps.models.encoding import PromptEncoder
from pipeline_steps.reporting.estimates import half, read_items
from pipeline_steps.unlearning.calibration import Calibration
from pipeline_steps.unlearning.loop import UnlearnSettings, unlearn
from pipeline_steps.unlearning.methods import get_method
from pipeline_steps.unlearning.settings import parse_hyperparameters

from helpers import REPO, call_stage, forget_examples


def test_the_rule_stops_at_the_first_check_at_most_the_tolerance_above_the_target():
    rule = Calibration(target=0.3, tolerance=0.05, check_every=5)
    assert rule.due(0) and not rule.due(3) and rule.due(10)
    assert not rule.record(0, 0.9) and not rule.record(5, 0.36)
    assert rule.record(10, 0.35) and rule.stopped_at == 10 and rule.reached and not rule.due(15)
    assert rule.summary()["outcome"] == "reached" and [c["step"] for c in rule.summary()["checks"]] == [0, 5, 10]
    overshot = Calibration(0.3, 0.05, 5)
    assert not overshot.record(0, 0.9) and overshot.record(5, 0.2)
    assert overshot.stopped_at == 5 and not overshot.reached and overshot.summary()["outcome"] == "overshot"
    never = Calibration(0.3, 0.05, 5)
    never.record(0, 0.9)
    assert never.summary()["outcome"] == "not reached" and never.stopped_at is None


def ga_run(loaded_model, calibration=None, values=()):
    """GA on the six helper examples, batches of 2 (3 steps an epoch), 3 epochs; the probe answers
    ``values`` in turn and records at which steps it was asked."""
    asked = []
    answers = iter(values)

    def probe(model, autocast):
        asked.append(model.training)
        return next(answers)

    method = get_method("ga")
    settings = UnlearnSettings(epochs=3, batch_size=2, learning_rate=1e-2, weight_decay=0.0, max_grad_norm=0.5,
                               seed=0)
    trainable = {name for name, _ in loaded_model.model.named_parameters()}
    history = unlearn(loaded_model.model, method, PromptEncoder(loaded_model.processor), forget_examples(), [],
                      settings, parse_hyperparameters(method, []), Accelerator(cpu=True), trainable=trainable,
                      calibration=calibration, probe=probe if calibration else None)
    return history, asked


def test_a_calibrated_run_takes_the_plain_runs_steps_and_stops_at_its_check(loaded, tiny_models):
    from pipeline_steps.models.loading import load_model

    family, model = loaded
    plain, _ = ga_run(model)
    assert [entry["step"] for entry in plain] == list(range(1, 10))
    # Checked before the first step and every 2 steps: 0.9, 0.8, then 0.2 at step 4, at most the
    # target 0.25: it stops there (below the target by more than the tolerance 0: overshot).
    rule = Calibration(target=0.25, tolerance=0.0, check_every=2)
    calibrated, asked = ga_run(load_model(str(tiny_models[family])), rule, [0.9, 0.8, 0.2])
    assert [c["step"] for c in rule.checks] == [0, 2, 4] and rule.stopped_at == 4 and not rule.reached
    assert asked == [True, True, True]  # the probe is handed the model as it trains; it sets eval itself
    assert [entry["step"] for entry in calibrated] == [1, 2, 3, 4]
    assert [e["forget_loss"] for e in calibrated] == pytest.approx([e["forget_loss"] for e in plain[:4]], rel=1e-6)
    # A target it never reaches: every step, checks at 0, 2, 4, 6, 8.
    never = Calibration(target=0.0, tolerance=0.0, check_every=2)
    history, _ = ga_run(load_model(str(tiny_models[family])), never, [0.5] * 5)
    assert len(history) == 9 and [c["step"] for c in never.checks] == [0, 2, 4, 6, 8] and never.stopped_at is None


def test_a_calibrated_run_checks_after_whole_steps_under_the_authors_retain_schedule(loaded):
    """Under ``all_per_epoch`` a step is still a forget batch: checks every 2 forget batches, each
    after the step's retain-only optimizer steps (6 forget, 10 retain examples, batches of 2: 1, 2
    and 2 retain batches a step, so 5 optimizer steps an epoch)."""
    import torch.optim.optimizer as optimizer_hooks

    from pipeline_steps.models.encoding import Example

    _, model = loaded
    optimizer_steps, checked_after = [], []

    def probe(_, autocast):
        checked_after.append(len(optimizer_steps))
        return [0.9, 0.8, 0.2][len(checked_after) - 1]

    method = get_method("ga_diff")
    settings = UnlearnSettings(epochs=3, batch_size=2, learning_rate=1e-3, seed=0, retain_schedule="all_per_epoch")
    rule = Calibration(target=0.25, tolerance=0.0, check_every=2)
    retain = [Example(f"Which city is person {i} from?", f"city{i}", None) for i in range(10)]
    handle = optimizer_hooks.register_optimizer_step_post_hook(lambda *_: optimizer_steps.append(1))
    try:
        history = unlearn(model.model, method, PromptEncoder(model.processor), forget_examples(), retain, settings,
                          parse_hyperparameters(method, []), Accelerator(cpu=True),
                          trainable={name for name, _ in model.model.named_parameters()}, calibration=rule, probe=probe)
    finally:
        handle.remove()
    assert [c["step"] for c in rule.checks] == [0, 2, 4] and rule.stopped_at == 4
    assert checked_after == [0, 1 + 2, 5 + 1]  # steps 1-2 take 1 + 2 optimizer steps, step 3 2 and step 4 1
    assert [e["retain_batches"] for e in history] == [1, 2, 2, 1]


def test_a_resumed_calibrated_run_keeps_its_checks_and_stops_where_it_stopped():
    from pipeline_steps.unlearning.loop import Unlearning

    rule = Calibration(target=0.3, tolerance=0.05, check_every=5)
    rule.record(0, 0.9)
    rule.record(5, 0.3)
    objective = Unlearning(get_method("ga"), None, None, [], trainable=set(), mask=None, reference_model=None,
                           start_values={}, calibration=rule, probe=lambda model: pytest.fail("measured again"))
    state = json.loads(json.dumps(objective.state()))  # as progress saves it
    resumed = Calibration(target=0.3, tolerance=0.05, check_every=5)
    again = Unlearning(get_method("ga"), None, None, [], trainable=set(), mask=None, reference_model=None,
                       start_values={}, calibration=resumed, probe=lambda model: pytest.fail("measured again"))
    again.restore(state)
    assert resumed.checks == rule.checks and resumed.stopped_at == 5
    assert again.finished(None, 5)


def test_the_stage_measures_the_oracle_as_evaluate_scores_it(benchmark, tiny_models, tmp_path):
    """With the model itself as the oracle, the check before the first step is the target: the run
    stops at step 0 and changes nothing; the target is the selection half's Forget VQA of the
    model's own evaluation."""
    model = tiny_models["llava"]
    call_stage("unlearn", "--vanilla", model, "--benchmark", benchmark, "--forget-ratio", "10", "--method", "ga",
               "--epochs", "1", "--learning-rate", "1e-3", "--out", tmp_path / "ga", "--device", "cpu",
               "--until-oracle", model, "--tolerance", "0", "--check-every", "3", "--eval-batch-size", "16")
    manifest = json.loads((tmp_path / "ga" / "manifest.json").read_text())
    calibration = manifest["calibration"]
    assert calibration["stopped_at"] == 0 and calibration["outcome"] == "reached" and len(calibration["checks"]) == 1
    assert calibration["checks"][0]["forget_vqa_selection"] == calibration["target"]
    assert manifest["changed_tensors"] == 0
    call_stage("evaluate", "--model", model, "--benchmark", benchmark, "--forget-ratio", "10", "--out",
               tmp_path / "eval", "--scoring", "likelihood", "--outputs", "multiple_choice", "--batch-size", "16")
    selection = half(read_items(tmp_path / "eval" / "metrics.json")["forget_vqa"], "selection")
    assert calibration["target"] == pytest.approx(sum(v for _, v in selection) / len(selection))
    with pytest.raises(SystemExit, match="--check-every must be at least 1"):
        call_stage("unlearn", "--vanilla", model, "--benchmark", benchmark, "--forget-ratio", "10", "--method", "ga",
                   "--out", tmp_path / "bad", "--device", "cpu", "--until-oracle", model, "--check-every", "0")
    assert not (tmp_path / "bad").exists()


def test_the_plan_runs_each_row_at_its_protocol_point_until_the_oracle_once_per_seed():
    import yaml

    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection
    from pipeline_steps.study.variants import Variant

    config = yaml.safe_load((REPO / "config" / "small.yaml").read_text())
    config["experiments"][0]["unlearn"]["methods"] = ["ga", "mmunlearner"]
    config["experiments"][0]["unlearn"]["shared"] |= {"learning_rate": [1e-3, 3e-4]}
    config["comparison"] = {"forget_tolerance": 0.05, "calibration": {"epochs": 4, "check_every": 3, "seeds": [0, 1]}}
    plan, run = StudyPlan(config), ("mini", "mini_llava", "10")
    calibrated = ["calibrated/ga/lr~0.001/seed~0", "calibrated/ga/lr~0.001/seed~1",
                  "calibrated/mmunlearner/beta~1.0/modules~all/lr~0.001/seed~0",
                  "calibrated/mmunlearner/beta~1.0/modules~all/lr~0.001/seed~1"]
    assert [v for v in plan.variant_names("mini", "mini_llava") if v.startswith("calibrated/")] == calibrated
    parsed = Variant.parse(calibrated[2])
    assert parsed.calibrated and parsed.row == Variant.parse("mmunlearner/beta~1.0/modules~all")
    assert parsed.point.name == "calibrated/mmunlearner/beta~1.0/modules~all/lr~0.001"
    flags = plan.unlearn_flags(*run, calibrated[1])
    assert "--epochs 4" in flags and "--seed 1" in flags and "--learning-rate 0.001" in flags
    assert ("--until-oracle results/mini/mini_llava/forget~10/reference --tolerance 0.05 --check-every 3 "
            "--scoring likelihood --eval-batch-size 32 --max-new-tokens 3") in flags
    assert plan.unlearn_inputs(*run, calibrated[0]) == {"oracle": "results/mini/mini_llava/forget~10/reference"}
    reports = ReportSelection(plan)
    cells = reports.equal_forgetting_cells("10")
    assert [label.split("|")[1] for label in cells] == ["vanilla", "oracle", *calibrated]
    assert reports.protocol_variants("mini", "mini_llava") == ["ga/lr~0.001", "mmunlearner/beta~1.0/modules~all/lr~0.001"]
    assert {reports.evaluation_reads("mini", "mini_llava", v) for v in calibrated} == {"table"}
    assert set(calibrated) < set(reports.frontier_variants("mini", "mini_llava"))
    del config["comparison"]["calibration"]
    plan = StudyPlan(config)
    assert not [v for v in plan.variant_names("mini", "mini_llava") if v.startswith("calibrated/")]


def test_a_method_that_takes_no_step_walks_its_own_axis_until_the_rule_stops_it(benchmark, tiny_models, tmp_path,
                                                                                 monkeypatch):
    """MANU prunes 1 %, 2 %, 5 %, ... of the neurons per modality, each from the vanilla weights,
    until a check is at most the target plus the tolerance; the pruning of that value is stored."""
    from pipeline_steps.unlearning import forgetting_probe

    statistics = tmp_path / "neuron_importance"
    for split in get_method("manu").activation_splits:
        call_stage("compute_neuron_importance", "--model", tiny_models["llava"], "--benchmark", benchmark,
                   "--forget-ratio", "10", "--split", split, "--out", statistics / split, "--device", "cpu")
    answers = iter([0.5, 0.9, 0.8, 0.45])  # the oracle's, then one per pruned fraction
    monkeypatch.setattr(forgetting_probe.ForgettingProbe, "__call__", lambda self, model, *_: next(answers))
    call_stage("unlearn", "--vanilla", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "10",
               "--method", "manu", "--neuron-importance", statistics, "--out", tmp_path / "manu", "--device", "cpu",
               "--until-oracle", tiny_models["llava"], "--tolerance", "0.0")
    manifest = json.loads((tmp_path / "manu" / "manifest.json").read_text())
    assert [(c["step"], c["prune_fraction"]) for c in manifest["calibration"]["checks"]] == [(0, 0.01), (1, 0.02),
                                                                                             (2, 0.05)]
    assert manifest["calibration"]["outcome"] == "overshot" and manifest["calibration"]["target"] == 0.5
    assert manifest["hyperparameters"] == {"prune_fraction": 0.05}
    records = [json.loads(line) for line in (tmp_path / "manu" / "train_log.jsonl").read_text().splitlines()]
    budget = round(0.05 * 2 * 176)  # the fixture's 2 layers of 176 neurons; each modality's own 5 %
    assert all(sum(len(r["selected_by"][m]) for r in records) == budget for m in ("image", "text"))


def test_the_equal_forgetting_table_says_where_each_seed_stopped(tmp_path):
    """Calibrated runs are one point per row: the table reports it on the report half and notes,
    from each seed's manifest, where its run stopped and whether it reached the oracle."""
    from test_reporting import MLLMU_COLUMNS, markdown_cells, write_evaluation

    def values(forget, utility):
        return {"forget_vqa": forget, "test_vqa": forget, **{c: utility for c in MLLMU_COLUMNS[1:6]}}

    stops = {0: (35, "reached"), 1: (40, "overshot"), 2: (None, "not reached")}
    cells = [f"llava|{v}|mllmu={write_evaluation(tmp_path, v, values(*x))}"
             for v, x in (("vanilla", (0.9, 0.9)), ("oracle", (0.3, 0.9)))]
    for seed, (stopped_at, outcome) in stops.items():
        variant = f"calibrated/ga/seed~{seed}"
        metrics = write_evaluation(tmp_path, variant, values((0.3, 0.2), 0.6))
        unlearned = tmp_path / "unlearn" / variant
        unlearned.mkdir(parents=True)
        checks = [{"step": step, "forget_vqa_selection": 0.3} for step in range(0, (stopped_at or 330) + 1, 5)]
        (unlearned / "manifest.json").write_text(json.dumps({"method": "ga", "hyperparameters": {}, "calibration": {
            "target": 0.3, "tolerance": 0.05, "check_every": 5, "checks": checks, "stopped_at": stopped_at,
            "reached": outcome == "reached", "outcome": outcome}}))
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "changes": str(unlearned / "weights")}))
        cells.append(f"llava|{variant}|mllmu={metrics}")
    call_stage("render_tables", "--title", "t", "--equal-forgetting", "0.05",
               *[a for c in cells for a in ("--cell", c)], "--out", tmp_path / "table")
    text = (tmp_path / "table.md").read_text()
    assert ("llava / mllmu / GA: calibrated from shared settings until the oracle's forgetting (Forget VQA +0.0 pts from the oracle's on the selection half; "
            "stopped at, per seed: step 35 (reached), step 40 (overshot), not reached (step 330 the last)).") in text
    assert markdown_cells(tmp_path / "table.md")["GA"][0].startswith("20.0 ±")  # the report half
