"""Result tables in the paper's layout, written as CSV, Markdown and LaTeX from one model.

A table has row groups (models in Table 1, one model elsewhere), rows (vanilla and the
unlearned variants), column groups (benchmarks) and the six columns of ``labels.COLUMNS``.
In each row group and column, the best unlearned variant is bold and the runner-up underlined,
as in the paper; vanilla is the reference and never ranked. Lower is better for Forget VQA,
higher for everything else. Equal values share a mark; the runner-up is the next distinct value.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from .labels import COLUMNS, column_label

REFERENCE_ROWS = ("Vanilla", "Base")


@dataclass
class Table:
    title: str
    columns: tuple[str, ...] = tuple(COLUMNS)
    # (row group, row label) -> column group -> column -> value
    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, row_group: str, row: str, column_group: str, values: dict[str, float]) -> None:
        missing = [c for c in self.columns if c not in values]
        if missing:
            raise ValueError(f"metrics for {row_group} / {row} / {column_group} lack the columns {missing}")
        self.cells.setdefault((row_group, row), {})[column_group] = {c: values[c] for c in self.columns}

    @property
    def row_groups(self) -> list[str]:
        return list(dict.fromkeys(group for group, _ in self.cells))

    @property
    def column_groups(self) -> list[str]:
        return list(dict.fromkeys(g for by_group in self.cells.values() for g in by_group))

    def rows(self, group: str) -> list[str]:
        return [row for g, row in self.cells if g == group]

    def value(self, group: str, row: str, column_group: str, column: str) -> float | None:
        return self.cells[(group, row)].get(column_group, {}).get(column)

    def marks(self) -> dict[tuple[str, str, str, str], str]:
        """(row group, row, column group, column) -> "best" or "runner_up"."""
        marks = {}
        for group in self.row_groups:
            ranked = [row for row in self.rows(group) if row not in REFERENCE_ROWS]
            for column_group in self.column_groups:
                for column in self.columns:
                    values = {row: self.value(group, row, column_group, column) for row in ranked}
                    values = {row: v for row, v in values.items() if v is not None}
                    lower = COLUMNS[column][3]
                    distinct = sorted(set(values.values()), reverse=not lower)
                    for mark, target in zip(("best", "runner_up"), distinct[:2]):
                        for row, v in values.items():
                            if v == target:
                                marks[(group, row, column_group, column)] = mark
        return marks


def percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def to_csv(table: Table) -> str:
    """Unrounded values, one line per row, ``<column group>:<column>`` headers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "row"] + [f"{g}:{c}" for g in table.column_groups for c in table.columns])
    for group in table.row_groups:
        for row in table.rows(group):
            values = [table.value(group, row, g, c) for g in table.column_groups for c in table.columns]
            writer.writerow([group, row] + ["" if v is None else repr(v) for v in values])
    return buffer.getvalue()


def to_markdown(table: Table) -> str:
    marks = table.marks()
    header = ["Method"] + [f"{g}: {column_label(c)}" for g in table.column_groups for c in table.columns]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in table.row_groups:
        lines.append(f"| *{group}* |" + " |" * (len(header) - 1))
        for row in table.rows(group):
            cells = []
            for g in table.column_groups:
                for c in table.columns:
                    text = percent(table.value(group, row, g, c))
                    mark = marks.get((group, row, g, c))
                    cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "runner_up" else text)
            lines.append("| " + " | ".join([row] + cells) + " |")
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("~", r"\textasciitilde{}"), ("β", r"$\beta$")):
        text = text.replace(char, escaped)
    return text


def to_latex(table: Table) -> str:
    """A table for papers; needs the ``booktabs`` and ``makecell`` packages."""
    marks = table.marks()
    width = len(table.columns)
    groups = table.column_groups
    lines = [r"\begin{table*}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + ("c" * width) * len(groups) + "}", r"\toprule"]
    lines.append(" & ".join(["Methods"] + [rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(g)}}}" for g in groups])
                 + r" \\")
    lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(groups))))
    heads = []
    for _ in groups:
        for c in table.columns:
            subset, task, metric, lower = COLUMNS[c]
            arrow = r"$\downarrow$" if lower else r"$\uparrow$"
            heads.append(rf"\makecell{{{subset} {task}\\{metric} ({arrow})}}")
    lines += [" & ".join([""] + heads) + r" \\", r"\midrule"]
    for number, group in enumerate(table.row_groups):
        if number:
            lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{1 + width * len(groups)}}}{{c}}{{\textit{{{latex_escape(group)}}}}} \\")
        lines.append(r"\midrule")
        for row in table.rows(group):
            cells = []
            for g in groups:
                for c in table.columns:
                    text = latex_escape(percent(table.value(group, row, g, c)))
                    mark = marks.get((group, row, g, c))
                    cells.append(rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}"
                                 if mark == "runner_up" else text)
            lines.append(" & ".join([latex_escape(row)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(table.title)} Bold: best; underlined: runner-up (vanilla not ranked).}}",
              r"\end{table*}"]
    return "\n".join(lines) + "\n"
