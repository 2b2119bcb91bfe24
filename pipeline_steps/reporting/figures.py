"""The figures: layer heatmaps (paper Figs. 5/6) and the trade-off frontiers (Fig. 4, over sweeps).

Figures are saved as PNG and PDF with no timestamp or version in their metadata, so the same
inputs give byte-identical files and a rerun that changes nothing shows no difference.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
import numpy as np  # noqa: E402

from ..storage import atomic_file  # noqa: E402
from .labels import COLUMNS, ORACLE_TARGETS, OTHER_NAMES, table_columns, utility_columns  # noqa: E402

# Rows of the heatmaps: the linear layers of a transformer block, in the paper's order.
BLOCK_ROWS = {
    "language": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "vision": ("q_proj", "k_proj", "v_proj", "qkv", "out_proj", "proj", "fc1", "fc2"),
}
PART_TITLES = {"language": "Language model", "vision": "Vision encoder"}
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "svg.hashsalt": "mmunlearner",
         "pdf.compression": 6}


def save(figure, stem) -> list[str]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically and reproducibly; return their paths."""
    paths = []
    for suffix, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None,
                                                                   "Creator": None})):
        path = f"{stem}.{suffix}"
        with atomic_file(path, "wb") as handle:
            figure.savefig(handle, format=suffix, dpi=200, metadata=metadata, bbox_inches="tight")
        paths.append(path)
    plt.close(figure)
    return paths


def heatmap_grid(panel: dict, part: str) -> tuple[np.ndarray, list[str], list[int]]:
    """Share (in %) of a panel's selected entries per (block row, layer) of one part."""
    layout = [c for c in panel["layout"] if c["part"] == part and c["layer"] is not None]
    rows = [r for r in BLOCK_ROWS[part] if any(c["module_type"] == r for c in layout)]
    layers = sorted({c["layer"] for c in layout})
    grid = np.zeros((len(rows), len(layers)))
    selected = max(panel["selected"], 1)
    for cell in panel["cells"]:
        if cell["part"] == part and cell["module_type"] in rows and cell["layer"] in layers:
            grid[rows.index(cell["module_type"]), layers.index(cell["layer"])] += 100 * cell["count"] / selected
    return grid, rows, layers


def outside_blocks(panel: dict) -> float:
    """Share (in %) of the selected entries that lie outside the heatmaps' block rows."""
    inside = sum(c["count"] for c in panel["cells"]
                 if c["layer"] is not None and c["module_type"] in BLOCK_ROWS.get(c["part"], ()))
    return 100 * (panel["selected"] - inside) / max(panel["selected"], 1)


def layer_heatmaps(panels: list[tuple[str, dict]], title: str):
    """Methods side by side (columns), language model and vision encoder (rows), one colour scale.

    The scale is a square root: a method that puts all its changes in a few blocks (RMU trains two
    layers' MLPs) would otherwise flatten every other panel to one colour."""
    parts = [p for p in ("language", "vision") if any(heatmap_grid(panels[0][1], p)[1])]
    grids = {(i, part): heatmap_grid(panel, part) for i, (_, panel) in enumerate(panels) for part in parts}
    vmax = max([g.max() for g, _, _ in grids.values()] + [1e-9])
    with plt.rc_context(STYLE):
        heights = [len(grids[(0, part)][1]) + 1.5 for part in parts]
        figure, axes = plt.subplots(len(parts), len(panels), squeeze=False, height_ratios=heights,
                                    figsize=(1.1 + 1.9 * len(panels), 0.3 * sum(heights) + 1.0), layout="constrained")
        for column, (label, panel) in enumerate(panels):
            for row, part in enumerate(parts):
                grid, rows, layers = grids[(column, part)]
                ax = axes[row][column]
                image = ax.imshow(grid, cmap="viridis", norm=PowerNorm(0.5, vmin=0, vmax=vmax), aspect="auto",
                                  interpolation="nearest")
                ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
                ax.set_yticks(range(len(rows)), [r.removesuffix("_proj") for r in rows] if column == 0 else [])
                ax.set_xlabel(f"{PART_TITLES[part]} layer")
                if column == 0:
                    ax.set_ylabel("module")
                if row == 0:
                    ax.set_title(f"{textwrap.fill(label, 22)}\nn = {panel['selected']:,}\n"
                                 f"{outside_blocks(panel):.0f}% outside blocks")
                if len(layers) > 12:
                    ax.set_xticks(range(0, len(layers), 4), [str(layers[i]) for i in range(0, len(layers), 4)])
        colorbar = figure.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
        colorbar.set_label("share of the top-n changed entries (%)")
        figure.suptitle(title)
    return figure


def frontier(series: list[dict], references: list[dict], title: str):
    """Trade-off frontiers (the paper's Fig. 4, over each method's sweep): forgetting (x: Forget VQA,
    and Test VQA in a second row where the benchmark has it) against each utility column (y), in
    absolute values, with 95 % intervals as error bars. Each method's operating points are joined
    in sweep order; the vanilla model (star) and the oracle (cross, with a dotted line at its
    forgetting: the target) are marked; marker shape tells forget ratios apart.

    ``series``: dicts with ``method`` (its label), ``ratio`` and ``points`` (column -> Estimate, in
    sweep order); ``references``: dicts with ``name`` ("Vanilla" or "Oracle (retain only)"),
    ``ratio`` and ``values``."""
    first = (series or references)[0]
    values = first["points"][0] if "points" in first else first["values"]
    columns = table_columns({c: v.mean for c, v in values.items()})
    forgetting = [c for c in ORACLE_TARGETS if c in values]
    utility = utility_columns(columns)
    methods = list(dict.fromkeys(s["method"] for s in series))
    ratios = sorted({s["ratio"] for s in (*series, *references)})
    markers = dict(zip(ratios, "os^Dv<>P*X"))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}

    def scaled(estimate, column):
        scale = 1 if COLUMNS[column][2] == "ROUGE-L" else 100
        return scale * estimate.mean, scale * (estimate.half_width or 0.0)

    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(len(forgetting), len(utility), squeeze=False, sharex="row",
                                    figsize=(2.4 * len(utility), 2.5 * len(forgetting)), layout="constrained")
        for row, x_column in enumerate(forgetting):
            for ax, column in zip(axes[row], utility):
                for s in series:
                    xs, xerr = zip(*(scaled(p[x_column], x_column) for p in s["points"]))
                    ys, yerr = zip(*(scaled(p[column], column) for p in s["points"]))
                    ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, color=colours[s["method"]], marker=markers[s["ratio"]],
                                markersize=4, markeredgecolor="black", markeredgewidth=0.4, linewidth=0.9,
                                elinewidth=0.5, capsize=1.5, alpha=0.9, zorder=3)
                for reference in references:
                    (x, dx), (y, dy) = scaled(reference["values"][x_column], x_column), scaled(reference["values"][column], column)
                    oracle = reference["name"] != OTHER_NAMES["vanilla"]
                    ax.errorbar([x], [y], xerr=[dx], yerr=[dy], color="black", marker="X" if oracle else "*",
                                markersize=6 if oracle else 8, linestyle="", elinewidth=0.5, capsize=1.5, zorder=4)
                    if oracle:
                        ax.axvline(x, color="grey", linestyle=":", linewidth=0.8, zorder=1)
                subset, task, metric, _ = COLUMNS[column]
                x_subset, x_task, _, _ = COLUMNS[x_column]
                ax.set_title(f"{subset} {task}")
                ax.set_xlabel(f"{x_subset} {x_task} acc. (%)")
                ax.set_ylabel(f"{subset} {task} ROUGE-L" if metric == "ROUGE-L" else f"{subset} {task} {metric.lower()}. (%)")
                ax.grid(alpha=0.3, linewidth=0.4)
                # Intervals of two seeds are wide (a t interval of one degree of freedom); the axes stay on the scale.
                ax.set_xlim(-5, 105)
                ax.set_ylim(*((-0.05, 1.05) if metric == "ROUGE-L" else (-5, 105)))
        handles = [plt.Line2D([], [], marker="o", color=colours[m], markeredgecolor="black", label=m) for m in methods]
        handles += [plt.Line2D([], [], linestyle="", marker="*", color="black", markersize=8, label=OTHER_NAMES["vanilla"]),
                    plt.Line2D([], [], linestyle="", marker="X", color="black", label=OTHER_NAMES["oracle"])]
        if len(ratios) > 1:
            handles += [plt.Line2D([], [], linestyle="", marker=markers[r], color="white", markeredgecolor="black",
                                   label=f"forget {r}%") for r in ratios]
        figure.legend(handles=handles, loc="outside right center", frameon=False)
        figure.suptitle(title)
    return figure
