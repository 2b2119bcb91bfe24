"""Whether the benchmark a run reads is there: a hub dataset reachable, or every config it reads
in the local ``datasets`` cache; a local copy with every config.

PosedItem by the environment check before any job, so that a missing config is named with its fix,
together with every other problem, instead of failing ``prepare_benchmark`` partway through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from ..hub import Finding, ask_hub


def unreadable_configs(source: str, configs: list[str], local: bool) -> dict[str, str]:
    """Configs ``datasets`` cannot open without the network (config -> why), asked of
    ``probe_configs`` in a child process with the hub switched off (its docstring says why). A
    local copy is read through a throw-away cache, as ``prepare_benchmark`` reads it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    with tempfile.TemporaryDirectory() as scratch:
        command = [sys.executable, "-m", "pipeline_steps.benchmarks.probe_configs", source, *configs,
                   *(["--cache-dir", scratch] if local else [])]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return {config: result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "probe failed"
                for config in configs}
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_dataset(name: str, source: str, local: bool, configs: list[str]) -> list[Finding]:
    """Findings about benchmark ``name``: ``source`` is a local copy when ``local``, else a hub id."""
    key = f"benchmarks.{name}"
    if local:
        missing = unreadable_configs(source, configs, local=True)
        subject = f"benchmark '{name}' (local copy {source})"
        return [Finding(subject, f"the copy has no readable config {', '.join(sorted(missing))} "
                                 f"({next(iter(missing.values()))})",
                        f"make it a complete copy of the hub dataset (`hf download --repo-type dataset <id> "
                        f"--local-dir {source}`), or point {key}.path elsewhere")] if missing else []
    subject = f"benchmark '{name}' (hub dataset '{source}')"
    answer = ask_hub(source, "dataset")
    if answer.reachable:
        return []
    missing = unreadable_configs(source, configs, local=False)
    if not missing:
        return [Finding(subject, f"{answer.fallback()}; the run will read the copy in the local datasets cache", "",
                        True)]
    from datasets import config as datasets_config

    return [Finding(
        subject,
        f"{answer.failure()} and the local datasets cache ({datasets_config.HF_DATASETS_CACHE}) has no copy of the "
        f"config(s) {', '.join(sorted(missing))}",
        f"on a machine with network run `hf download --repo-type dataset {source} --local-dir <dir>` and set "
        f"{key}.path: <dir> instead of hub:, or run once with network (HF_HUB_OFFLINE unset) so that "
        f"prepare_benchmark fills the cache")]
