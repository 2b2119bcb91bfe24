"""An account of every source row: read into a record, merged into another, or skipped and why.

Rows used to disappear without a word (a repeated TOFU question collapsed into one record, an
image with no perturbed row got no name question); the manifest now says, per config, where each
row went, and ``prepare_benchmark`` prints the summary. Ids are listed up to ``SHOWN`` per
reason so a manifest of the full benchmark stays readable; the counts are always complete.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

SHOWN = 50


def _listing(ids: list[str]) -> dict:
    return {"count": len(ids), "ids": ids[:SHOWN]}


class Account:
    """Where one config's rows went; ``read + merged + skipped`` must be every row."""

    def __init__(self, rows: int):
        self.rows, self.read = rows, 0
        self.merged: Counter = Counter()  # record id -> rows merged into it
        self.skipped: dict[str, list[str]] = {}  # reason -> ids of the rows

    def keep(self) -> None:
        self.read += 1

    def merge(self, record_id: str) -> None:
        self.merged[record_id] += 1

    def skip(self, reason: str, row_id: str) -> None:
        self.skipped.setdefault(reason, []).append(row_id)

    def as_dict(self) -> dict:
        merged, skipped = sum(self.merged.values()), sum(map(len, self.skipped.values()))
        if self.read + merged + skipped != self.rows:
            raise AssertionError(f"row accounting is off: {self.rows} rows, {self.read} read, "
                                 f"{merged} merged, {skipped} skipped")
        return {"rows": self.rows, "read": self.read,
                "merged": {"count": merged, "records": len(self.merged),
                           "into": dict(list(self.merged.items())[:SHOWN])},
                "skipped": {reason: _listing(ids) for reason, ids in self.skipped.items()}}


class Ledger:
    """The accounts of one reading, keyed by config (``<config> for <split>`` when a config serves
    several splits, as CLEAR's ``retain_perturbed`` does)."""

    def __init__(self):
        self.accounts: dict[str, Account] = {}
        self.uncovered: dict[str, list[str]] = {}  # split -> image records asked no name question

    def open(self, key: str, rows: int) -> Account:
        if key in self.accounts:
            raise AssertionError(f"'{key}' accounted twice")
        self.accounts[key] = Account(rows)
        return self.accounts[key]

    def as_dict(self) -> dict:
        return {key: account.as_dict() for key, account in self.accounts.items()}

    def uncovered_dict(self) -> dict:
        return {split: _listing(ids) for split, ids in self.uncovered.items()}


def summary(manifest: dict) -> list[str]:
    """One line per config of a manifest's ``rows``: the lines ``prepare_benchmark`` prints."""
    lines = []
    for key, account in manifest.get("rows", {}).items():
        parts = [f"{account['read']} read"]
        if account["merged"]["count"]:
            parts.append(f"{account['merged']['count']} merged as duplicates into "
                         f"{account['merged']['records']} records")
        parts += [f"{entry['count']} skipped: {reason}" for reason, entry in account["skipped"].items()]
        lines.append(f"{key}: {account['rows']} rows: " + "; ".join(parts))
    for split, entry in manifest.get("images_without_name_question", {}).items():
        if entry["count"]:
            lines.append(f"{split}: {entry['count']} images have no name question (no perturbed row shows them)")
    return lines


@dataclass(frozen=True)
class Skip:
    """What a row converter returns for a row that yields no record."""

    reason: str
    row_id: str | None = None  # None for a row with no id of its own: named by its position


def gather(table, convert, account: Account) -> list:
    """The records of a config's rows (``table.map(convert)``), one per id: a repeat of a record is
    merged into it and counted; a different row under an id already seen is refused, since which of
    the two is right cannot be told."""
    records, by_id = [], {}
    for index, result in enumerate(table.map(convert)):
        if isinstance(result, Skip):
            account.skip(result.reason, result.row_id or f"row {index}")
        elif result.id not in by_id:
            by_id[result.id] = result
            records.append(result)
            account.keep()
        elif by_id[result.id] == result:
            account.merge(result.id)
        else:
            raise ValueError(f"{table.where}: two different rows have the id '{result.id}', and which one is "
                             f"right cannot be told; {table.fix}")
    return records
