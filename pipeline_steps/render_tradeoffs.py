"""Stage: the trade-off frontiers of one benchmark and model: every sweep point of every method,
forgetting against each utility column, with 95 % intervals (paper Fig. 4, over sweeps).

    python -m pipeline_steps.render_tradeoffs --title "..." \\
        --point "5|vanilla=results/.../forget~5/eval/vanilla/metrics.json" \\
        --point "5|oracle=results/.../forget~5/eval/oracle/metrics.json" \\
        --point "5|ga/lr~0.0003=results/.../eval/ga/lr~0.0003/metrics.json" ... --out results/figures/.../tradeoff

Each forget ratio needs a ``vanilla`` point (and should have an ``oracle`` one, the target of the
forgetting axes). A method's points are joined in the order given (its sweep's order); points of
one operating point with several seeds are averaged (``reporting/estimates.py``: intervals from
the ``predictions.jsonl`` beside each ``metrics.json``). Writes ``<out>.png`` and ``<out>.pdf``.
"""

from __future__ import annotations

from pathlib import Path

from .cli import StageError, labelled_paths, run_stage, stage_parser
from .reporting.estimates import column_estimates, read_items
from .reporting.figures import frontier, save
from .reporting.labels import variant_label
from .storage import read_json
from .study.variants import Variant


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--point", action="append", required=True, metavar="RATIO|VARIANT=METRICS_JSON")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .png and .pdf are written")
    return parser


def main(args) -> None:
    # (ratio, row) -> operating point -> its seeds' evaluations, in the order given
    rows: dict[tuple[int, str], dict[str, list[dict]]] = {}
    for key, path in labelled_paths(args.point, "RATIO|VARIANT=METRICS_JSON"):
        ratio, _, variant = key.partition("|")
        if not (ratio.isdigit() and variant):
            raise StageError(f"--point '{key}' does not start with RATIO|VARIANT")
        parsed = Variant.parse(variant)
        evaluation = {"table": read_json(path)["table"], "items": read_items(path)}
        rows.setdefault((int(ratio), parsed.row.name), {}).setdefault(parsed.point.name, []).append(evaluation)
    for ratio in sorted({ratio for ratio, _ in rows}):
        if (ratio, "vanilla") not in rows:
            raise StageError(f"forget ratio {ratio} has no vanilla point to compare with")
    series, references = [], []
    for (ratio, row), points in rows.items():
        estimates = [column_estimates(seeds) for seeds in points.values()]
        if Variant.parse(row).unlearned:
            series.append({"method": variant_label(row), "ratio": ratio, "points": estimates})
        else:
            references.append({"name": variant_label(row), "ratio": ratio, "values": estimates[0]})
    save(frontier(series, references, args.title), args.out)


if __name__ == "__main__":
    run_stage(main, build_parser())
