"""Stage: forgetting against utility for one benchmark and model, over forget ratios (paper Fig. 4).

    python -m pipeline_steps.render_tradeoffs --title "..." \\
        --point "5|vanilla=results/.../forget~5/eval/vanilla/metrics.json" \\
        --point "5|ga=results/.../forget~5/eval/ga/metrics.json" ... --out results/figures/.../tradeoff

Every method's point is its change from the vanilla model of the same forget ratio, so each
ratio needs a ``vanilla`` point. Writes ``<out>.png`` and ``<out>.pdf``.
"""

from __future__ import annotations

from pathlib import Path

from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.figures import save, tradeoff
from .study.variants import Variant
from .storage import read_json


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--point", action="append", required=True, metavar="RATIO|VARIANT=METRICS_JSON")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .png and .pdf are written")
    return parser


def main(args) -> None:
    tables: dict[tuple[int, str], dict] = {}
    for key, path in labelled_paths(args.point, "RATIO|VARIANT=METRICS_JSON"):
        ratio, _, variant = key.partition("|")
        if not (ratio.isdigit() and variant):
            raise StageError(f"--point '{key}' does not start with RATIO|VARIANT")
        tables[(int(ratio), variant)] = read_json(path)["table"]
    points = []
    for (ratio, variant), table in tables.items():
        if variant == "vanilla":
            continue
        if (ratio, "vanilla") not in tables:
            raise StageError(f"forget ratio {ratio} has no vanilla point to measure changes from")
        vanilla = tables[(ratio, "vanilla")]
        points.append({"method": Variant.parse(variant).method, "ratio": ratio,
                       "delta": {column: table[column] - vanilla[column] for column in table}})
    save(tradeoff(points, args.title), args.out)


if __name__ == "__main__":
    run_stage(main, build_parser())
