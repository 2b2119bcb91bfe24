"""Stage: case studies for one benchmark, model and forget ratio (paper Table 3), as Markdown.

    python -m pipeline_steps.render_case_studies --title "..." \\
        --variant "vanilla=results/.../eval/vanilla/predictions.jsonl" --variant "ga=..." \\
        --out results/tables/<benchmark>/<model>/case_studies_forget~5.md
"""

from __future__ import annotations

from pathlib import Path

from .cli import labelled_paths, run_stage, stage_parser
from .reporting.case_studies import case_studies_markdown
from .reporting.labels import variant_label
from .storage import atomic_file


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--variant", action="append", required=True, metavar="VARIANT=PREDICTIONS_JSONL")
    parser.add_argument("--per-column", type=int, default=3, help="items per column (forget VQA, forget QA, retain VQA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scoring", choices=("likelihood", "generate"), default="likelihood",
                        help="whose multiple-choice picks to show (the evaluation's primary mode)")
    parser.add_argument("--out", type=Path, required=True)
    return parser


def main(args) -> None:
    variants = [(variant_label(v), path) for v, path in labelled_paths(args.variant, "VARIANT=PREDICTIONS_JSONL")]
    with atomic_file(args.out) as handle:
        handle.write(case_studies_markdown(args.title, variants, args.per_column, args.seed, args.scoring))


if __name__ == "__main__":
    run_stage(main, build_parser())
