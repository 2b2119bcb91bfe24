"""Stage: one results table (paper Table 1 or 2, or a beta sweep) as CSV, Markdown and LaTeX.

    python -m pipeline_steps.render_tables --title "Table 1 ..." --vary method \\
        --cell "tiny_llava|ga|synthetic_mllmu=results/.../eval/ga/metrics.json" ... \\
        --out results/tables/table1_forget~5

Each ``--cell`` places one ``metrics.json`` in the table: row group (a model), variant (the row,
named by ``--vary``: the method, the module group or the beta), column group (a benchmark).
Reads only evaluation outputs, so tables are rebuilt without rerunning anything upstream.
"""

from __future__ import annotations

from pathlib import Path

from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.labels import variant_label
from .reporting.tables import Table, to_csv, to_latex, to_markdown
from .storage import atomic_file, read_json

FORMATS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--vary", choices=("method", "modules", "beta"), default="method",
                        help="what tells the rows apart")
    parser.add_argument("--cell", action="append", required=True, metavar="GROUP|VARIANT|COLUMN_GROUP=METRICS")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .csv, .md and .tex are written")
    return parser


def main(args) -> None:
    table = Table(args.title)
    for key, path in labelled_paths(args.cell, "GROUP|VARIANT|COLUMN_GROUP=METRICS_JSON"):
        parts = key.split("|")
        if len(parts) != 3:
            raise StageError(f"--cell '{key}' is not GROUP|VARIANT|COLUMN_GROUP")
        group, variant, column_group = parts
        table.add(group, variant_label(variant, args.vary), column_group, read_json(path)["table"])
    for suffix, render in FORMATS.items():
        with atomic_file(args.out.with_name(f"{args.out.name}.{suffix}")) as handle:
            handle.write(render(table))


if __name__ == "__main__":
    run_stage(main, build_parser())
