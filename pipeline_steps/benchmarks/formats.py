"""The benchmark families, each declared once by its reader: name, forget ratios, configs, reader.

Everything that needs a fact about a family (the workflow's config check, the environment check,
``prepare_benchmark``) looks it up through ``benchmark_format`` instead of repeating it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable, Iterable


@dataclass(frozen=True)
class BenchmarkFormat:
    name: str  # the config's ``format``, recorded in a prepared benchmark's manifest
    forget_ratios: tuple[int, ...]
    # The configs (hub dataset subsets) a run at some forget ratios reads.
    required_configs: Callable[[Iterable[int]], list[str]]
    # read(source: source.Source, out_dir, *, seed) -> manifest: writes the canonical splits under
    # out_dir, or raises ValueError (one line naming source, config, file or column, and the fix).
    read: Callable[..., dict]
    synthesizable: bool = False  # ``synthesize_benchmark`` can write a synthetic copy


@cache
def formats() -> dict[str, BenchmarkFormat]:
    """Every family by name (imported on first use: each reader module declares its own)."""
    from . import clear, mllmu

    return {fmt.name: fmt for fmt in (mllmu.FORMAT, clear.FORMAT)}


def benchmark_format(name: str) -> BenchmarkFormat:
    if name not in formats():
        raise ValueError(f"unknown benchmark format '{name}' (known: {', '.join(sorted(formats()))})")
    return formats()[name]
