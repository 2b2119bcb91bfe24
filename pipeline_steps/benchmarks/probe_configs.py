"""Which configs of a dataset ``datasets`` can open without the network (child process).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pipeline_steps.benchmarks.probe_configs \\
        therem/CLEAR forget05 full [--cache-dir DIR]

Prints one JSON line, config -> why it cannot be opened (``{}``: every config can). It is a
program of its own, run by ``availability.unreadable_configs`` in a child process, because the
probe must run with the hub switched off regardless of the calling process's environment:
``datasets`` and ``huggingface_hub`` read ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` once, when
they are imported, so the caller (which may already have imported them with the user's settings)
cannot switch the hub off for itself, and a probe allowed online would download instead of
answering whether the local copy suffices.
"""

from __future__ import annotations

import argparse
import json


def unopenable(source: str, configs: list[str], cache_dir: str | None) -> dict[str, str]:
    """config -> why ``datasets`` cannot open it. ``load_dataset_builder`` resolves a config as the
    readers' ``load_dataset`` (``source.open_config``) does, without reading its data."""
    import datasets

    missing = {}
    for config in configs:
        try:
            datasets.load_dataset_builder(source, config, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001 - every failure means the config is not there
            missing[config] = f"{type(error).__name__}: {str(error)[:300]}"
    return missing


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="hub dataset id or local copy")
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--cache-dir", help="datasets cache to read (default: the user's)")
    args = parser.parse_args(argv)
    print(json.dumps(unopenable(args.source, args.configs, args.cache_dir)))


if __name__ == "__main__":
    main()
