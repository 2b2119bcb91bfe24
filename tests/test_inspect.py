"""``python -m pipeline_steps.inspect`` on real artifacts, its numbers checked against the tensors.

The artifacts are written by the stages (``compute_fisher``, ``build_mask``) or the project's
writers (``save_changes``) on the conftest models, and each printed number is recomputed here
straight from the tensors, so a summary that regrouped or rescaled anything would fail.
"""

import json
import subprocess
import sys

import pytest
import torch

from pipeline_steps.benchmarks.records import read_manifest, read_split
from pipeline_steps.models.families import FAMILIES
from pipeline_steps.models.loading import load_model, model_fingerprint
from pipeline_steps.reporting.labels import column_label
from pipeline_steps.saliency.tensor_files import TensorFile, write_tensors
from pipeline_steps.storage import write_json
from pipeline_steps.unlearning.weights import save_changes

from helpers import REPO, call_stage, stage_output

LLAVA = FAMILIES["llava"]


def inspect_json(path, *flags) -> dict:
    return json.loads(stage_output("inspect", path, "--json", *flags))


def rows(summary: dict, title_start: str) -> dict[str, dict]:
    """The rows of the table whose title starts with ``title_start``, keyed by their first column."""
    table = next(t for t in summary["tables"] if t["title"].startswith(title_start))
    return {next(iter(row.values())): row for row in table["rows"]}


def per_part(tensors: TensorFile, value) -> dict[str, float]:
    sums: dict[str, float] = {}
    for name in tensors.names():
        part = LLAVA.module_of(name)
        sums[part] = sums.get(part, 0.0) + value(tensors.get(name))
    return sums


@pytest.fixture(scope="module")
def saliency(tiny_models, benchmark, tmp_path_factory):
    """Two Fisher files of the tiny LLaVA and the mask built from them, by the stages themselves."""
    out = tmp_path_factory.mktemp("inspect_saliency")
    for split in ("forget_vqa", "forget_text"):
        call_stage("compute_fisher", "--model", tiny_models["llava"], "--benchmark", benchmark, "--forget-ratio", "5",
                   "--split", split, "--out", out / split, "--batch-size", "8")
    call_stage("build_mask", "--target", out / "forget_vqa", "--preserve", out / "forget_text", "--beta", "1",
              "--modules", "language", "--out", out / "mask")
    return out


@pytest.mark.slow
def test_fisher_shares_are_the_fisher_mass_of_each_part(saliency):
    fisher = TensorFile(saliency / "forget_vqa")
    summary = inspect_json(saliency / "forget_vqa.safetensors.index.json")
    assert summary["kind"] == "fisher"
    assert summary["facts"]["sample count"] == int(fisher.metadata["sample_count"]) > 0
    assert summary["facts"]["estimator"] == "per_sample"
    mass = per_part(fisher, lambda t: float(t.double().sum()))
    total = sum(mass.values())
    shares = rows(summary, "Fisher mass per part")
    assert set(shares) == {"vision", "connector", "language"}
    assert sum(row["share"] for row in shares.values()) == pytest.approx(1.0)
    for part, row in shares.items():
        assert row["mass"] == pytest.approx(mass[part], rel=1e-9)
        assert row["share"] == pytest.approx(mass[part] / total, rel=1e-9)
    layers = rows(summary, "Fisher mass per layer")
    assert sum(row["share"] for row in layers.values()) == pytest.approx(1.0)
    layer0 = sum(float(fisher.get(n).double().sum()) for n in fisher.names() if ".language_model.layers.0." in n)
    assert layers["language.0"]["mass"] == pytest.approx(layer0, rel=1e-9)
    # A stem, as the stages take them, and the text form
    text = stage_output("inspect", saliency / "forget_vqa")
    assert "Fisher mass per module type" in text
    assert f"{100 * mass['language'] / total:.2f}%" in text


@pytest.mark.slow
def test_mask_share_is_what_the_mask_selects(saliency):
    mask = TensorFile(saliency / "mask" / "mask")
    summary = inspect_json(saliency / "mask")
    selected = sum(int(mask.get(name).sum()) for name in mask.names())
    total = sum(mask.get(name).numel() for name in mask.names())
    facts = summary["facts"]
    assert summary["kind"] == "mask"
    assert (facts["beta"], facts["module group"]) == (1.0, "language")
    assert (facts["selected"], facts["entries"]) == (selected, total)
    assert facts["selected share"] == selected / total
    counted = per_part(mask, lambda t: int(t.sum()))
    parts = rows(summary, "Selected per part")
    assert parts["vision"]["selected"] == 0 < parts["language"]["selected"]  # module group language
    for part, row in parts.items():
        assert row["selected"] == counted[part]
    # mask_stats.json leads to the same summary, which agrees with build_mask's own counts
    stats = json.loads((saliency / "mask" / "mask_stats.json").read_text())
    assert inspect_json(saliency / "mask" / "mask_stats.json")["facts"] == facts
    assert stats["overall"]["selected"] == selected
    assert f"{100 * selected / total:.2f}%" in stage_output("inspect", saliency / "mask")


@pytest.fixture(scope="module")
def variant(tiny_models, tmp_path_factory):
    """An unlearned variant of the tiny LLaVA: one tensor moved whole, one in three entries."""
    model_dir = tiny_models["llava"]
    start = {name: p.detach().clone() for name, p in load_model(str(model_dir)).model.named_parameters()}
    dense, sparse = "model.multi_modal_projector.linear_1.weight", "model.language_model.layers.1.mlp.up_proj.weight"
    final = dict(start)
    final[dense] = start[dense] + 0.5 * torch.linspace(-1, 1, start[dense].numel()).reshape(start[dense].shape)
    final[sparse] = start[sparse].clone()
    final[sparse].view(-1)[[3, 17, 40]] += torch.tensor([0.25, -0.125, 0.0625])
    out = tmp_path_factory.mktemp("inspect_variant") / "ga"
    out.mkdir()
    counts = save_changes(final, start, out / "weights", {"kind": "unlearned_changes", "method": "ga",
                                                           "vanilla_fingerprint": model_fingerprint(model_dir)})
    write_json(out / "manifest.json", {"method": "ga", "vanilla": str(model_dir),
                                       "vanilla_fingerprint": model_fingerprint(model_dir), "forget_ratio": 5,
                                       "module_group": "all", **counts})
    deltas = {name: (final[name] - start[name]).abs() for name in (dense, sparse)}
    return out, deltas


@pytest.mark.slow
def test_variant_changes_are_the_ones_made(variant):
    out, deltas = variant
    summary = inspect_json(out)
    assert summary["kind"] == "unlearned_variant"
    tensors = rows(summary, "Stored tensors")
    assert set(tensors) == set(deltas)
    dense, sparse = deltas
    assert tensors[dense]["stored"] == "dense" and tensors[sparse]["stored"] == "sparse"
    for name, delta in deltas.items():
        assert tensors[name]["changed"] == int((delta > 0).sum())
        assert tensors[name]["max |delta|"] == float(delta.max())
        assert tensors[name]["mean |delta|"] == pytest.approx(float(delta[delta > 0].double().mean()), rel=1e-9)
    assert tensors[dense]["max |delta|"] == pytest.approx(0.5)
    assert tensors[sparse]["changed"] == 3 and tensors[sparse]["max |delta|"] == pytest.approx(0.25)
    assert summary["facts"]["changed entries"] == sum(int((d > 0).sum()) for d in deltas.values())
    assert summary["facts"]["max |delta|"] == float(deltas[dense].max())
    parts = rows(summary, "Changes per part")
    assert parts["connector"]["changed"] == deltas[dense].numel()
    assert rows(summary, "Changes per layer")["language.1"]["max |delta|"] == float(deltas[sparse].max())
    # The weights index alone finds the manifest beside it
    assert inspect_json(out / "weights.safetensors.index.json")["tables"] == summary["tables"]


@pytest.mark.slow
def test_variant_without_its_vanilla_model_says_so(variant, tmp_path):
    out, deltas = variant
    moved = tmp_path / "ga"
    moved.mkdir()
    for name in ("weights.safetensors", "weights.safetensors.index.json"):
        (moved / name).write_bytes((out / name).read_bytes())
    manifest = json.loads((out / "manifest.json").read_text())
    write_json(moved / "manifest.json", {**manifest, "vanilla": "results/nowhere/vanilla"})
    summary = inspect_json(moved)
    assert any("results/nowhere/vanilla" in note and "unknown" in note for note in summary["notes"])
    tensors = rows(summary, "Stored tensors")
    dense, sparse = deltas
    assert tensors[sparse]["changed"] == 3 and tensors[dense]["max |delta|"] is None


@pytest.mark.parametrize("family", ["mllmu_bench", "clear"])
def test_metrics_row_is_shown_as_the_tables_show_it(tmp_path, family):
    if family == "mllmu_bench":
        table = {"forget_vqa": 0.45, "forget_qa": 1.0, "retain_vqa": 0.8, "retain_qa": 0.9, "real_vqa": 0.5,
                 "real_qa": 0.25, "test_vqa": 0.4}
    else:
        table = {"forget_vqa": 0.45, "forget_qa_rouge_l": 0.3456, "retain_vqa": 0.8, "retain_qa_rouge_l": 0.5,
                 "real_vqa": 0.5, "real_face_vqa": 0.75}
    groups = [key for key in table if "rouge" not in key]
    metrics = {"model": "m", "changes": "", "benchmark": "b", "forget_ratio": 5, "seed": 0,
               "primary_scoring": "likelihood", "scoring_modes": ["likelihood", "generate"], "table": table,
               "multiple_choice": {"likelihood": {g: {"accuracy": table[g], "correct": int(20 * table[g]), "n": 20}
                                                  for g in groups},
                                   "generate": {g: {"accuracy": 0.1, "correct": 2, "n": 20} for g in groups}},
               "protocol": family, "generate_rule": "official_letter",
               "generate_lenient": {g: {"accuracy": 0.15, "correct": 3, "n": 20} for g in groups},
               "generate_parse_rules": {"letter": 3}, "generation_rouge_l": {
                   "forget_qa": {"rouge_l": 0.3456, "n": 7}, "retain_qa": {"rouge_l": 0.5, "n": 9}}, "fill_blank": {}}
    write_json(tmp_path / "metrics.json", metrics)
    summary = inspect_json(tmp_path)
    row = rows(summary, "Table row")
    assert summary["facts"]["primary scoring"] == "likelihood"
    assert row["forget_vqa"]["label"] == column_label("forget_vqa") == "Forget VQA Acc (↓)"
    assert row["forget_vqa"]["shown"] == "45.0%" and row["forget_vqa"]["from"] == "9/20 correct"
    assert row["real_vqa"]["value"] == 0.5
    if family == "mllmu_bench":
        assert row["test_vqa"]["shown"] == "40.0%"
    else:
        assert row["forget_qa_rouge_l"]["shown"] == "0.346"
        assert row["forget_qa_rouge_l"]["from"] == "ROUGE-L over 7 items"
    assert rows(summary, "Multiple-choice accuracy")["retain_vqa"] == {"group": "retain_vqa", "likelihood": 0.8,
                                                                       "generate": 0.1, "generate_lenient": 0.15}
    assert summary["facts"]["multiple-choice protocol"] == f"{family} (official_letter)"
    text = stage_output("inspect", tmp_path / "metrics.json")
    assert "Forget VQA Acc (↓)" in text and "45.0%" in text


def test_benchmark_split_sizes(benchmark):
    summary = inspect_json(benchmark / "manifest.json")
    splits = rows(summary, "Splits")
    assert summary["kind"] == "benchmark" and summary["facts"]["format"] == "mllmu_bench"
    assert summary["facts"]["forget ratios"] == read_manifest(benchmark)["forget_ratios"]
    for split in ("full", "forget_5", "retain_95", "real_world", "test"):
        records = read_split(benchmark, split)
        assert splits[split]["profiles"] == len(records)
        assert splits[split]["train vqa"] == sum(p.modality == "vqa" for r in records for p in r.train)
    assert splits["forget_5"]["profiles"] + splits["retain_95"]["profiles"] == splits["full"]["profiles"]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_model_family_parameters_and_dtype(tiny_models, family):
    summary = inspect_json(tiny_models[family])
    model = load_model(str(tiny_models[family])).model
    assert summary["kind"] == "model"
    assert summary["facts"]["family"] == family
    assert summary["facts"]["parameters (stored)"] == sum(p.numel() for p in model.parameters())
    assert summary["facts"]["stored dtypes"] == {"float32": summary["facts"]["parameters (stored)"]}


@pytest.mark.slow
def test_unknown_files_are_refused_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "other.json").write_text('{"a": 1}')
    write_tensors(tmp_path / "loose", {"x": (torch.float32, (2,))}, lambda name: torch.zeros(2), {})
    for path in ("notes.txt", "other.json", "loose.safetensors", "missing.json", "."):
        with pytest.raises(SystemExit, match="^error: ") as refused:
            call_stage("inspect", tmp_path / path)
        assert "\n" not in str(refused.value), path
        if path != "missing.json":
            assert "not an artifact inspect knows" in str(refused.value)
    # What the user reads: that one line on stderr, no traceback, nothing on stdout.
    result = subprocess.run([sys.executable, "-m", "pipeline_steps.inspect", str(tmp_path / "notes.txt")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_a_salun_gradient_file_shows_each_parts_share_of_the_gradient_magnitude(tmp_path):
    """SalUn's summed gradient is signed: its mass is the sum of |g| (what its mask ranks), so
    cancelling signs do not hide a part."""
    language = "model.language_model.layers.0.mlp.up_proj.weight"
    vision = "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    tensors = {language: torch.tensor([3.0, -3.0]), vision: torch.tensor([-1.0, -1.0])}
    write_tensors(tmp_path / "g", {n: (t.dtype, tuple(t.shape)) for n, t in tensors.items()}, tensors.__getitem__,
                  {"kind": "gradient_sum", "model_type": "llava", "estimator": "gradient", "sample_count": "4",
                   "model_fingerprint": "abc"})
    summary = inspect_json(tmp_path / "g")
    assert summary["kind"] == "gradient" and summary["facts"]["total mass"] == 8.0
    shares = rows(summary, "|gradient| mass per part")
    assert (shares["language"]["mass"], shares["vision"]["share"]) == (6.0, 0.25)
    # Its mask: half of the 4 entries, the two of |g| = 3, with the fraction and threshold.
    call_stage("build_mask", "--salun", "0.5", "--target", tmp_path / "g", "--out", tmp_path / "mask")
    mask = inspect_json(tmp_path / "mask" / "mask.safetensors.index.json")
    assert (mask["facts"]["mask"], mask["facts"]["fraction"], mask["facts"]["threshold"]) == ("salun", 0.5, 3.0)
    assert rows(mask, "Selected per part")["language"]["selected"] == 2 and "beta" not in mask["facts"]
