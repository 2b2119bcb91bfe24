"""The workflow's plain-Python planning: variant names, artifact paths, per-method settings, the
config's registry checks and the import walker that makes code edits rerun the right stages."""

from pathlib import Path

import pytest

from pipeline_steps.study.artifacts import path, pattern
from pipeline_steps.study.code_dependencies import stage_sources
from pipeline_steps.study.config_check import ConfigError, check_unlearn_block
from pipeline_steps.study.flags import cli_flags, hyperparameter_flags
from pipeline_steps.study.variants import Variant, beta_label, unlearned_variants
from pipeline_steps.unlearning.methods import REGISTRY, get_method
from pipeline_steps.unlearning.settings import parse_hyperparameters, resolve

REPO = Path(__file__).resolve().parents[1]


def test_variant_names_round_trip_and_masked_methods_expand_per_mask():
    variants = unlearned_variants(["ga", "mmunlearner"], [1, 2.5], ["all", "language"])
    assert [v.name for v in variants] == ["ga", "mmunlearner/beta~1.0/modules~all",
                                          "mmunlearner/beta~1.0/modules~language",
                                          "mmunlearner/beta~2.5/modules~all", "mmunlearner/beta~2.5/modules~language"]
    assert all(Variant.parse(v.name) == v for v in variants)
    assert not Variant.parse("vanilla").unlearned and Variant.parse("npo").unlearned
    assert beta_label(1) == "1.0"
    with pytest.raises(ValueError, match="not a variant name"):
        Variant.parse("mmunlearner/beta~1.0")


def test_artifact_paths_fill_one_pattern_from_wildcards_or_values():
    class Wildcards(dict):
        pass

    wildcards = Wildcards(benchmark="b", model="m", ratio="5", variant="npo")
    assert path("unlearned", wildcards) == "results/b/m/forget~5/unlearn/npo/weights.safetensors.index.json"
    assert path("metrics", wildcards, variant="ga") == "results/b/m/forget~5/eval/ga/metrics.json"
    assert "{split}" in pattern("fisher")
    with pytest.raises(KeyError, match="no artifact kind 'weights'"):
        pattern("weights")


def test_a_method_gets_its_own_block_then_shared_then_its_default():
    block = {"methods": ["ga_diff", "npo"], "shared": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-4,
                                                       "retain_weight": 0.5},
             "npo": {"beta": 0.2, "learning_rate": 1e-4}}
    npo, ga_diff = resolve("npo", block), resolve("ga_diff", block)
    assert npo["hyperparameters"] == {"beta": 0.2, "log_ratio": "token_mean"} and npo["loop"]["learning_rate"] == 1e-4
    assert ga_diff["hyperparameters"] == {"retain_weight": 0.5} and ga_diff["loop"]["learning_rate"] == 3e-4
    assert ga_diff["loop"]["max_grad_norm"] == 1.0  # the loop's default
    assert resolve("ga", block)["hyperparameters"] == {}
    assert hyperparameter_flags(npo["hyperparameters"]) == "--hparam beta=0.2 --hparam log_ratio=token_mean"
    assert cli_flags({"batch_size": 4, "modalities": ["vqa", "text"], "fast": True, "slow": False}) == \
        "--batch-size 4 --modalities vqa text --fast"


@pytest.mark.parametrize("block,message", [
    ({"methods": ["ga"], "shared": {"epochs": 2, "batch_size": 4}}, "'learning_rate' of method 'ga' has no default"),
    ({"methods": ["gaa"], "shared": {}}, "x.methods[0]: 'gaa' is not one of"),
    ({"methods": ["ga"], "shared": {"epochs": 0}}, "x.shared.epochs: 0 is less than the minimum of 1"),
    ({"methods": ["ga"], "shared": {}, "ga": {"retain_weight": 1.0}}, "x.ga: Additional properties are not allowed"),
    ({"methods": ["npo"], "shared": {}, "npo": {"beta": "high"}}, "x.npo.beta: 'high' is not of type 'number'"),
    ({"methods": ["npo"], "shared": {}, "npo": {"log_ratio": "sum"}}, "x.npo.log_ratio: 'sum' is not one of"),
    ({"methods": ["npo"], "shared": {}, "npo": {"log_ratio": ["token_mean", "sum"]}},
     "x.npo.log_ratio[1]: 'sum' is not one of"),
])
def test_the_unlearn_block_is_checked_against_the_registry(block, message):
    with pytest.raises(ConfigError) as error:
        check_unlearn_block(block, "x")
    assert message in str(error.value)


def test_a_string_setting_can_be_a_sweep_axis():
    check_unlearn_block({"methods": ["npo"], "shared": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-4},
                         "npo": {"log_ratio": ["token_mean", "sequence_sum"]}}, "x")


def test_hyperparameters_on_the_command_line_are_typed_and_checked():
    npo = get_method("npo")
    assert parse_hyperparameters(npo, ["beta=0.25"]).beta == 0.25
    assert parse_hyperparameters(npo, []).beta == 0.4
    with pytest.raises(ValueError, match="method 'npo' has no hyper-parameter 'gamma' \\(it has: beta, log_ratio\\)"):
        parse_hyperparameters(npo, ["gamma=1"])
    with pytest.raises(ValueError, match="takes a float, not 'x'"):
        parse_hyperparameters(npo, ["beta=x"])


def test_every_method_declares_what_the_workflow_reads():
    for name, method in REGISTRY.items():
        assert method.name == name and method.label
        assert method.frozen_model in (None, "vanilla", "retain_finetuned")
        assert not (method.needs_mask and not method.uses_retain and method.frozen_model), name


def test_the_import_walker_follows_relative_and_package_imports(tmp_path):
    package = tmp_path / "pipeline_steps"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import leaf\n")
    (package / "sub" / "leaf.py").write_text("from ..shared import helper\n")
    (package / "shared.py").write_text("import json\n")
    (package / "unused.py").write_text("")
    (package / "stage.py").write_text("import os\nfrom .sub import thing\nfrom pipeline_steps import shared\n")
    files = {Path(p).relative_to(package).as_posix() for p in stage_sources("pipeline_steps.stage", tmp_path)}
    assert files == {"stage.py", "sub/__init__.py", "sub/leaf.py", "shared.py", "__init__.py"}


def test_the_unlearn_stage_depends_on_the_methods_and_not_on_evaluation():
    files = {Path(p).relative_to(REPO).as_posix() for p in stage_sources("pipeline_steps.unlearn", REPO)}
    assert {"pipeline_steps/unlearn.py", "pipeline_steps/unlearning/methods.py",
            "pipeline_steps/unlearning/settings.py", "pipeline_steps/training/losses.py"} <= files
    assert "pipeline_steps/evaluate.py" not in files and "pipeline_steps/evaluation/scoring.py" not in files


def small_config(**saliency):
    import yaml

    config = yaml.safe_load((REPO / "config" / "small.yaml").read_text())
    config["saliency"].update(saliency)
    return config


def test_each_unlearn_job_gets_its_own_inputs_and_flags():
    from pipeline_steps.study.plan import StudyPlan

    plan = StudyPlan(small_config())
    run = ("mini", "mini_llava", "10")
    npo = plan.unlearn_flags(*run, "npo")
    assert "--method npo" in npo and "--hparam beta=0.4" in npo and "retain_weight" not in npo
    assert "--reference results/mini/mini_llava/forget~10/reference" in npo
    masked = plan.unlearn_flags(*run, "mmunlearner/beta~1.0/modules~all")
    assert "--mask results/mini/mini_llava/forget~10/masks/beta~1.0/modules~all" in masked
    assert "--hparam retain_weight=1.0" in masked and "--reference" not in masked
    assert plan.unlearn_inputs(*run, "ga") == {}


def test_a_real_run_is_checked_with_its_sources_named_as_the_config_gives_them(tmp_path):
    from pipeline_steps.study.plan import StudyPlan

    config = small_config()
    config["benchmarks"]["mini"] = {"format": "mllmu_bench", "hub": "MLLMMU/MLLMU-Bench"}
    config["models"]["mini_llava"] = {"path": str(tmp_path), "device": "cpu", "dtype": "float32", "threads": 1}
    plan = StudyPlan(config)
    flags = plan.environment_check_flags("mini", "mini_llava")
    assert "--dataset-hub MLLMMU/MLLMU-Bench" in flags and f"--model-path {tmp_path}" in flags
    assert "--forget-ratios 10" in flags and "--unlearn-batch-size 8" in flags
    assert plan.needs_environment_check("mini", "mini_llava")
    assert plan.benchmark_source_flags("mini") == "--hub MLLMMU/MLLMU-Bench"


def test_reports_compare_masked_methods_at_the_reported_mask_and_sweep_the_rest():
    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection

    reports = ReportSelection(StudyPlan(small_config(betas=[2, 1.0], module_groups=["language", "all"])))
    assert reports.reported_mask() == {"beta": "2.0", "modules": "all"}
    assert reports.compared_variants("mini", "mini_llava") == ["ga", "ga_diff", "kl_min", "npo",
                                                                "mmunlearner/beta~2.0/modules~all"]
    assert reports.sweeps() == ["modules", "beta"]
    assert reports.sweep_variants("mini", "mini_llava", "modules") == ["mmunlearner/beta~2.0/modules~language",
                                                                       "mmunlearner/beta~2.0/modules~all"]
    assert reports.sweep_variants("mini", "mini_llava", "beta") == ["mmunlearner/beta~2.0/modules~all",
                                                                    "mmunlearner/beta~1.0/modules~all"]
    cells = reports.table1_cells("10")
    assert list(cells)[:3] == ["mini_llava|vanilla|mini", "mini_llava|oracle|mini", "mini_llava|ga|mini"]
    assert cells["mini_llava|npo|mini"] == "results/mini/mini_llava/forget~10/eval/npo/metrics.json"
    outputs = reports.outputs()
    assert "results/tables/mini/mini_llava/beta_sweep_forget~10.md" in outputs
    assert "results/figures/mini/mini_llava/tradeoff.pdf" in outputs


def test_a_list_is_a_sweep_axis_and_each_point_a_named_job():
    from pipeline_steps.study.plan import StudyPlan

    config = small_config()
    block = config["experiments"][0]["unlearn"]
    block["methods"] = ["ga_diff", "npo", "mmunlearner"]
    block["shared"] |= {"learning_rate": [3.0e-4, 1.0e-3], "seed": [0, 1]}
    block["npo"] = {"beta": [0.4, 1]}
    plan = StudyPlan(config)
    names = plan.variant_names("mini", "mini_llava")
    # Only the swept settings are named, in the method's order of settings, the seed last.
    assert names[:4] == ["ga_diff/lr~0.0003/seed~0", "ga_diff/lr~0.0003/seed~1", "ga_diff/lr~0.001/seed~0",
                         "ga_diff/lr~0.001/seed~1"]
    assert "npo/lr~0.001/beta~1.0/seed~1" in names and len(names) == 4 + 8 + 4
    assert "mmunlearner/beta~1.0/modules~all/lr~0.001/seed~0" in names
    assert all(Variant.parse(name).name == name for name in names)
    flags = plan.unlearn_flags("mini", "mini_llava", "10", "npo/lr~0.001/beta~1.0/seed~1")
    assert "--learning-rate 0.001" in flags and "--seed 1" in flags and "--hparam beta=1.0" in flags
    masked = Variant.parse("mmunlearner/beta~1.0/modules~all/lr~0.001/seed~0")
    assert (masked.beta, masked.modules, masked.seed) == ("1.0", "all", "0")
    assert masked.point.name == "mmunlearner/beta~1.0/modules~all/lr~0.001" and masked.row.name == "mmunlearner/beta~1.0/modules~all"
    # A config without lists keeps the plain names.
    assert StudyPlan(small_config()).variant_names("mini", "mini_llava")[:2] == ["ga", "ga_diff"]
    with pytest.raises(ValueError, match="not an unlearned variant"):
        plan.unlearn_job("mini", "mini_llava", "ga_diff/lr~0.1/seed~0")


@pytest.mark.parametrize("shared,message", [
    ({"learning_rate": [3e-4, 0]}, "x.shared.learning_rate[1]: 0 is less than or equal to the minimum of 0"),
    ({"epochs": [2, 0]}, "x.shared.epochs[1]: 0 is less than the minimum of 1"),
    ({"learning_rate": []}, "x.shared.learning_rate: [] should be non-empty"),
    ({"seed": [0, 0]}, "x.shared.seed: [0, 0] has non-unique elements"),
    ({"learning_rate": ["fast"]}, "x.shared.learning_rate[0]: 'fast' is not of type 'number'"),
])
def test_sweep_lists_are_checked_element_wise_against_the_same_bounds(shared, message):
    block = {"methods": ["ga"], "shared": {"epochs": 2, "batch_size": 4, "learning_rate": 3e-4} | shared}
    with pytest.raises(ConfigError) as error:
        check_unlearn_block(block, "x")
    assert message in str(error.value)


def test_reports_take_the_protocol_point_for_table1_and_every_point_for_the_frontier():
    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection

    config = small_config(betas=[1.0, 2.0])
    config["experiments"][0]["unlearn"]["methods"] = ["ga", "mmunlearner"]
    config["experiments"][0]["unlearn"]["shared"] |= {"learning_rate": [1e-3, 3e-4], "seed": [0, 1]}
    reports = ReportSelection(StudyPlan(config))
    assert reports.protocol_variants("mini", "mini_llava") == [
        "ga/lr~0.001/seed~0", "ga/lr~0.001/seed~1",
        "mmunlearner/beta~1.0/modules~all/lr~0.001/seed~0", "mmunlearner/beta~1.0/modules~all/lr~0.001/seed~1"]
    assert reports.compared_variants("mini", "mini_llava") == ["ga/lr~0.001/seed~0",
                                                                "mmunlearner/beta~1.0/modules~all/lr~0.001/seed~0"]
    assert len(reports.frontier_variants("mini", "mini_llava")) == 8  # 2 rows x 2 rates x 2 seeds
    assert reports.sweep_variants("mini", "mini_llava", "beta") == [
        f"mmunlearner/beta~{b}/modules~all/lr~0.001/seed~{s}" for b in ("1.0", "2.0") for s in (0, 1)]
    cells = reports.table1_cells("10")
    assert list(cells)[:3] == ["mini_llava|vanilla|mini", "mini_llava|oracle|mini", "mini_llava|ga/lr~0.001/seed~0|mini"]
    assert "mini_llava|ga/lr~0.0003/seed~1|mini" in reports.equal_forgetting_cells("10")
    assert "results/tables/equal_forgetting_forget~10.md" in reports.outputs()


def test_a_sweep_point_only_the_frontier_reads_is_evaluated_on_what_its_cells_read():
    """With two learning rates and two betas, the second rate's points feed only the frontier and
    the equal-forgetting table: they are scored by the primary mode on the item kinds of the
    benchmark's table (multiple choice for MLLMU-Bench; with open questions for CLEAR). Table 1's
    and the beta sweep table's points, and the references, get the whole evaluation, as every
    point does with ``frontier_points: full``."""
    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection

    config = small_config(betas=[1.0, 2.0])
    config["experiments"][0]["unlearn"]["methods"] = ["ga", "mmunlearner"]
    config["experiments"][0]["unlearn"]["shared"] |= {"learning_rate": [1e-3, 3e-4]}
    plan = StudyPlan(config)
    reports = ReportSelection(plan)
    reads = {v: reports.evaluation_reads("mini", "mini_llava", v)
             for v in ("base", "vanilla", "oracle", *plan.variant_names("mini", "mini_llava"))}
    assert {v for v, r in reads.items() if r == "table"} == {
        "ga/lr~0.0003", "mmunlearner/beta~1.0/modules~all/lr~0.0003", "mmunlearner/beta~2.0/modules~all/lr~0.0003"}
    assert reads["mmunlearner/beta~2.0/modules~all/lr~0.001"] == "everything"  # the beta sweep table's
    everything = plan.evaluation_flags("mini")
    assert everything == ("--scoring likelihood generate --primary likelihood --batch-size 32 --max-new-tokens 3 "
                          "--seed 0")
    assert plan.evaluation_flags("mini", "table") == (
        "--scoring likelihood --primary likelihood --batch-size 32 --max-new-tokens 3 --seed 0 "
        "--outputs multiple_choice")
    assert plan.evaluation_flags("mini", "forget") == plan.evaluation_flags("mini", "table")  # MLLMU: the same
    config["benchmarks"]["mini"]["format"] = "clear"
    assert plan.evaluation_flags("mini", "table").endswith("--outputs multiple_choice generation")
    assert plan.evaluation_flags("mini", "forget").endswith("--outputs multiple_choice")
    config["evaluation"]["outputs"] = ["multiple_choice", "fill_blank"]  # open questions left out by the config
    assert plan.evaluation_flags("mini", "table").endswith("--outputs multiple_choice")
    del config["evaluation"]["outputs"]
    config["evaluation"]["frontier_points"] = "full"
    assert {reports.evaluation_reads("mini", "mini_llava", v) for v in reads} == {"everything"}


def test_control_masks_are_rows_of_their_own_with_their_own_mask():
    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection

    plan = StudyPlan(small_config(controls=["random", "gradient_magnitude"], betas=[1.0, 2.0]))
    names = plan.variant_names("mini", "mini_llava")
    assert names[4:7] == ["mmunlearner/beta~1.0/modules~all", "mmunlearner/beta~1.0/modules~all/control~random",
                          "mmunlearner/beta~1.0/modules~all/control~gradient_magnitude"]
    inputs = plan.unlearn_inputs("mini", "mini_llava", "10", "mmunlearner/beta~1.0/modules~all/control~random")
    assert inputs == {"mask": "results/mini/mini_llava/forget~10/masks/beta~1.0/modules~all/control~random/"
                              "mask.safetensors.index.json"}
    reports = ReportSelection(plan)
    assert reports.compared_variants("mini", "mini_llava")[-2:] == names[5:7]
    assert not any("control" in v for v in reports.sweep_variants("mini", "mini_llava", "beta"))
    from pipeline_steps.reporting.labels import variant_label
    assert variant_label(names[6]) == "MMUnlearner (gradient-magnitude mask)"


def test_salun_is_one_row_whose_mask_follows_its_mask_fraction():
    """SalUn runs once per sweep point, not per beta or module group; its job reads SalUn's mask
    at the point's ``mask_fraction`` (a sweep of it: one mask per value); it is a row of Table 1
    at the reported mask and of no beta or module-group sweep table."""
    from pipeline_steps.study.plan import StudyPlan
    from pipeline_steps.study.report_selection import ReportSelection

    config = small_config(betas=[1.0, 2.0])
    config["experiments"][0]["unlearn"]["methods"] += ["salun"]
    plan = StudyPlan(config)
    names = plan.variant_names("mini", "mini_llava")
    assert names[-1] == "salun" and sum(n.startswith("salun") for n in names) == 1
    assert Variant.parse("salun") == Variant("salun")
    with pytest.raises(ValueError, match="method 'salun' has no mask"):
        Variant.parse("salun/beta~1.0/modules~all")
    mask = "results/mini/mini_llava/forget~10/masks/salun/fraction~0.5/mask.safetensors.index.json"
    assert plan.unlearn_inputs("mini", "mini_llava", "10", "salun") == {"mask": mask}
    flags = plan.unlearn_flags("mini", "mini_llava", "10", "salun")
    assert "--method salun" in flags and "--hparam mask_fraction=0.5" in flags and "--hparam retain_weight=1.0" in flags
    assert "--mask results/mini/mini_llava/forget~10/masks/salun/fraction~0.5" in flags
    reports = ReportSelection(plan)
    assert reports.compared_variants("mini", "mini_llava")[-1] == "salun"
    assert reports.masked_methods("mini", "mini_llava") == ["mmunlearner"]
    assert not any(v.startswith("salun") for v in reports.sweep_variants("mini", "mini_llava", "beta"))

    config["experiments"][0]["unlearn"]["salun"] = {"mask_fraction": [0.5, 0.1]}
    plan = StudyPlan(config)
    assert [n for n in plan.variant_names("mini", "mini_llava") if n.startswith("salun")] == [
        "salun/mask_fraction~0.5", "salun/mask_fraction~0.1"]
    inputs = plan.unlearn_inputs("mini", "mini_llava", "10", "salun/mask_fraction~0.1")
    assert inputs["mask"] == mask.replace("0.5", "0.1")
    with pytest.raises(ConfigError, match="mask_fraction"):
        check_unlearn_block({"methods": ["salun"], "shared": {}, "salun": {"mask_fraction": 1.5}}, "x")


@pytest.mark.parametrize("block,message", [
    ({"methods": ["ga", "mmunlearner"], "shared": {"epochs": 1}, "mmunlearner": {"lora_r": 16}},
     "unlearn.mmunlearner.lora_r: method 'mmunlearner' cannot unlearn through LoRA (its Fisher-ratio mask"),
    ({"methods": ["ga", "salun"], "shared": {"lora_r": [0, 16]}},
     "unlearn.shared.lora_r: method 'salun' cannot unlearn through LoRA (its saliency mask"),
    ({"methods": ["manu"], "shared": {}, "manu": {"lora_r": 16}},
     "unlearn.manu.lora_r: method 'manu' cannot unlearn through LoRA (it prunes"),
])
def test_lora_is_refused_for_a_method_that_acts_on_the_weights_themselves(block, message):
    with pytest.raises(ConfigError) as refused:
        check_unlearn_block(block, "experiments[1].unlearn")
    assert str(refused.value).startswith(f"experiments[1].{message}")
    assert "Remove lora_r from unlearn." in str(refused.value) or "not in unlearn.shared" in str(refused.value)


def test_lora_reaches_the_methods_that_take_it_and_not_a_pruning_one():
    shared = {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3}
    block = {"methods": ["ga", "manu"], "shared": {**shared, "lora_r": 16}, "ga": {"lora_alpha": 32}}
    check_unlearn_block(block, "unlearn")  # manu takes no loop settings: shared ones do not reach it
    loop = resolve("ga", block)["loop"]
    assert (loop["lora_r"], loop["lora_alpha"], loop["lora_dropout"]) == (16, 32, 0.05)
    assert resolve("manu", block)["loop"] == {}
    assert resolve("ga_diff", {"methods": ["ga_diff"], "shared": shared})["loop"]["lora_r"] == 0  # the default: full
