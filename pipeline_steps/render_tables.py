"""Stage: one results table (Table 1, the equal-forgetting table, Table 2 or a beta sweep) as CSV,
Markdown and LaTeX.

    python -m pipeline_steps.render_tables --title "Table 1 ..." --vary method \\
        --cell "tiny_llava|ga|synthetic_mllmu=results/.../eval/ga/metrics.json" ... \\
        --out results/tables/table1_forget~5

Each ``--cell`` places one evaluation in the table: row group (a model), variant (its row is the
method, or what ``--vary`` names: the module group or the beta), column group (a benchmark). The
``predictions.jsonl`` beside each ``metrics.json`` gives the intervals (``reporting/estimates.py``);
cells of one row at one operating point but several seeds are averaged. A row may have several
operating points (a sweep) only with ``--equal-forgetting TOLERANCE``: then each row reports the
point the rule picks (``reporting/equal_forgetting.py``), chosen on the selection half of the
people and reported on the other half, and the chosen points are listed under the table.
Reads only evaluation outputs, so tables are rebuilt without rerunning anything upstream.
"""

from __future__ import annotations

from pathlib import Path

from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.equal_forgetting import choose
from .reporting.estimates import column_estimates, read_items
from .reporting.labels import calibration_outcomes, method_notes, point_label, scoring_note, variant_label
from .reporting.tables import Table, to_csv, to_latex, to_markdown
from .storage import atomic_file, read_json
from .study.variants import Variant

FORMATS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--vary", choices=("method", "modules", "beta"), default="method",
                        help="what tells the rows apart")
    parser.add_argument("--cell", action="append", required=True, metavar="GROUP|VARIANT|COLUMN_GROUP=METRICS")
    parser.add_argument("--equal-forgetting", type=float, metavar="TOLERANCE",
                        help="report each row at the sweep point whose Forget VQA is within TOLERANCE of the "
                        "oracle's with the highest utility (chosen on the selection half of the people)")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .csv, .md and .tex are written")
    return parser


def read_cells(specs: list[str]) -> dict[tuple[str, str, str], dict[str, list[dict]]]:
    """(row group, row variant, column group) -> operating point -> its seeds' evaluations."""
    cells: dict[tuple[str, str, str], dict[str, list[dict]]] = {}
    for key, path in labelled_paths(specs, "GROUP|VARIANT|COLUMN_GROUP=METRICS_JSON"):
        parts = key.split("|")
        if len(parts) != 3:
            raise StageError(f"--cell '{key}' is not GROUP|VARIANT|COLUMN_GROUP")
        group, variant, column_group = parts
        parsed = Variant.parse(variant)
        try:
            items = read_items(path)
        except ValueError as error:
            raise StageError(str(error)) from None
        metrics = read_json(path)
        evaluation = {"table": metrics["table"], "items": items, "metrics": metrics}
        cells.setdefault((group, parsed.row.name, column_group), {}).setdefault(parsed.point.name, []).append(evaluation)
    return cells


def main(args) -> None:
    table = Table(args.title)
    cells = read_cells(args.cell)
    selecting = args.equal_forgetting is not None
    half = "report" if selecting else "all"
    for (group, row, column_group), points in cells.items():
        if len(points) > 1 and not selecting:
            raise StageError(f"row {row} of {group} / {column_group} has several operating points "
                             f"({', '.join(points)}); a table of one point per row takes one of them, "
                             "--equal-forgetting chooses")
        point = next(iter(points))
        if selecting and Variant.parse(row).unlearned:
            oracle = cells.get((group, "oracle", column_group))
            if oracle is None:
                raise StageError(f"--equal-forgetting needs the oracle's evaluation for {group} / {column_group}")
            try:
                choice = choose({p: column_estimates(seeds, "selection") for p, seeds in points.items()},
                                column_estimates(next(iter(oracle.values())), "selection"), args.equal_forgetting)
            except ValueError as error:
                raise StageError(str(error)) from None
            point = choice.point
            if not choice.reached:
                table.unranked.add((group, variant_label(row, args.vary)))
            stopped = calibration_outcomes(e["metrics"] for e in points[point])
            table.notes.append(
                f"{group} / {column_group} / {variant_label(row, args.vary)}: {point_label(point)} "
                f"(Forget VQA {100 * choice.distance:+.1f} pts from the oracle's on the selection half"
                + ("" if choice.reached else f"; no point within {100 * args.equal_forgetting:.0f} pts")
                + ("" if stopped is None else f"; stopped at, per seed: {stopped}") + ").")
        try:
            table.add(group, variant_label(row, args.vary), column_group, column_estimates(points[point], half))
        except ValueError as error:
            raise StageError(str(error)) from None
    evaluations = [e["metrics"] for points in cells.values() for seeds in points.values() for e in seeds]
    try:
        table.notes[:0] = [scoring_note(evaluations), *method_notes(evaluations)]
    except ValueError as error:
        raise StageError(str(error)) from None
    if selecting:
        table.notes.insert(0, "Chosen on the selection half of the people (even positions in each column's sorted "
                           "profile ids), reported on the other half:")
    if table.unranked:
        table.notes.insert(0, f"‡: no point within {100 * args.equal_forgetting:.0f} pts of the oracle's Forget VQA "
                           "on the selection half, so not at equal forgetting with the others: shown, not ranked.")
    for suffix, render in FORMATS.items():
        with atomic_file(args.out.with_name(f"{args.out.name}.{suffix}")) as handle:
            handle.write(render(table))


if __name__ == "__main__":
    run_stage(main, build_parser())
