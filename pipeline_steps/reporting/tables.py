"""Result tables in the paper's layout, written as CSV, Markdown and LaTeX from one model.

A table has row groups (models in Table 1, one model elsewhere), rows (the references and the
unlearned methods), column groups (benchmarks), and in each column group the Table 1 columns of
that benchmark's family (``labels.TABLE_LAYOUTS``: MLLMU-Bench and CLEAR differ) plus the
forget columns it has beyond them (MLLMU-Bench's Test VQA). Every cell is an ``Estimate``: a mean
with its 95 % interval, shown as ``mean ± half-width``.

The visual forget columns (Forget VQA, Test VQA) have the oracle as their target, when the row
group has one (the model fine-tuned on the retain set only, which never saw the forget people):
each value also shows its distance from the oracle's, is ranked by that distance, and a value
below the oracle's, differing from it, is marked over-unlearned (†) and not ranked. The
other columns keep vanilla's knowledge as their target: higher is better. Without an oracle row
Forget VQA falls back to lower is better.

Marks, per row group and column, among the unlearned rows (references are never ranked): the best
is bold only when it differs from the next, the runner-up underlined only when it differs from
both neighbours; rows that do not differ from the one they would share a place with are marked as
tied (≈) instead. Two rows differ when the 95 % interval of their difference, both recomputed on
the same resampled people (``estimates.differ``), excludes 0: both rows ask the same questions
about the same people, so this paired interval is the right test, not whether two intervals
overlap. Accuracies are shown as percentages, ROUGE-L as
a number in [0, 1].
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from .estimates import Estimate, differ
from .labels import COLUMNS, ORACLE_TARGETS, OTHER_NAMES, column_label, table_columns

REFERENCE_ROWS = tuple(OTHER_NAMES[name] for name in ("vanilla", "base", "oracle"))
ORACLE_ROW = OTHER_NAMES["oracle"]


@dataclass
class Table:
    title: str
    # column group -> its columns, fixed by the first metrics added to it
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (row group, row label) -> column group -> column -> value
    cells: dict[tuple[str, str], dict[str, dict[str, Estimate]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # printed under the table
    # (row group, row) of rows shown but not ranked: in the equal-forgetting table, a method that
    # never reached the oracle's forgetting is not at equal forgetting with the others.
    unranked: set[tuple[str, str]] = field(default_factory=set)

    def add(self, row_group: str, row: str, column_group: str, values: dict[str, Estimate]) -> None:
        where = f"metrics for {row_group} / {row} / {column_group}"
        if column_group not in self.columns:
            try:
                shown = table_columns(values)
            except ValueError as error:
                raise ValueError(f"{where} {error}") from None
            self.columns[column_group] = shown + tuple(c for c in ORACLE_TARGETS if c in values and c not in shown)
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

    def value(self, group: str, row: str, column_group: str, column: str) -> Estimate | None:
        return self.cells[(group, row)].get(column_group, {}).get(column)

    def oracle(self, group: str, column_group: str, column: str) -> Estimate | None:
        """The oracle's value, where the column has it as its target."""
        if column not in ORACLE_TARGETS or (group, ORACLE_ROW) not in self.cells:
            return None
        return self.value(group, ORACLE_ROW, column_group, column)

    def marks(self) -> dict[tuple[str, str, str, str], str]:
        """(row group, row, column group, column) -> "best", "runner_up", "tie", "over_unlearned" or
        "unranked"."""
        marks = {}
        for group in self.row_groups:
            ranked = [row for row in self.rows(group) if row not in REFERENCE_ROWS and (group, row) not in self.unranked]
            for column_group in self.column_groups:
                for column in self.columns[column_group]:
                    marks |= {(group, row, column_group, column): "unranked" for g, row in self.unranked if g == group}
                    values = {row: self.value(group, row, column_group, column) for row in ranked}
                    values = {row: v for row, v in values.items() if v is not None}
                    oracle = self.oracle(group, column_group, column)
                    if oracle is not None:
                        over = {row for row, v in values.items() if v.mean < oracle.mean and differ(v, oracle)}
                        marks |= {(group, row, column_group, column): "over_unlearned" for row in over}
                        values = {row: v for row, v in values.items() if row not in over}
                    for row, mark in rank_marks(values, COLUMNS[column][3], oracle).items():
                        marks[(group, row, column_group, column)] = mark
        return marks


def distance_gap(a, b, oracle):
    """How much farther from the oracle's value ``a`` lies than ``b``."""
    return abs(a - oracle) - abs(b - oracle)


def rank_marks(values: dict[str, Estimate], lower: bool, oracle: Estimate | None = None) -> dict[str, str]:
    """Best and runner-up among ``values`` where the paired intervals of their differences separate
    them, ties where they do not: the first place is the best's if it differs from every other
    row, else a tie of all that do not differ from it (and no runner-up); the second place likewise
    among the rest. With an ``oracle``, rows are ranked by their distance from its value (nearer is
    better), and told apart by the paired interval of the difference of their distances."""
    if oracle is None:
        key, compare = (lambda row: values[row].mean), (lambda a, b: differ(a, b))
    else:
        key, lower = (lambda row: abs(values[row].mean - oracle.mean)), True
        compare = lambda a, b: differ(a, b, oracle, statistic=distance_gap)  # noqa: E731
    order = sorted(values, key=key, reverse=not lower)
    marks: dict[str, str] = {}
    for place, mark in enumerate(("best", "runner_up")):
        if place >= len(order):
            break
        head, rest = order[place], order[place + 1:]
        tied = [row for row in rest if not compare(values[head], values[row])]
        if tied:
            marks |= {row: "tie" for row in (head, *tied)}
            break
        marks[head] = mark
    return marks


def format_number(value: float, column: str) -> str:
    return f"{value:.3f}" if COLUMNS[column][2] == "ROUGE-L" else f"{100 * value:.1f}"


def format_value(value: Estimate | None, column: str) -> str:
    """``30.0 ± 4.1%`` (accuracies in percent, one decimal) or ``0.348 ± 0.020`` (ROUGE-L), as the paper."""
    if value is None:
        return "–"
    unit = "" if COLUMNS[column][2] == "ROUGE-L" else "%"
    if value.half_width is None:
        return f"{format_number(value.mean, column)}{unit}"
    return f"{format_number(value.mean, column)} ± {format_number(value.half_width, column)}{unit}"


def cell_text(table: Table, group: str, row: str, column_group: str, column: str) -> str:
    """A cell's value, with its distance from the oracle's (in points) where the oracle is its target."""
    value, oracle = table.value(group, row, column_group, column), table.oracle(group, column_group, column)
    text = format_value(value, column)
    if value is not None and oracle is not None and row != ORACLE_ROW:
        text += f" ({100 * (value.mean - oracle.mean):+.1f})"
    return text


def heading(table: Table, column: str) -> str:
    """A column's label with its direction: ↑, ↓, or → oracle where the oracle is its target."""
    has_oracle = any(row == ORACLE_ROW for _, row in table.cells)
    return column_label(column, "→ oracle/↑" if has_oracle and column in ORACLE_TARGETS else "↓/↑")


def header_cells(table: Table) -> list[tuple[str, str]]:
    """(column group, column) of every value column, left to right."""
    return [(g, c) for g in table.column_groups for c in table.columns[g]]


def to_csv(table: Table) -> str:
    """Unrounded values, one line per row, ``<column group>:<column>`` headers, each followed by its
    interval's half-width (``...:half_width``, empty when unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["group", "row"] + [f"{g}:{c}{suffix}" for g, c in header_cells(table) for suffix in ("", ":half_width")])
    for group in table.row_groups:
        for row in table.rows(group):
            values = [table.value(group, row, g, c) for g, c in header_cells(table)]
            writer.writerow([group, row] + [text for v in values for text in
                                            (("", "") if v is None else (repr(v.mean), "" if v.half_width is None else repr(v.half_width)))])
    return buffer.getvalue()


MARKDOWN = {"best": "**{}**", "runner_up": "<u>{}</u>", "tie": "{} ≈", "over_unlearned": "{} †", "unranked": "{} ‡"}
LEGEND = ("Mean ± half-width of the 95 % interval (people resampled; multiple choice never narrower than "
          "Wilson's interval over the questions). Bold: best, underlined: runner-up, each only where the paired "
          "95 % interval of its difference from the next (the same people resampled for both) excludes 0; "
          "≈: tied, that interval includes 0; †: below the oracle, the paired interval of the difference "
          "excluding 0 (over-unlearned, not ranked). Forget and Test VQA: distance from the oracle in points "
          "in brackets, ranked by it. References (vanilla, oracle) are not ranked.")


def to_markdown(table: Table) -> str:
    marks = table.marks()
    header = ["Method"] + [f"{g}: {heading(table, c)}" for g, c in header_cells(table)]
    lines = [f"**{table.title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in table.row_groups:
        lines.append(f"| *{group}* |" + " |" * (len(header) - 1))
        for row in table.rows(group):
            cells = [MARKDOWN.get(marks.get((group, row, g, c)), "{}").format(cell_text(table, group, row, g, c))
                     for g, c in header_cells(table)]
            lines.append("| " + " | ".join([row] + cells) + " |")
    lines += ["", LEGEND] + [f"\n{note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                          ("~", r"\textasciitilde{}"), ("β", r"$\beta$"), ("±", r"$\pm$"), ("≈", r"$\approx$"),
                          ("†", r"$\dagger$"), ("‡", r"$\ddagger$")):
        text = text.replace(char, escaped)
    return text


LATEX = {"best": r"\textbf{{{}}}", "runner_up": r"\underline{{{}}}", "tie": "{} $\\approx$",
         "over_unlearned": "{} $\\dagger$", "unranked": "{} $\\ddagger$"}


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
            cells = [LATEX.get(marks.get((group, row, g, c)), "{}").format(latex_escape(cell_text(table, group, row, g, c)))
                     for g, c in header_cells(table)]
            lines.append(" & ".join([latex_escape(row)] + cells) + r" \\")
    notes = " ".join(latex_escape(note) for note in table.notes)
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(table.title)} {latex_escape(LEGEND)} {notes}}}".replace(" }", "}"),
              r"\end{table*}"]
    return "\n".join(lines) + "\n"
