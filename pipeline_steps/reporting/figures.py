"""The paper's figures: layer heatmaps (Figs. 5/6) and the forgetting/utility trade-off (Fig. 4).

Figures are saved as PNG and PDF with no timestamp or version in their metadata, so the same
inputs give byte-identical files and a rerun that changes nothing shows no difference.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..storage import atomic_file  # noqa: E402
from .labels import COLUMNS, method_label, table_columns, utility_columns  # noqa: E402

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
    """Methods side by side (columns), language model and vision encoder (rows), one colour scale."""
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
                image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
                ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
                ax.set_yticks(range(len(rows)), [r.removesuffix("_proj") for r in rows] if column == 0 else [])
                ax.set_xlabel(f"{PART_TITLES[part]} layer")
                if column == 0:
                    ax.set_ylabel("module")
                if row == 0:
                    ax.set_title(f"{label}\nn = {panel['selected']:,}\n{outside_blocks(panel):.0f}% outside blocks")
                if len(layers) > 12:
                    ax.set_xticks(range(0, len(layers), 4), [str(layers[i]) for i in range(0, len(layers), 4)])
        colorbar = figure.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
        colorbar.set_label("share of the top-n changed entries (%)")
        figure.suptitle(title)
    return figure


def tradeoff(points: list[dict], title: str):
    """Paper Fig. 4: change in Forget VQA accuracy (x) against each utility column (y), both
    relative to the vanilla model at the same forget ratio; accuracies in points, ROUGE-L as is.
    ``points``: dicts with ``method``, ``ratio``, ``delta`` (column -> change, 0-1); the utility
    columns are those of the benchmark family whose metrics the deltas are."""
    methods = list(dict.fromkeys(p["method"] for p in points))
    ratios = sorted({p["ratio"] for p in points})
    markers = dict(zip(ratios, "os^Dv<>P*X"))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    utility = utility_columns(table_columns(points[0]["delta"]))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(utility), figsize=(2.3 * len(utility), 2.6), sharex=True,
                                    layout="constrained")
        for ax, column in zip(axes, utility):
            subset, task, metric, _ = COLUMNS[column]
            scale = 1 if metric == "ROUGE-L" else 100
            for p in points:
                ax.scatter(100 * p["delta"]["forget_vqa"], scale * p["delta"][column], color=colours[p["method"]],
                           marker=markers[p["ratio"]], s=28, edgecolors="black", linewidths=0.4, zorder=3)
            for method in methods:  # one method's points joined in ratio order, to show its trend
                ordered = sorted((p for p in points if p["method"] == method), key=lambda p: p["ratio"])
                ax.plot([100 * p["delta"]["forget_vqa"] for p in ordered],
                        [scale * p["delta"][column] for p in ordered],
                        color=colours[method], linewidth=0.8, alpha=0.6, zorder=2)
            ax.axhline(0, color="grey", linewidth=0.6, zorder=1)
            ax.axvline(0, color="grey", linewidth=0.6, zorder=1)
            ax.set_title(f"{subset} {task}")
            ax.set_xlabel("Δ Forget VQA acc. (pts)")
            ax.set_ylabel(f"Δ {subset} {task} ROUGE-L" if metric == "ROUGE-L" else
                          f"Δ {subset} {task} {metric.lower()}. (pts)")
            ax.grid(alpha=0.3, linewidth=0.4)
        handles = [plt.Line2D([], [], linestyle="", marker="o", color=colours[m], markeredgecolor="black",
                              label=method_label(m)) for m in methods]
        handles += [plt.Line2D([], [], linestyle="", marker=markers[r], color="white", markeredgecolor="black",
                               label=f"forget {r}%") for r in ratios]
        figure.legend(handles=handles, loc="outside right center", frameon=False)
        figure.suptitle(title)
    return figure
