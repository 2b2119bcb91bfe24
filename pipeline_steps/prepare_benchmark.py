"""Stage: read a benchmark (hub id or local directory) into canonical records on disk.

    python -m pipeline_steps.prepare_benchmark --format mllmu_bench --source MLLMMU/MLLMU-Bench \\
        --out results/mllmu/benchmark
    python -m pipeline_steps.prepare_benchmark --format clear --source therem/CLEAR --out results/clear/benchmark

``--source`` is a local directory when one exists at that path, otherwise a hub dataset id.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from .benchmarks.formats import benchmark_format, formats
from .cli import StageError, run_stage, stage_parser
from .storage import atomic_directory, write_json

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def build_parser():
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--format", choices=sorted(formats()), required=True)
    parser.add_argument("--source", required=True, help="local directory or hub dataset id")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the reader's random choices: one transformed image per Test_Set profile "
                             "(mllmu_bench); the caption prompt of each image and the position of the right "
                             "answer among the options (clear)")
    return parser


def resolve_source(source: str) -> tuple[str, bool]:
    """(source, is_local); a clear error for a path that does not exist."""
    if Path(source).expanduser().is_dir():
        return str(Path(source).expanduser().resolve()), True
    if HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return source, False
    raise StageError(f"benchmark source '{source}' is neither an existing directory nor a hub id "
                     "like 'MLLMMU/MLLMU-Bench'; fix the path or the id in the config")


def main(args) -> None:
    source, local = resolve_source(args.source)
    with atomic_directory(args.out) as scratch, tempfile.TemporaryDirectory() as cache:
        # A local copy is read through a throw-away cache so nothing lands in ~/.cache; hub
        # downloads use the normal cache so they are fetched once.
        manifest = benchmark_format(args.format).read(source, scratch, seed=args.seed, cache_dir=cache if local else None)
        write_json(scratch / "manifest.json", manifest)


if __name__ == "__main__":
    run_stage(main, build_parser())
