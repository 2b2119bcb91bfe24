"""Report stages: tables against hand-made metrics, heatmap counts against a top-n oracle,
figures that are byte-for-byte reproducible, case studies."""

import csv
import json
import random

import pytest
import torch

from pipeline_steps.locate_changes import streamed_deltas
from pipeline_steps.models.families import FAMILIES
from pipeline_steps.reporting.labels import COLUMNS
from pipeline_steps.reporting.parameter_changes import count_top_changes, nth_largest
from pipeline_steps.saliency.tensor_files import TensorFile
from pipeline_steps.unlearning.weights import save_changes

from helpers import call_stage

# forget_vqa (lower is better), forget_qa, retain_vqa, retain_qa, real_vqa, real_qa
ROWS = {
    "vanilla": (0.90, 0.90, 0.90, 0.90, 0.90, 0.90),
    "ga": (0.30, 0.50, 0.40, 0.60, 0.70, 0.80),
    "npo": (0.20, 0.70, 0.40, 0.50, 0.80, 0.80),
    "mmunlearner/beta~1.0/modules~all": (0.60, 0.95, 0.85, 0.50, 0.60, 0.80),
}


def write_metrics(root, benchmark, variant, values):
    path = root / benchmark / variant / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"table": dict(zip(COLUMNS, values)) | {"test_vqa": 0.5}}))
    return path


def test_table1_numbers_marks_and_arrows(tmp_path):
    cells = []
    for benchmark in ("mllmu", "clear"):
        for variant, values in ROWS.items():
            cells += ["--cell", f"llava|{variant}|{benchmark}={write_metrics(tmp_path, benchmark, variant, values)}"]
    call_stage("render_tables", "--title", "Table 1 test", *cells, "--out", tmp_path / "table1")

    rows = list(csv.DictReader((tmp_path / "table1.csv").open()))
    assert [r["row"] for r in rows] == ["Vanilla", "GA", "NPO", "MMUnlearner"]
    assert float(rows[2]["clear:forget_vqa"]) == 0.20 and float(rows[3]["mllmu:forget_qa"]) == 0.95

    markdown = (tmp_path / "table1.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    assert "mllmu: Forget VQA Acc (↓)" in header and "mllmu: Retain QA Acc (↑)" in header
    lines = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in markdown.splitlines()
             if line.startswith("| ") and not line.startswith("| Method")}
    # Forget VQA: NPO lowest (bold), GA runner-up; vanilla (0.90) is never ranked.
    assert lines["NPO"][0] == "**20.0%**" and lines["GA"][0] == "<u>30.0%</u>" and lines["Vanilla"][0] == "90.0%"
    # Retain VQA: GA and NPO tie for runner-up behind MMUnlearner: marked as tied, not underlined.
    assert lines["MMUnlearner"][2] == "**85.0%**"
    assert lines["GA"][2] == lines["NPO"][2] == "40.0% ≈"
    # Real QA: three-way tie for best: no bold, no runner-up.
    assert [lines[m][5].rstrip(" |") for m in ("GA", "NPO", "MMUnlearner")] == ["80.0% ≈"] * 3
    # Test VQA, beyond the paper's six columns, is shown as a forget column (lower is better without an oracle).
    assert "mllmu: Test VQA Acc (↓)" in header

    latex = (tmp_path / "table1.tex").read_text()
    assert r"\textbf{20.0\%}" in latex and r"\underline{30.0\%}" in latex
    assert latex.count(r"$\downarrow$") == 4 and latex.count(r"$\uparrow$") == 10
    assert r"\multicolumn{7}{c}{mllmu}" in latex and r"\textit{llava}" in latex and r"40.0\% $\approx$" in latex


# CLEAR's Table 1 columns: forget_vqa, forget_qa_rouge_l, retain_vqa, retain_qa_rouge_l, real_vqa, real_face_vqa
CLEAR_ROWS = {
    "vanilla": (0.633, 0.367, 0.540, 0.352, 0.537, 0.854),
    "ga": (0.574, 0.153, 0.524, 0.176, 0.518, 0.834),
    "mmunlearner/beta~1.0/modules~all": (0.362, 0.348, 0.466, 0.338, 0.523, 0.841),
}


def test_rouge_columns_are_numbers_beside_percentages(tmp_path):
    """A Table 1 with MLLMU-Bench and CLEAR side by side: each benchmark with its own six columns,
    CLEAR's ROUGE-L columns with three decimals as in the paper, accuracies in percent."""
    clear_keys = ("forget_vqa", "forget_qa_rouge_l", "retain_vqa", "retain_qa_rouge_l", "real_vqa", "real_face_vqa")
    cells = []
    for variant in CLEAR_ROWS:
        mllmu = write_metrics(tmp_path, "mllmu", variant, ROWS[variant])
        clear = tmp_path / "clear" / variant / "metrics.json"
        clear.parent.mkdir(parents=True)
        clear.write_text(json.dumps({"table": dict(zip(clear_keys, CLEAR_ROWS[variant]))}))
        cells += ["--cell", f"llava|{variant}|mllmu={mllmu}", "--cell", f"llava|{variant}|clear={clear}"]
    call_stage("render_tables", "--title", "Table 1 test", *cells, "--out", tmp_path / "table1")

    rows = list(csv.DictReader((tmp_path / "table1.csv").open()))
    assert float(rows[2]["clear:forget_qa_rouge_l"]) == 0.348 and float(rows[2]["mllmu:real_qa"]) == 0.80
    assert "clear:real_qa" not in rows[0] and "mllmu:real_face_vqa" not in rows[0]
    markdown = (tmp_path / "table1.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Method"))
    assert "clear: Forget QA ROUGE-L (↑)" in header and "clear: Realface VQA Acc (↑)" in header
    assert "mllmu: Forget QA Acc (↑)" in header
    cells_of = {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")[1:]]
                for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| Method")}
    # mllmu's six columns and Test VQA, then clear's: Forget VQA in percent, Forget QA ROUGE-L with three decimals.
    assert cells_of["Vanilla"][7:9] == ["63.3%", "0.367"]
    assert cells_of["MMUnlearner"][7:9] == ["**36.2%**", "**0.348**"] and cells_of["GA"][8] == "<u>0.153</u>"
    latex = (tmp_path / "table1.tex").read_text()
    assert r"\multicolumn{6}{c}{clear}" in latex and r"\cmidrule(lr){9-14}" in latex
    assert r"\textbf{0.348}" in latex and r"ROUGE-L ($\uparrow$)" in latex

    points = []
    for variant in CLEAR_ROWS:
        points += ["--point", f"5|{variant}={tmp_path / 'clear' / variant / 'metrics.json'}"]
    call_stage("render_tradeoffs", "--title", "t", *points, "--out", tmp_path / "clear_tradeoff")
    assert (tmp_path / "clear_tradeoff.png").stat().st_size > 10_000


def test_metrics_of_no_known_benchmark_are_refused(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"table": {"forget_vqa": 0.5, "retain_vqa": 0.5}}))
    with pytest.raises(SystemExit, match="lack the columns"):
        call_stage("render_tables", "--title", "t", "--cell", f"m|ga|b={path}", "--out", tmp_path / "t")


def test_sweep_table_labels_rows_by_what_varies(tmp_path):
    cells = []
    for beta, value in (("0.5", 0.2), ("2.0", 0.7)):
        variant = f"mmunlearner/beta~{beta}/modules~all"
        path = write_metrics(tmp_path, "b", variant, (value, 1, 1, 1, 1, 1))
        cells += ["--cell", f"m|{variant}|b={path}"]
    call_stage("render_tables", "--title", "sweep", "--vary", "beta", *cells, "--out", tmp_path / "sweep")
    assert [r["row"] for r in csv.DictReader((tmp_path / "sweep.csv").open())] == ["β = 0.5", "β = 2.0"]
    assert r"$\beta$ = 0.5" in (tmp_path / "sweep.tex").read_text()


def test_missing_metrics_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="does not exist; run the stage that writes it first"):
        call_stage("render_tables", "--title", "t", "--cell", f"m|ga|b={tmp_path / 'none.json'}", "--out", tmp_path / "t")


def test_nth_largest_matches_sorting():
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(n, generator=generator).abs() for n in (1000, 1, 3000)]
    tensors[0][:100] = 0.0  # zeros are never counted
    tensors[2][:50] = tensors[1][0]  # ties
    tensors.append(torch.tensor([float("inf"), 1e-30, 3e38]))
    flat = torch.cat(tensors)
    positive = flat[flat > 0].sort(descending=True).values
    for n in (1, 2, 3, 17, 500, 3500, len(positive), len(positive) + 10):
        assert nth_largest(lambda: iter(tensors), n) == positive[min(n, len(positive)) - 1].item()
    assert nth_largest(lambda: iter([torch.zeros(5)]), 3) is None


def fake_model_tensors(generator):
    names = [f"model.language_model.layers.{i}.{kind}.weight" for i in range(3)
             for kind in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]
    names += ["model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", "model.multi_modal_projector.linear_1.weight",
              "lm_head.weight"]
    return {name: torch.randn(8, 6, generator=generator) for name in names}


def test_heatmap_counts_equal_the_top_n_selection(tmp_path):
    generator = torch.Generator().manual_seed(1)
    vanilla = fake_model_tensors(generator)
    unlearned = {name: value.clone() for name, value in vanilla.items()}
    for name in list(unlearned)[::2]:  # dense changes
        unlearned[name] += torch.randn(unlearned[name].shape, generator=generator) * 0.1
    sparse = list(unlearned)[1]
    unlearned[sparse].view(-1)[:5] += torch.tensor([3.0, -2.0, 1.5, 0.0, 4.0])  # sparse changes

    model = torch.nn.Module()
    for index, (name, value) in enumerate(unlearned.items()):
        model.register_parameter(f"p{index}", torch.nn.Parameter(value))
    rename = {f"p{index}": name for index, name in enumerate(unlearned)}
    model.named_parameters = lambda: ((rename[n], p) for n, p in torch.nn.Module.named_parameters(model))
    save_changes(dict(model.named_parameters()), vanilla, tmp_path / "weights", {"vanilla_fingerprint": "x"})
    changes = TensorFile(tmp_path / "weights")
    assert f"{sparse}::indices" in changes

    family = FAMILIES["llava"]
    deltas = streamed_deltas(vanilla, changes)
    oracle = {name: (unlearned[name] - vanilla[name]).abs().reshape(-1) for name in vanilla}
    everything = torch.cat(list(oracle.values()))
    for n in (1, 4, 37, 200):
        counts = count_top_changes(deltas, n, family.module_of)
        top = set(everything.topk(n).indices.tolist())
        offsets, expected = 0, {}
        for name, values in oracle.items():
            chosen = sum(1 for i in range(len(values)) if offsets + i in top)
            if chosen:
                expected[name] = chosen
            offsets += len(values)
        assert counts["per_tensor"] == expected and counts["selected"] == n
        q0 = [c for c in counts["cells"] if c["layer"] == 0 and c["module_type"] == "q_proj"]
        assert sum(c["count"] for c in q0) == expected.get("model.language_model.layers.0.self_attn.q_proj.weight", 0)
        assert sum(c["count"] for c in counts["cells"]) == n
        assert {c["part"] for c in counts["cells"]} <= {"language", "vision", "connector"}


def heatmap_input(path, seed):
    rng = random.Random(seed)
    layout = [{"part": part, "layer": layer, "module_type": kind, "count": 100}
              for part, kinds, layers in (("language", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                         "down_proj"), 4), ("vision", ("q_proj", "out_proj", "fc1", "fc2"), 3))
              for layer in range(layers) for kind in kinds]
    cells = [dict(cell, count=rng.randint(0, 50)) for cell in layout]
    cells.append({"part": "language", "layer": None, "module_type": "embed_tokens", "count": 40})
    path.write_text(json.dumps({"selected": sum(c["count"] for c in cells), "cells": cells, "layout": layout}))
    return path


@pytest.mark.slow
def test_figures_are_byte_identical_across_runs(tmp_path):
    panels = ["--panel", f"mask={heatmap_input(tmp_path / 'mask.json', 0)}",
              "--panel", f"ga={heatmap_input(tmp_path / 'ga.json', 1)}"]
    for out in ("one", "two"):
        call_stage("render_heatmaps", "--title", "t", *panels, "--out", tmp_path / out)
    for suffix in ("png", "pdf"):
        first, second = (tmp_path / f"one.{suffix}").read_bytes(), (tmp_path / f"two.{suffix}").read_bytes()
        assert len(first) > 1000 and first == second

    points = []
    for ratio in (5, 10):
        for variant, values in ROWS.items():
            path = write_metrics(tmp_path / f"r{ratio}", "b", variant, [v * ratio / 10 for v in values])
            points += ["--point", f"{ratio}|{variant}={path}"]
    for out in ("t1", "t2"):
        call_stage("render_tradeoffs", "--title", "t", *points, "--out", tmp_path / out)
    assert (tmp_path / "t1.png").read_bytes() == (tmp_path / "t2.png").read_bytes()
    with pytest.raises(SystemExit, match="forget ratio 10 has no vanilla point"):
        call_stage("render_tradeoffs", "--title", "t", *points[:8], *points[10:], "--out", tmp_path / "t3")


def test_case_studies_show_every_variant_on_the_same_items(tmp_path):
    items = [{"column": column, "kind": "generation", "profile": str(p), "question": f"Q{p}?", "answer": f"gold {p}"}
             for column in ("forget_vqa", "forget_qa", "retain_vqa", "real_vqa") for p in range(5)]
    choices = [{"column": column, "kind": "multiple_choice", "profile": str(p), "question": f"M{p}?",
                "options": {"A": "Oslo", "B": "Lima"}, "answer": "A"} for column in ("forget_vqa", "retain_vqa")
               for p in range(5)]
    args = []
    for variant, pick in (("vanilla", "A"), ("ga", "B")):
        path = tmp_path / f"{variant}.jsonl"
        rows = [dict(item, output=f"{variant} says {item['profile']}", rouge_l=0.5) for item in items]
        rows += [dict(item, likelihood={"prediction": pick}) for item in choices]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        args += ["--variant", f"{variant}={path}"]
    call_stage("render_case_studies", "--title", "Cases", *args, "--per-column", "2", "--out", tmp_path / "cases.md")
    text = (tmp_path / "cases.md").read_text()
    opened, chosen = text.split("## Multiple choice")
    assert opened.count("### Forget VQA") == 2 and opened.count("### Retain VQA") == 2 and "Realworld" not in text
    assert opened.count("| Vanilla | vanilla says") == 6 and opened.count("| GA | ga says") == 6
    assert chosen.count("| Vanilla | A) Oslo | yes |") == 4 and chosen.count("| GA | B) Lima | no |") == 4


MLLMU_COLUMNS = ("forget_vqa", "forget_qa", "retain_vqa", "retain_qa", "real_vqa", "real_qa", "test_vqa")


def write_evaluation(root, variant, values, scoring="likelihood"):
    """metrics.json and predictions.jsonl of one evaluation: 10 people with 10 multiple-choice items
    each per column, scored by ``scoring``. ``values``: column -> accuracy, or (accuracy of the
    selection half, of the report half) of the people (even / odd positions of the sorted profile ids)."""
    rows, table = [], {}
    for column in MLLMU_COLUMNS:
        value = values[column]
        selection, report = value if isinstance(value, tuple) else (value, value)
        flags = []
        for person in range(10):
            accuracy = selection if person % 2 == 0 else report
            for item in range(10):
                flags.append(item < round(10 * accuracy))
                rows.append({"column": column, "kind": "multiple_choice", "profile": f"p{person}",
                             scoring: {"correct": flags[-1]}})
        table[column] = sum(flags) / len(flags)
    directory = root / variant
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps({"primary_scoring": scoring, "table": table}))
    (directory / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory / "metrics.json"


def approx_cell(text, mean, distance=None, mark=""):
    """A rendered cell: ``mean ± half-width%``, the half-width within 1.5 points of the normal
    approximation for 100 items, then the distance from the oracle and the mark it should carry."""
    import re

    match = re.fullmatch(r"(\*\*|<u>)?(\d+\.\d) ± (\d+\.\d)%(?: \(([+-]\d+\.\d)\))?(</u>|\*\*)?( ≈| †)?", text)
    assert match, text
    opened, value, half_width, shown_distance, _, suffix = match.groups()
    expected = 100 * 1.96 * (mean * (1 - mean) / 100) ** 0.5
    assert float(value) == round(100 * mean, 1) and abs(float(half_width) - expected) < 1.5, text
    assert shown_distance == (None if distance is None else f"{100 * distance:+.1f}"), text
    assert {"**": "best", "<u>": "runner_up", None: ""}[opened] + (suffix or "").strip() == mark, text
    return True


def markdown_cells(path):
    return {line.split(" | ")[0].strip("| "): [c.strip(" |") for c in line.split(" | ")[1:]]
            for line in path.read_text().splitlines() if line.startswith("| ") and not line.startswith("| Method")}


def test_intervals_ties_and_over_unlearning_against_the_oracle(tmp_path):
    """Hand-made per-item results in, the expected table out: mean ± half-width of the interval
    (every person alike here, so the bootstrap over people has no spread and Wilson's interval over
    the 100 questions is the floor: about 1.96 sqrt(p(1-p)/n)), the visual forget columns ranked
    by their distance from the oracle with GA, below it, marked over-unlearned, and marks only where
    the paired interval of two rows' difference excludes 0. Every person answers the first
    ``10 * accuracy`` of their questions, so a row 10 points above another is right on one more
    question of every person: the paired interval separates them although their own intervals
    overlap, and rows with the same answers tie."""
    rows = {  # forget_vqa, forget_qa, retain_vqa, retain_qa, real_vqa, real_qa, test_vqa
        "vanilla": (0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9),
        "oracle": (0.3, 0.3, 0.9, 0.9, 0.9, 0.9, 0.3),
        "ga": (0.0, 0.5, 0.4, 0.6, 0.7, 0.8, 0.0),
        "npo": (0.3, 0.7, 0.5, 0.5, 0.8, 0.8, 0.4),
        "mmunlearner/beta~1.0/modules~all": (0.6, 1.0, 0.9, 0.5, 0.6, 0.8, 0.5),
    }
    cells = [arg for variant, values in rows.items() for arg in
             ("--cell", f"llava|{variant}|mllmu={write_evaluation(tmp_path, variant, dict(zip(MLLMU_COLUMNS, values)))}")]
    call_stage("render_tables", "--title", "t", *cells, "--out", tmp_path / "table")
    cells_of = markdown_cells(tmp_path / "table.md")
    assert list(cells_of) == ["*llava*", "Vanilla", "Oracle (retain only)", "GA", "NPO", "MMUnlearner"]
    # Forget VQA: the value, its interval, its distance from the oracle. GA's 0 of 100 has Wilson's
    # interval [0, z^2 / (n + z^2)] = [0, 3.7 %], half-width 1.8; 30 points below the oracle:
    # over-unlearned (†), not best. NPO, at the oracle, is best; MMUnlearner, 30 points off, the runner-up.
    assert approx_cell(cells_of["Oracle (retain only)"][0], 0.3)
    assert cells_of["GA"][0] == "0.0 ± 1.8% (-30.0) †" and approx_cell(cells_of["NPO"][0], 0.3, 0.0, "best")
    assert approx_cell(cells_of["MMUnlearner"][0], 0.6, 0.3, "runner_up")
    assert cells_of["GA"][6] == "0.0 ± 1.8% (-30.0) †"  # Test VQA alike
    # Test VQA: NPO 10 points from the oracle, MMUnlearner 20; their intervals (±9-10) overlap, but
    # MMUnlearner is farther on every person: best and runner-up, not a tie.
    assert approx_cell(cells_of["NPO"][6], 0.4, 0.1, "best") and approx_cell(cells_of["MMUnlearner"][6], 0.5, 0.2, "runner_up")
    # Forget QA keeps vanilla's knowledge as its target: higher is better, MMUnlearner's 100 % best
    # (Wilson's lower end 96.3 %), NPO's 70 % runner-up, separated from GA's 50 %.
    assert cells_of["MMUnlearner"][1] == "**100.0 ± 1.8%**" and approx_cell(cells_of["NPO"][1], 0.7, None, "runner_up")
    # Retain VQA: 90, 50, 40 %, each row right on one more question of every person than the next.
    assert approx_cell(cells_of["MMUnlearner"][2], 0.9, None, "best") and approx_cell(cells_of["NPO"][2], 0.5, None, "runner_up")
    assert approx_cell(cells_of["GA"][2], 0.4)
    # Retain QA: GA 60 % best; NPO and MMUnlearner give the same answers (50 %): tied, no runner-up.
    assert approx_cell(cells_of["GA"][3], 0.6, None, "best")
    assert [cells_of[m][3][-1] for m in ("NPO", "MMUnlearner")] == ["≈"] * 2
    header = next(line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| Method"))
    assert "mllmu: Forget VQA Acc (→ oracle)" in header and "mllmu: Test VQA Acc (→ oracle)" in header
    assert "†" in (tmp_path / "table.md").read_text().split("\n\n")[-2]  # the legend says what † means
    assert (tmp_path / "table.md").read_text().split("\n\n")[-1] == \
        "Multiple-choice accuracies by likelihood scoring (evaluation.primary).\n"
    # Evaluations scored by another mode would put unlike numbers side by side: refused.
    other = write_evaluation(tmp_path / "other", "ga", dict(zip(MLLMU_COLUMNS, rows["ga"])), scoring="generate")
    with pytest.raises(SystemExit, match="different primary modes \\(generate, likelihood\\)"):
        call_stage("render_tables", "--title", "t", *cells[:-2], "--cell", f"llava|ga|other={other}",
                  "--out", tmp_path / "mixed")
    table = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert float(table[3]["mllmu:forget_qa"]) == 0.7 and abs(float(table[3]["mllmu:forget_qa:half_width"]) - 0.09) < 0.01
    latex = (tmp_path / "table.tex").read_text()
    assert r"0.0 $\pm$ 1.8\% (-30.0) $\dagger$" in latex and r"\textbf{100.0 $\pm$ 1.8\%}" in latex


def test_tables_name_the_reading_of_kl_min_and_npo_that_ran(tmp_path):
    """A cell's method settings come from the manifest beside the changes it evaluated: KL_Min's
    and NPO's notes say which reading ran (the authors' code or the paper's equation), once each."""
    cells = []
    for variant, method, hyperparameters in (
            ("kl_min", "kl_min", {"retain_weight": 1.0, "kl_direction": "current_first", "retain_nll": False}),
            ("npo", "npo", {"beta": 0.4, "log_ratio": "token_mean"}), ("ga", "ga", {})):
        metrics = write_evaluation(tmp_path, variant, dict(zip(MLLMU_COLUMNS, (0.5,) * 7)))
        unlearned = tmp_path / "unlearn" / variant
        unlearned.mkdir(parents=True)
        (unlearned / "manifest.json").write_text(json.dumps({"method": method, "hyperparameters": hyperparameters}))
        written = json.loads(metrics.read_text())
        metrics.write_text(json.dumps({**written, "changes": str(unlearned / "weights")}))
        cells += ["--cell", f"llava|{variant}|mllmu={metrics}"]
    call_stage("render_tables", "--title", "t", *cells, "--out", tmp_path / "table")
    notes = (tmp_path / "table.md").read_text().split("\n\n")
    assert "KL_Min's retain term: KL(p_theta || p_vanilla) alone (the authors' code: KL(p_vanilla || p_theta) " \
        "+ retain NLL; the paper's Eq. 17-18: KL(p_theta || p_vanilla) alone)." in notes
    assert any(n.startswith("NPO (beta 0.4): log-ratio of the answer tokens' mean log-probability") for n in notes)
    assert sum(n.startswith("KL_Min") for n in notes) == 1 and not any(n.startswith("GA") for n in notes)


def test_seeds_average_and_add_their_spread_to_the_interval():
    from pipeline_steps.reporting.estimates import estimate

    # Each seed's items all score alike (ROUGE-like values, so no Wilson floor): no spread over
    # people or questions; the seeds' t interval alone.
    def seed(value):
        return [(f"p{i % 4}", value) for i in range(20)]

    result = estimate([seed(0.4), seed(0.5), seed(0.6)])
    assert result.seeds == 3 and result.mean == pytest.approx(0.5)
    assert result.half_width == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)
    assert result.seed_half_width == result.half_width
    assert estimate([seed(0.5)]).half_width == 0.0
    with pytest.raises(ValueError, match="same items about the same people"):
        estimate([seed(0.4), [("q", 0.4)] * 20])


def test_the_interval_resamples_people_not_questions():
    """40 people, 10 questions each, half of them answer all right and half all wrong: the value's
    spread comes from which people were drawn. The bootstrap over people gives about 1.96 times the
    standard error of the mean of the 40 people's means, sqrt(0.25 / 40) = 0.079; resampling the
    400 questions as independent would give 1.96 sqrt(0.25 / 400) = 0.049, a third of it."""
    from pipeline_steps.reporting.estimates import estimate

    items = [(f"p{person:02d}", float(person % 2)) for person in range(40) for _ in range(10)]
    half_width = estimate([items]).half_width
    assert half_width == pytest.approx(1.96 * (0.25 / 40) ** 0.5, rel=0.1)
    assert half_width > 2.5 * 1.96 * (0.25 / 400) ** 0.5


def test_wilson_floor_matches_scipy():
    from scipy import stats

    from pipeline_steps.reporting.estimates import estimate, wilson_interval

    for correct, n in ((37, 40), (40, 40), (0, 80)):
        expected = stats.binomtest(correct, n).proportion_ci(method="wilson")
        assert wilson_interval(correct / n, n) == pytest.approx((expected.low, expected.high), abs=1e-9)
    # An all-correct cell of 5 people is not certain: Wilson's half-width over its 40 questions.
    everyone = [(f"p{i % 5}", 1.0) for i in range(40)]
    low, high = stats.binomtest(40, 40).proportion_ci(method="wilson")
    assert estimate([everyone]).half_width == pytest.approx((high - low) / 2)


def test_rows_differ_by_the_paired_interval_of_their_difference():
    """Two rows whose intervals overlap but which differ the same way on every person differ; two
    rows with the same mean that err on different people do not; rows without per-item results
    fall back to whether their intervals overlap."""
    from pipeline_steps.reporting.estimates import Estimate, differ, estimate, paired_interval

    def row(right_per_person, people=10, questions=10):
        return estimate([[(f"p{p}", float(q < right_per_person[p % len(right_per_person)]))
                          for p in range(people) for q in range(questions)]])

    low, high = row([4]), row([5])  # 40 % and 50 %, each ± about 9.6
    assert abs(high.mean - low.mean) < low.half_width + high.half_width
    assert differ(high, low) and differ(low, high)
    value, lower, upper = paired_interval(lambda a, b: a - b, high, low)
    assert value == pytest.approx(0.1) and 0 < lower <= 0.1 <= upper
    # The same 50 % by other people's answers: half the people all right, half all wrong, swapped.
    assert not differ(row([10, 0]), row([0, 10]))
    assert not differ(high, high)
    assert differ(Estimate(0.5, 0.04), Estimate(0.4, 0.05)) and not differ(Estimate(0.5, 0.06), Estimate(0.4, 0.05))


def test_equal_forgetting_chooses_on_the_selection_half_and_reports_the_other(tmp_path):
    """GA_Diff's two points both reach the oracle's Forget VQA on the selection half; the one with the
    higher utility there is chosen, and its *report-half* numbers are shown. GA's points never get
    within the tolerance: its nearest point is taken and the note says it did not reach it."""
    def values(forget, utility):
        return {"forget_vqa": forget, "test_vqa": forget, **{c: utility for c in MLLMU_COLUMNS[1:6]}}

    evaluations = {
        "vanilla": values(0.9, 0.9), "oracle": values(0.3, 0.9),
        "ga_diff/lr~0.001": values((0.3, 0.2), 0.6), "ga_diff/lr~0.0003": values((0.3, 0.5), (0.8, 0.4)),
        "ga/lr~0.001": values(0.0, 0.3), "ga/lr~0.0003": values(0.7, 0.8),
    }
    cells = [arg for variant, v in evaluations.items()
             for arg in ("--cell", f"llava|{variant}|mllmu={write_evaluation(tmp_path, variant, v)}")]
    call_stage("render_tables", "--title", "t", "--equal-forgetting", "0.05", *cells, "--out", tmp_path / "table")
    cells_of = markdown_cells(tmp_path / "table.md")
    assert "50.0 ±" in cells_of["GA_Diff"][0] and "40.0 ±" in cells_of["GA_Diff"][2]  # the report half
    # 30 points below the oracle is nearer than 40 above; 0 of the report half's 50 questions: Wilson's
    # interval [0, 7.1 %].
    assert cells_of["GA"][0] == "0.0 ± 3.6% (-30.0) ‡"
    text = (tmp_path / "table.md").read_text()
    assert "llava / mllmu / GA_Diff: lr 0.0003 (Forget VQA +0.0 pts from the oracle's on the selection half)." in text
    assert "llava / mllmu / GA: lr 0.001 (Forget VQA -30.0 pts from the oracle's on the selection half; " \
        "no point within 5 pts)." in text
    # Not at equal forgetting with GA_Diff: shown, marked ‡ in every column, never ranked against it.
    assert all(cell.endswith(" ‡") for cell in cells_of["GA"]) and "‡: no point within 5 pts" in text
    assert all(cell.startswith("**") for cell in cells_of["GA_Diff"])  # the one row ranked: best alone
    with pytest.raises(SystemExit, match="several operating points"):
        call_stage("render_tables", "--title", "t", *cells, "--out", tmp_path / "other")


@pytest.mark.slow
def test_frontier_joins_each_methods_sweep_points_with_intervals(tmp_path):
    """Every sweep point of each method (two seeds of one point averaged), vanilla and the oracle,
    on Forget VQA and Test VQA against each utility column: drawn, and byte-identical when redrawn."""
    def values(forget, utility):
        return {"forget_vqa": forget, "test_vqa": forget + 0.1, **{c: utility for c in MLLMU_COLUMNS[1:6]}}

    evaluations = {"vanilla": values(0.9, 0.9), "oracle": values(0.3, 0.9),
                   "ga_diff/lr~0.0003/seed~0": values(0.6, 0.8), "ga_diff/lr~0.0003/seed~1": values(0.5, 0.8),
                   "ga_diff/lr~0.001/seed~0": values(0.2, 0.5), "ga_diff/lr~0.001/seed~1": values(0.1, 0.4),
                   "mmunlearner/beta~1.0/modules~all/lr~0.0003/seed~0": values(0.7, 0.9)}
    points = [arg for variant, v in evaluations.items()
              for arg in ("--point", f"5|{variant}={write_evaluation(tmp_path, variant, v)}")]
    for out in ("f1", "f2"):
        call_stage("render_tradeoffs", "--title", "frontier", *points, "--out", tmp_path / out)
    assert (tmp_path / "f1.png").stat().st_size > 20_000
    assert (tmp_path / "f1.png").read_bytes() == (tmp_path / "f2.png").read_bytes()
