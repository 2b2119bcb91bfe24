"""Stage: the layer heatmap of one benchmark, model and forget ratio (paper Figs. 5/6).

    python -m pipeline_steps.render_heatmaps --title "..." \\
        --panel "mask=results/.../changes/mask.json" --panel "ga=results/.../changes/ga.json" ... \\
        --out results/figures/<benchmark>/<model>/layer_heatmap_forget~5

Each panel is a ``locate_changes`` output: where the mask's n entries, or a method's n largest
updates, lie by layer and module. Writes ``<out>.png`` and ``<out>.pdf``.
"""

from __future__ import annotations

from pathlib import Path

from .cli import labelled_paths, run_stage, stage_parser
from .reporting.figures import layer_heatmaps, save
from .reporting.labels import variant_label
from .storage import read_json


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--title", required=True)
    parser.add_argument("--panel", action="append", required=True, metavar="VARIANT=CHANGES_JSON")
    parser.add_argument("--out", type=Path, required=True, help="output stem; .png and .pdf are written")
    return parser


def main(args) -> None:
    panels = [(variant_label(variant), read_json(path))
              for variant, path in labelled_paths(args.panel, "VARIANT=CHANGES_JSON")]
    save(layer_heatmaps(panels, args.title), args.out)


if __name__ == "__main__":
    run_stage(main, build_parser())
