"""What every stage's command line shares: logging, thread count, and failing with one clear line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable


class StageError(Exception):
    """A problem the user can fix; reported as one line, without a traceback."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the epilog's lines kept as written."""


def stage_parser(description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=_HelpFormatter)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                        help="CPU threads for torch (default: torch's own choice)")
    return parser


def run_stage(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
              argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    # Offline by default: a stage reaches the hub only when a config names a hub id, and then the
    # user opts in by unsetting these (see config/README.md).
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        main(args)
    except (StageError, ValueError, FileNotFoundError) as error:
        logging.getLogger(parser.prog).error("%s", error)
        sys.exit(f"error: {error}")


def labelled_paths(specs: list[str], form: str) -> list[tuple[str, Path]]:
    """``["GA=results/x.json", ...]`` -> ``[("GA", Path("results/x.json")), ...]``; each file must
    exist (the report stages read only what earlier stages wrote)."""
    pairs = []
    for spec in specs:
        label, _, path = spec.partition("=")
        if not label or not path:
            raise StageError(f"'{spec}' is not of the form {form}")
        if not Path(path).exists():
            raise StageError(f"'{path}' (from '{spec}') does not exist; run the stage that writes it first")
        pairs.append((label, Path(path)))
    return pairs
