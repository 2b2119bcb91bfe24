"""Where a workflow run's time went: each stage's jobs, from Snakemake's ``benchmark:`` files.

    python perf/stage_times.py [logs/timings]

Every rule writes ``logs/timings/<rule>/<wildcards...>.tsv`` (Snakemake's benchmark directive: the
job's wall seconds and peak memory). This prints, per rule, how many jobs ran, their summed and
median wall time, the fastest and slowest job, and the largest peak memory; then the sum over all
jobs. A run's own wall time is not in these files (jobs overlap when ``--cores`` allows); time the
``snakemake`` command for it. Read the rows of one run only: clear ``logs/`` first
(``make clean-results``).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def read_jobs(root: Path) -> dict[str, list[tuple[float, float]]]:
    """Per rule, each job's (wall seconds, peak RSS MiB) from its benchmark file."""
    jobs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for path in sorted(root.rglob("*.tsv")):
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        rss = rows[-1].get("max_rss", "-")
        jobs[path.relative_to(root).parts[0]].append(
            (float(rows[-1]["s"]), float(rss) if rss not in ("", "-", "NA") else float("nan")))
    return jobs


def table(jobs: dict[str, list[tuple[float, float]]]) -> list[list[str]]:
    rows = []
    for rule, runs in sorted(jobs.items(), key=lambda item: -sum(s for s, _ in item[1])):
        seconds = [s for s, _ in runs]
        rows.append([rule, str(len(runs)), f"{sum(seconds):.0f}", f"{statistics.median(seconds):.1f}",
                     f"{min(seconds):.1f}-{max(seconds):.1f}", f"{max(r for _, r in runs):.0f}"])
    total = [s for runs in jobs.values() for s, _ in runs]
    rows.append(["all", str(len(total)), f"{sum(total):.0f}", "", "", ""])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("logs/timings"))
    args = parser.parse_args()
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory: run the workflow first (its benchmark files go there)")
    header = ["stage", "jobs", "sum s", "median s", "min-max s", "peak RSS MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table(read_jobs(args.root)):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
