"""Stage: read a benchmark (hub dataset or local copy) into canonical records on disk.

    python -m pipeline_steps.prepare_benchmark --format mllmu_bench --hub MLLMMU/MLLMU-Bench \\
        --out results/mllmu/benchmark
    python -m pipeline_steps.prepare_benchmark --format clear --path /data/CLEAR --out results/clear/benchmark

The source is named explicitly (``--hub`` or ``--path``): guessing turned a mistyped path into a
hub download. A local copy may lack its dataset card (folders of parquet files are enough). The
stage prints where every source row went (read, merged as a duplicate, skipped and why), which
the manifest records in full.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .benchmarks.accounting import summary
from .benchmarks.formats import benchmark_format, formats
from .benchmarks.source import Source
from .cli import StageError, run_stage, stage_parser
from .storage import atomic_directory, write_json

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(formats()), required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hub", metavar="ID", help="hub dataset id, e.g. MLLMMU/MLLMU-Bench or therem/CLEAR")
    source.add_argument("--path", metavar="DIR", type=Path,
                        help="local copy laid out as the hub repo: one folder of parquet files per config, "
                             "with or without the dataset card README.md")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the reader's random choices: one transformed image per Test_Set profile "
                             "(mllmu_bench); the caption prompt of each image and the position of the right "
                             "answer among the options (clear)")
    return parser


def source_of(args, cache_dir: str) -> Source:
    """The source the arguments name; a clear error before any reading for one that cannot be it."""
    if args.hub is not None:
        if not HUB_ID.match(args.hub) or args.hub.startswith((".", "~")):
            raise StageError(f"--hub '{args.hub}' is not a hub dataset id like 'MLLMMU/MLLMU-Bench'; "
                             "for a local directory use --path")
        return Source.hub(args.hub)  # the user's HF cache: a hub download is fetched once
    path = args.path.expanduser()
    if not path.is_dir():
        state = "is a file, not a directory" if path.exists() else "does not exist"
        raise StageError(f"--path '{args.path}' {state}; give the directory holding the benchmark's config "
                         "folders (or --hub ID to read from the hub)")
    # A local copy is read through a throw-away cache so nothing lands in ~/.cache.
    return Source.path(path, cache_dir=cache_dir)


def main(args) -> None:
    with tempfile.TemporaryDirectory() as cache:
        source = source_of(args, cache)
        with atomic_directory(args.out) as scratch:
            manifest = benchmark_format(args.format).read(source, scratch, seed=args.seed)
            write_json(scratch / "manifest.json", manifest)
    print(f"prepared {args.format} from {source.kind} '{source.location}' into {args.out}")
    for line in summary(manifest):
        print("  " + line)


if __name__ == "__main__":
    run_stage(main, build_parser())
