"""Case studies (paper Table 3): a few questions and what each model variant answers to them.

Items are drawn with a fixed seed from the evaluation's predictions, the same items for every
variant, so a reader sees side by side what unlearning did to one answer: open questions with
each variant's generated answer (the paper's table), and multiple-choice questions with the
option each variant picked under the given scoring mode (what the accuracy columns count).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .labels import COLUMNS

CASE_COLUMNS = ("forget_vqa", "forget_qa", "retain_vqa")


def prediction_rows(predictions: Path) -> dict[tuple[str, str, str, str], dict]:
    """(kind, column, profile, question) -> prediction row."""
    rows = {}
    with open(predictions) as handle:
        for line in handle:
            row = json.loads(line)
            rows[(row["kind"], row["column"], row["profile"], row["question"])] = row
    return rows


def pick_items(rows: dict, kind: str, per_column: int, seed: int) -> list[tuple[str, str, str, str]]:
    picked = []
    for column in CASE_COLUMNS:
        keys = sorted(k for k in rows if k[0] == kind and k[1] == column)
        picked += random.Random(f"{seed}:{kind}:{column}").sample(keys, min(per_column, len(keys)))
    return picked


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or "*(empty)*"


def case_studies_markdown(title: str, variants: list[tuple[str, Path]], per_column: int, seed: int,
                          scoring: str = "likelihood") -> str:
    """``variants``: (label, predictions.jsonl) in display order."""
    answers = [(label, prediction_rows(path)) for label, path in variants]

    def row_of(label, rows, key):
        if key not in rows:
            raise ValueError(f"the predictions of '{label}' lack the item {' / '.join(key)}")
        return rows[key]

    lines = [f"# {title}", "", "## Open questions", ""]
    for key in pick_items(answers[0][1], "generation", per_column, seed):
        subset, task, _, _ = COLUMNS[key[1]]
        gold = answers[0][1][key]["answer"]
        lines += [f"### {subset} {task} · profile {key[2]}", "", f"**Question:** {cell(key[3])}  ",
                  f"**Gold answer:** {cell(gold)}", "", "| Model | Answer | ROUGE-L |", "|---|---|---|"]
        for label, rows in answers:
            row = row_of(label, rows, key)
            lines.append(f"| {label} | {cell(row['output'])} | {row['rouge_l']:.2f} |")
        lines.append("")

    lines += [f"## Multiple choice ({scoring} scoring)", ""]
    for key in pick_items(answers[0][1], "multiple_choice", per_column, seed):
        subset, task, _, _ = COLUMNS[key[1]]
        first = answers[0][1][key]
        options = "; ".join(f"{letter}) {cell(text)}" for letter, text in first["options"].items())
        lines += [f"### {subset} {task} · profile {key[2]}", "", f"**Question:** {cell(key[3])}  ",
                  f"**Options:** {options}  ", f"**Gold answer:** {first['answer']}) {cell(first['options'][first['answer']])}",
                  "", "| Model | Picked | Correct |", "|---|---|---|"]
        for label, rows in answers:
            picked = row_of(label, rows, key)[scoring]["prediction"]
            text = f"{picked}) {cell(first['options'][picked])}" if picked in first["options"] else "*(none)*"
            lines.append(f"| {label} | {text} | {'yes' if picked == first['answer'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)
