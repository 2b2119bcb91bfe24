"""Stage: the robustness table: each method's Forget VQA after every attack next to the oracle's, and its membership-inference AUCs.

    python -m pipeline_steps.render_robustness --title "Robustness ..." \\
        --cell "tiny_llava|ga|synthetic_mllmu|-=results/.../eval/ga/metrics.json" \\
        --cell "tiny_llava|ga|synthetic_mllmu|relearn=results/.../attacks/relearn/eval/ga/metrics.json" \\
        --cell "tiny_llava|ga|synthetic_mllmu|mia=results/.../attacks/mia/ga/attack.json" ... \\
        --out results/tables/robustness_forget~10

Each ``--cell`` is one variant (a row: vanilla, the oracle, a method) under one attack entry (``-``:
none): an evaluation's ``metrics.json`` (unattacked, or of the model an attack produced: the
attack's record is found through the changes it evaluated) or a membership-inference record
(``attack.json``, with ``scores.jsonl`` beside it). Columns:

* Forget VQA unattacked, over every forget person and over the report half;
* Forget VQA after each model attack, on the people its kind is read on (relearning: the report
  half it did not train on, so it sits next to the unattacked report-half value);
* per membership-inference entry, the AUC of each score on the ``--mia-group`` pairs (default
  ``vqa``: the image-grounded pairs unlearning targets), and the gap of the LOSS AUC to the
  oracle's with its paired interval (open-unlearning's privleak in percent in the CSV).

Every value carries its 95 % interval (``reporting/estimates.py``). The oracle's row is the
"truly forgotten" reference of every column: a method's value after an attack is read against
the oracle's after the same attack.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .attacks import get_attack
from .attacks.membership import SCORES, privleak_gap, split_scores
from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.estimates import column_estimates, read_items
from .reporting.labels import variant_label
from .reporting.tables import latex_escape
from .storage import atomic_file, read_json

SCORE_LABELS = {"loss": "LOSS", "zlib": "zlib", "min_k": "Min-K%", "min_k_plus_plus": "Min-K%++"}
FORGET = "forget_vqa"


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--cell", action="append", required=True, metavar="GROUP|VARIANT|COLUMN_GROUP|ATTACK=FILE")
    parser.add_argument("--mia-group", default="vqa", help="which pairs the MIA columns read: vqa, text or all")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .csv, .md and .tex are written")
    return parser


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def forget_estimate(metrics_path: Path, which: str):
    try:
        items = read_items(metrics_path)
    except ValueError as error:
        raise StageError(str(error)) from None
    if items is None or FORGET not in items:
        raise StageError(f"{metrics_path} has no per-item Forget VQA results (predictions.jsonl) to read")
    return column_estimates([{"table": read_json(metrics_path)["table"], "items": items}], which)[FORGET]


def percent(estimate) -> str:
    return f"{100 * estimate.mean:.1f} ± {100 * (estimate.half_width or 0):.1f}"


def interval(value: float, low: float, high: float, digits: int = 2) -> str:
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def build_rows(cells, mia_group: str) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (group, row label, then one text per column) and notes."""
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    columns: list[str] = ["Forget VQA", "Forget VQA (report half)"]
    mia: dict[tuple[str, str, str, str], list[dict]] = {}
    notes: list[str] = []
    for key, path in cells:
        parts = key.split("|")
        if len(parts) != 4:
            raise StageError(f"--cell '{key}' is not GROUP|VARIANT|COLUMN_GROUP|ATTACK")
        group, variant, column_group, name = parts
        row = rows.setdefault((group, variant, column_group), {})
        if name == "-":
            row["Forget VQA"] = percent(forget_estimate(path, "all"))
            row["Forget VQA (report half)"] = percent(forget_estimate(path, "report"))
            continue
        if path.name == "metrics.json":
            changes = read_json(path).get("changes")
            record_path = Path(changes).parent / "attack.json" if changes else None
            if record_path is None or not record_path.exists():
                raise StageError(f"{path} is not the evaluation of an attacked model (its changes have no attack.json)")
            record = read_json(record_path)
            attack = get_attack(record["kind"])
            column = f"{name}: Forget VQA" + (" (report half)" if attack.evaluated_half == "report" else "")
            row[column] = percent(forget_estimate(path, attack.evaluated_half))
            columns += [column] if column not in columns else []
            continue
        record = read_json(path)
        if "auc" not in record.get("result", {}):
            raise StageError(f"{path} is not a membership-inference record (no AUCs)")
        auc = record["result"]["auc"]
        if mia_group not in auc:
            raise StageError(f"{path} has no AUCs of pairs '{mia_group}' (it has {', '.join(auc)})")
        for score in SCORES:
            column = f"{name}: AUC {SCORE_LABELS[score]}"
            value = auc[mia_group][score]
            row[column] = interval(value["auc"], value["low"], value["high"])
            columns += [column] if column not in columns else []
        mia[(group, variant, column_group, name)] = read_jsonl(path.with_name("scores.jsonl"))
    # The gap of every variant's LOSS AUC to the oracle's, on the same pairs.
    for (group, variant, column_group, name), scores in mia.items():
        oracle = mia.get((group, "oracle", column_group, name))
        if oracle is None or variant == "oracle":
            continue
        gap = privleak_gap(split_scores(scores, mia_group, "loss"), split_scores(oracle, mia_group, "loss"))
        column = f"{name}: AUC gap to oracle (LOSS)"
        rows[(group, variant, column_group)][column] = interval(gap["gap"]["value"], gap["gap"]["low"],
                                                                gap["gap"]["high"])
        rows[(group, variant, column_group)][f"{name}: privleak % (LOSS)"] = interval(
            gap["privleak"]["value"], gap["privleak"]["low"], gap["privleak"]["high"], digits=1)
        for extra in (column, f"{name}: privleak % (LOSS)"):
            columns += [extra] if extra not in columns else []
    header = ["model", "benchmark", "method", *columns]
    body = [[group, column_group, variant_label(variant), *(values.get(c, "") for c in columns)]
            for (group, variant, column_group), values in rows.items()]
    notes.append("Accuracies in percent ± the half-width of their 95 % interval; AUCs and gaps with their 95 % "
                 f"interval in brackets, on the {mia_group} training pairs of the forget people (members) against "
                 "the holdout people (non-members). Read each row against the oracle's (never saw the forget people).")
    return header, body, notes


def to_markdown(title: str, header: list[str], body: list[list[str]], notes: list[str], markdown_drop=()) -> str:
    keep = [i for i, h in enumerate(header) if h not in markdown_drop]
    lines = [f"**{title}**", "", "| " + " | ".join(header[i] for i in keep) + " |",
             "|" + "---|" * len(keep)]
    lines += ["| " + " | ".join(row[i] for i in keep) + " |" for row in body]
    return "\n".join(lines + [""] + notes) + "\n"


def to_csv(header, body) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(body)
    return buffer.getvalue()


def to_latex(title: str, header, body) -> str:
    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(title)}}}",
             "\\begin{tabular}{" + "l" * len(header) + "}", "\\toprule",
             " & ".join(latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + " \\\\" for row in body]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}", "\\end{table}"]) + "\n"


def main(args) -> None:
    cells = labelled_paths(args.cell, "GROUP|VARIANT|COLUMN_GROUP|ATTACK=FILE")
    header, body, notes = build_rows(cells, args.mia_group)
    outputs = {"md": to_markdown(args.title, header, body, notes), "csv": to_csv(header, body),
               "tex": to_latex(args.title, header, body)}
    for suffix, text in outputs.items():
        with atomic_file(args.out.with_name(f"{args.out.name}.{suffix}")) as handle:
            handle.write(text)


if __name__ == "__main__":
    run_stage(main, build_parser())
