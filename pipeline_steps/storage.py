"""Writing stage outputs so that a killed job never leaves something that looks complete.

Every output is first written under a temporary sibling name and renamed into place only once it
is whole; a rename within one file system is atomic, so Snakemake (or a user listing the results
folder) sees either nothing or the finished file or directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _usual_mode(path: Path, directory: bool) -> None:
    """mkstemp/mkdtemp create private files; give results the permissions of any other new file."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_directory(final: Path | str) -> Iterator[Path]:
    """Yield an empty scratch directory that becomes ``final`` when the block ends without error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    _usual_mode(scratch, directory=True)
    try:
        yield scratch
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


@contextlib.contextmanager
def atomic_file(final: Path | str, mode: str = "w") -> Iterator:
    """Open a temporary file that replaces ``final`` when the block ends without error."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    _usual_mode(Path(scratch), directory=False)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
        os.replace(scratch, final)
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


def write_json(path: Path | str, data) -> None:
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")


def write_jsonl(path: Path | str, rows) -> None:
    """One JSON object per line (training logs, predictions)."""
    with atomic_file(path) as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())
