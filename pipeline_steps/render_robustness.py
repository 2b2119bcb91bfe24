"""Stage: the robustness table: each method's Forget VQA after every attack next to the oracle's, and its membership-inference AUCs.

    python -m pipeline_steps.render_robustness --title "Robustness ..." \\
        --cell "tiny_llava|ga|synthetic_mllmu|-=results/.../eval/ga/metrics.json" \\
        --cell "tiny_llava|ga|synthetic_mllmu|relearn=results/.../attacks/relearn/eval/ga/metrics.json" \\
        --cell "tiny_llava|ga|synthetic_mllmu|mia=results/.../attacks/mia/ga/attack.json" ... \\
        --out results/tables/robustness_forget~10

Each ``--cell`` is one variant (a row: vanilla, the oracle, a method) under one attack entry (``-``:
none): an evaluation's ``metrics.json`` (unattacked, or of the model an attack produced: the
attack's record is found through the changes it evaluated) or a membership-inference record
(``attack.json``, with ``scores.jsonl`` beside it) or a probe's record (``attack.json`` with its
scored Forget VQA items). Columns:

* Forget VQA unattacked, over every forget person and over the report half;
* Forget VQA after each model attack, on the people its kind is read on (relearning: the report
  half it did not train on, so it sits next to the unattacked report-half value);
* Forget VQA under each probe (the questions asked with the name, after the identity exchange, or
  after the person's other facts);
* per membership-inference entry, the AUC of each score on the ``--mia-group`` pairs (default
  ``vqa``: the image-grounded pairs unlearning targets), and the gap of the LOSS AUC to the
  oracle's and MUSE's privleak (``attacks/membership.py``), each with its paired interval over people.

Every value carries its 95 % interval (``reporting/estimates.py``). The oracle's row is the
"truly forgotten" reference of every column: a method's value after an attack is read against
the oracle's after the same attack.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .attacks import get_attack
from .attacks.membership import SCORES, privleak_gap, split_scores
from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.equal_forgetting import choose
from .reporting.estimates import column_estimates, estimate, half, read_items
from .reporting.figures import STYLE, plt, save
from .reporting.labels import method_notes, point_label, scoring_note, variant_label
from .reporting.tables import latex_escape
from .storage import atomic_file, read_json
from .study.variants import Variant

SCORE_LABELS = {"loss": "LOSS", "zlib": "zlib", "min_k": "Min-K%", "min_k_plus_plus": "Min-K%++"}
FORGET = "forget_vqa"


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--cell", action="append", required=True, metavar="GROUP|VARIANT|COLUMN_GROUP|ATTACK=FILE")
    parser.add_argument("--mia-group", default="vqa", help="which pairs the MIA columns read: vqa, text or all")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .csv, .md and .tex are written")
    parser.add_argument("--figure", type=Path, help="figure stem; .png and .pdf are written")
    parser.add_argument("--equal-forgetting", type=float, metavar="TOLERANCE",
                        help="a row with several operating points shows the one the equal-forgetting rule picks "
                        "(reporting/equal_forgetting.py) on the selection half of its unattacked evaluation")
    return parser


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def forget_estimate(metrics_path: Path, which: str):
    try:
        items = read_items(metrics_path)
    except ValueError as error:
        raise StageError(str(error)) from None
    if items is None or FORGET not in items:
        raise StageError(f"{metrics_path} has no per-item Forget VQA results (predictions.jsonl) to read")
    return column_estimates([{"table": read_json(metrics_path)["table"], "items": items}], which)[FORGET]


@dataclass(frozen=True)
class Value:
    """One cell: a mean and its 95 % interval; an accuracy (shown in percent) or a number."""

    mean: float
    low: float
    high: float
    accuracy: bool = False
    digits: int = 2

    @classmethod
    def of(cls, estimate) -> Value:
        half_width = estimate.half_width or 0.0
        return cls(estimate.mean, estimate.mean - half_width, estimate.mean + half_width, accuracy=True)

    def text(self) -> str:
        if self.accuracy:
            return f"{100 * self.mean:.1f} ± {100 * (self.high - self.low) / 2:.1f}"
        return f"{self.mean:.{self.digits}f} [{self.low:.{self.digits}f}, {self.high:.{self.digits}f}]"


@dataclass
class Robustness:
    """(row group, variant, column group) -> column -> Value, the columns in order, and which of
    them are accuracies after a model attack (the figure's bars) or MIA AUCs."""

    rows: dict[tuple[str, str, str], dict[str, Value]] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    attacked: list[str] = field(default_factory=list)
    auc: dict[str, str] = field(default_factory=dict)  # MIA entry -> its LOSS AUC column

    def put(self, key: tuple[str, str, str], column: str, value: Value) -> None:
        self.rows.setdefault(key, {})[column] = value
        if column not in self.columns:
            self.columns.append(column)


UNATTACKED, UNATTACKED_REPORT = "Forget VQA", "Forget VQA (report half)"


def select_points(cells, tolerance: float | None) -> tuple[list, list[str]]:
    """The cells of one operating point per row: a row (a method, at its mask) with several points
    keeps the one the equal-forgetting rule picks from their unattacked evaluations, measured on
    the selection half of the people against the oracle's; and a note per choice."""
    unattacked: dict[tuple[str, str, str], dict[str, Path]] = {}
    for key, path in cells:
        group, variant, column_group, name = (key.split("|") + [""] * 4)[:4]
        if name == "-":
            unattacked.setdefault((group, Variant.parse(variant).row.name, column_group), {})[variant] = path

    def selection(path):
        try:
            return column_estimates([{"table": read_json(path)["table"], "items": read_items(path)}], "selection")
        except ValueError as error:
            raise StageError(f"{path}: {error}") from None

    chosen, notes = {}, []
    for (group, row, column_group), points in unattacked.items():
        if len(points) == 1:
            chosen[(group, column_group)] = chosen.get((group, column_group), set()) | set(points)
            continue
        oracle = unattacked.get((group, "oracle", column_group))
        if tolerance is None or oracle is None:
            raise StageError(f"row {row} of {group} / {column_group} has several operating points ({', '.join(points)}); "
                             "--equal-forgetting (with the oracle's evaluation) chooses one")
        choice = choose({v: selection(path) for v, path in points.items()}, selection(next(iter(oracle.values()))),
                        tolerance)
        chosen[(group, column_group)] = chosen.get((group, column_group), set()) | {choice.point}
        notes.append(f"{group} / {column_group} / {variant_label(row)}: {point_label(choice.point)}, its equal-forgetting "
                     f"point (Forget VQA {100 * choice.distance:+.1f} pts from the oracle's on the selection half"
                     + ("" if choice.reached else f"; none within {100 * tolerance:.0f} pts") + ").")
    kept = [(key, path) for key, path in cells
            if key.split("|")[1] in chosen.get((key.split("|")[0], key.split("|")[2]), ())]
    return kept, notes


def build(cells, mia_group: str) -> Robustness:
    table = Robustness(columns=[UNATTACKED, UNATTACKED_REPORT])
    mia: dict[tuple[str, str, str, str], list[dict]] = {}
    for key, path in cells:
        parts = key.split("|")
        if len(parts) != 4:
            raise StageError(f"--cell '{key}' is not GROUP|VARIANT|COLUMN_GROUP|ATTACK")
        group, variant, column_group, name = parts
        row = (group, variant, column_group)
        table.rows.setdefault(row, {})
        if name == "-":
            table.put(row, UNATTACKED, Value.of(forget_estimate(path, "all")))
            table.put(row, UNATTACKED_REPORT, Value.of(forget_estimate(path, "report")))
            continue
        if path.name == "metrics.json":
            changes = read_json(path).get("changes")
            record_path = Path(changes).parent / "attack.json" if changes else None
            if record_path is None or not record_path.exists():
                raise StageError(f"{path} is not the evaluation of an attacked model (its changes have no attack.json)")
            attack = get_attack(read_json(record_path)["kind"])
            column = f"{name}: Forget VQA" + (" (report half)" if attack.evaluated_half == "report" else "")
            table.put(row, column, Value.of(forget_estimate(path, attack.evaluated_half)))
            table.attacked += [column] if column not in table.attacked else []
            continue
        record = read_json(path)
        result = record.get("result", {})
        if "items" in result:  # an attack that scores the forget column itself (probing)
            which = get_attack(record["kind"]).evaluated_half
            items = half([tuple(item) for item in result["items"]], which)
            column = f"{name}: Forget VQA" + (" (report half)" if which == "report" else "")
            table.put(row, column, Value.of(estimate([items])))
            table.attacked += [column] if column not in table.attacked else []
            continue
        auc = result.get("auc")
        if auc is None:
            raise StageError(f"{path} is neither a membership-inference record (AUCs) nor scored items")
        if mia_group not in auc:
            raise StageError(f"{path} has no AUCs of pairs '{mia_group}' (it has {', '.join(auc)})")
        for score in SCORES:
            value = auc[mia_group][score]
            table.put(row, f"{name}: AUC {SCORE_LABELS[score]}", Value(value["auc"], value["low"], value["high"]))
        table.auc[name] = f"{name}: AUC {SCORE_LABELS['loss']}"
        mia[(group, variant, column_group, name)] = read_jsonl(path.with_name("scores.jsonl"))
    # The gap of every variant's LOSS AUC to the oracle's, on the same pairs (the same people resampled).
    for (group, variant, column_group, name), scores in mia.items():
        oracle = mia.get((group, "oracle", column_group, name))
        if oracle is None or variant == "oracle":
            continue
        gap = privleak_gap(split_scores(scores, mia_group, "loss"), split_scores(oracle, mia_group, "loss"))
        row = (group, variant, column_group)
        table.put(row, f"{name}: AUC gap to oracle (LOSS)", Value(gap["gap"]["value"], gap["gap"]["low"],
                                                                  gap["gap"]["high"]))
        table.put(row, f"{name}: privleak % (LOSS)", Value(gap["privleak"]["value"], gap["privleak"]["low"],
                                                           gap["privleak"]["high"], digits=1))
    return table


def text_rows(table: Robustness) -> tuple[list[str], list[list[str]]]:
    header = ["model", "benchmark", "method", *table.columns]
    body = [[group, column_group, variant_label(variant),
             *(values[c].text() if c in values else "" for c in table.columns)]
            for (group, variant, column_group), values in table.rows.items()]
    return header, body


def figure(table: Robustness, title: str):
    """Per row group: Forget VQA before (over all the forget people, and over the report half) and
    after each model attack (on the people it is read on), as bars with their intervals; and each
    MIA entry's LOSS AUC, chance solid and the oracle's dashed."""
    groups = list(dict.fromkeys((g, cg) for g, _, cg in table.rows))
    bars = [UNATTACKED, UNATTACKED_REPORT, *table.attacked]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.2 * len(groups)), squeeze=False,
                                 gridspec_kw={"width_ratios": [3, 1.3]})
        for (group, column_group), (left, right) in zip(groups, axes):
            rows = [(v, values) for (g, v, cg), values in table.rows.items() if (g, cg) == (group, column_group)]
            x, width = np.arange(len(rows)), 0.8 / max(len(bars), 1)
            for i, column in enumerate(bars):
                shown = [(j, values[column]) for j, (_, values) in enumerate(rows) if column in values]
                if not shown:
                    continue
                positions = np.array([x[j] for j, _ in shown]) + (i - (len(bars) - 1) / 2) * width
                means = np.array([100 * v.mean for _, v in shown])
                errors = np.array([[100 * (v.mean - v.low) for _, v in shown], [100 * (v.high - v.mean) for _, v in shown]])
                left.bar(positions, means, width, yerr=errors, capsize=1.5, label={UNATTACKED: "no attack (all)",
                         UNATTACKED_REPORT: "no attack (report half)"}.get(column, column.replace(": Forget VQA", "")))
            left.set_xticks(x, [variant_label(v) for v, _ in rows], rotation=30, ha="right")
            left.set_ylabel("Forget VQA (%)")
            left.set_title(f"{group} on {column_group}: forget accuracy after each attack (oracle: row 'Oracle')")
            left.legend(fontsize=6, ncol=2)
            for name, column in table.auc.items():
                shown = [(j, values[column]) for j, (_, values) in enumerate(rows) if column in values]
                right.errorbar([v.mean for _, v in shown], [j for j, _ in shown], fmt="o", ms=3, capsize=2,
                               xerr=[[v.mean - v.low for _, v in shown], [v.high - v.mean for _, v in shown]], label=name)
                oracle = dict(rows).get("oracle", {}).get(column)
                if oracle is not None:
                    right.axvline(oracle.mean, color="grey", linestyle="--", linewidth=0.8)
            right.axvline(0.5, color="black", linewidth=0.5)
            right.set_yticks(range(len(rows)), [variant_label(v) for v, _ in rows])
            right.invert_yaxis()
            right.set_xlim(0, 1)
            right.set_xlabel("MIA AUC (LOSS); dashed: the oracle's")
        fig.suptitle(title)
        fig.tight_layout()
    return fig


def to_markdown(title: str, header: list[str], body: list[list[str]], notes: list[str]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
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
    cells, choices = select_points(cells, args.equal_forgetting)
    table = build(cells, args.mia_group)
    header, body = text_rows(table)
    evaluations = [read_json(path) for _, path in cells if path.name == "metrics.json"]
    try:
        scoring = scoring_note(evaluations)
    except ValueError as error:
        raise StageError(str(error)) from None
    notes = [*choices, scoring, *method_notes(evaluations), "Accuracies in percent ± the half-width of their 95 % interval; AUCs and gaps with their 95 % interval "
             f"in brackets, on the {args.mia_group} training pairs of the forget people (members) against the holdout "
             "people (non-members). Read each row against the oracle's (it never saw the forget people)."]
    outputs = {"md": to_markdown(args.title, header, body, notes), "csv": to_csv(header, body),
               "tex": to_latex(args.title, header, body)}
    for suffix, text in outputs.items():
        with atomic_file(args.out.with_name(f"{args.out.name}.{suffix}")) as handle:
            handle.write(text)
    if args.figure:
        save(figure(table, args.title), args.figure)


if __name__ == "__main__":
    run_stage(main, build_parser())
