"""Result tables in the paper's layout, written as CSV, Markdown and LaTeX from one model.

A table has row groups (models in Table 1, one model elsewhere), rows (vanilla and the
unlearned variants), column groups (benchmarks), and in each column group the six Table 1 columns
of that benchmark's family (``labels.TABLE_LAYOUTS``: MLLMU-Bench and CLEAR differ), recognised
from the keys of its metrics. In each row group and column, the best unlearned variant is bold
and the runner-up underlined, as in the paper; vanilla is the reference and never ranked. Lower
is better for Forget VQA, higher for everything else. Equal values share a mark; the runner-up is
the next distinct value. Accuracies are shown as percentages, ROUGE-L as a number in [0, 1].
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from .labels import COLUMNS, column_label, table_columns

REFERENCE_ROWS = ("Vanilla", "Base")


@dataclass
class Table:
    title: str
    # column group -> its columns, fixed by the first metrics added to it
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (row group, row label) -> column group -> column -> value
    cells: dict[tuple[str, str], dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, row_group: str, row: str, column_group: str, values: dict[str, float]) -> None:
        where = f"metrics for {row_group} / {row} / {column_group}"
        if column_group not in self.columns:
            try:
                self.columns[column_group] = table_columns(values)
            except ValueError as error:
                raise ValueError(f"{where} {error}") from None
        missing = [c for c in self.columns[column_group] if c not in values]
        if missing:
            raise ValueError(f"{where} lack the columns {missing}")
        self.cells.setdefault((row_group, row), {})[column_group] = {c: values[c] for c in self.columns[column_group]}

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
                for column in self.columns[column_group]:
                    values = {row: self.value(group, row, column_group, column) for row in ranked}
                    values = {row: v for row, v in values.items() if v is not None}
                    lower = COLUMNS[column][3]
                    distinct = sorted(set(values.values()), reverse=not lower)
                    for mark, target in zip(("best", "runner_up"), distinct[:2]):
                        for row, v in values.items():
                            if v == target:
                                marks[(group, row, column_group, column)] = mark
        return marks


def format_value(value: float | None, column: str) -> str:
    """Accuracies as percentages with one decimal, ROUGE-L with three decimals, as the paper."""
    if value is None:
        return "–"
    return f"{value:.3f}" if COLUMNS[column][2] == "ROUGE-L" else f"{100 * value:.1f}%"


def header_cells(table: Table) -> list[tuple[str, str]]:
    """(column group, column) of every value column, left to right."""
    return [(g, c) for g in table.column_groups for c in table.columns[g]]


def to_csv(table: Table) -> str:
    """Unrounded values, one line per row, ``<column group>:<column>`` headers."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "row"] + [f"{g}:{c}" for g, c in header_cells(table)])
    for group in table.row_groups:
        for row in table.rows(group):
            values = [table.value(group, row, g, c) for g, c in header_cells(table)]
            writer.writerow([group, row] + ["" if v is None else repr(v) for v in values])
    return buffer.getvalue()


def to_markdown(table: Table) -> str:
    marks = table.marks()
    header = ["Method"] + [f"{g}: {column_label(c)}" for g, c in header_cells(table)]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in table.row_groups:
        lines.append(f"| *{group}* |" + " |" * (len(header) - 1))
        for row in table.rows(group):
            cells = []
            for g, c in header_cells(table):
                text = format_value(table.value(group, row, g, c), c)
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
    groups = table.column_groups
    widths = [len(table.columns[g]) for g in groups]
    total = sum(widths)
    lines = [r"\begin{table*}[t]", r"\centering", r"\small",
             r"\begin{tabular}{l" + "c" * total + "}", r"\toprule"]
    lines.append(" & ".join(["Methods"] + [rf"\multicolumn{{{w}}}{{c}}{{{latex_escape(g)}}}" for g, w in zip(groups, widths)])
                 + r" \\")
    starts = [2 + sum(widths[:i]) for i in range(len(groups))]
    lines.append(" ".join(rf"\cmidrule(lr){{{s}-{s + w - 1}}}" for s, w in zip(starts, widths)))
    heads = []
    for _, c in header_cells(table):
        subset, task, metric, lower = COLUMNS[c]
        arrow = r"$\downarrow$" if lower else r"$\uparrow$"
        heads.append(rf"\makecell{{{subset} {task}\\{metric} ({arrow})}}")
    lines += [" & ".join([""] + heads) + r" \\", r"\midrule"]
    for number, group in enumerate(table.row_groups):
        if number:
            lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{1 + total}}}{{c}}{{\textit{{{latex_escape(group)}}}}} \\")
        lines.append(r"\midrule")
        for row in table.rows(group):
            cells = []
            for g, c in header_cells(table):
                text = latex_escape(format_value(table.value(group, row, g, c), c))
                mark = marks.get((group, row, g, c))
                cells.append(rf"\textbf{{{text}}}" if mark == "best" else rf"\underline{{{text}}}"
                             if mark == "runner_up" else text)
            lines.append(" & ".join([latex_escape(row)] + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(table.title)} Bold: best; underlined: runner-up (vanilla not ranked).}}",
              r"\end{table*}"]
    return "\n".join(lines) + "\n"
