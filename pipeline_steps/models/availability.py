"""Whether the model a run loads is there: a hub model reachable or complete in the local hub
cache (config, every weight shard, tokenizer); a local directory with the same files.

Asked by the environment check before any job, so that a half-downloaded snapshot or a wrong
path is named with its fix before hours of earlier stages, not when the first stage loads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..hub import Finding, ask_hub
from .memory import ModelShape, model_shape


def model_files_problem(directory: Path) -> str | None:
    """What a saved model directory lacks to be loaded, or None."""
    if not (directory / "config.json").is_file():
        return "config.json is missing"
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [shard for shard in shards if not (directory / shard).is_file()]
        if missing:
            return f"{len(missing)} of {len(shards)} weight shards are missing ({missing[0]}, ...)"
    elif not (directory / "model.safetensors").is_file():
        return "there are no safetensors weights"
    if not any((directory / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json")):
        return "there are no tokenizer files"
    return None


def cached_model(repo_id: str) -> tuple[Path | None, str]:
    """The model's snapshot in the local hub cache and what it lacks ("" if complete)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        directory = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None, f"the local hub cache ({constants.HF_HUB_CACHE}) has no copy of it"
    problem = model_files_problem(directory)
    return directory, f"its copy in the local hub cache ({directory}) is incomplete: {problem}" if problem else ""


def check_model(name: str, source: str, local: bool) -> tuple[list[Finding], ModelShape | None]:
    """Findings about model ``name`` (``source`` is a local directory when ``local``, else a hub
    id), and its shape for the memory estimates (None: its config cannot be read). A config that
    is there but unreadable is only a warning: the memory check cannot run, the others still can."""
    findings, config_source = locate_model(name, source, local)
    if config_source is None:
        return findings, None
    try:
        return findings, model_shape(config_source)
    except Exception as error:  # noqa: BLE001 - reported, and the rest of the check goes on
        return [*findings, Finding(f"model '{name}'", f"its config cannot be read ({error})", "", True)], None


def locate_model(name: str, source: str, local: bool) -> tuple[list[Finding], str | None]:
    """Findings about the model's files, and where its config.json can be read from (None: nowhere)."""
    key = f"models.{name}"
    if local:
        problem = model_files_problem(Path(source))
        return ([Finding(f"model '{name}' (local directory {source})", f"it cannot be loaded: {problem}",
                         f"save the model there with save_pretrained (and its processor), or fix {key}.path")]
                if problem else []), (None if problem and "config.json" in problem else source)
    subject = f"model '{name}' (hub model '{source}')"
    answer = ask_hub(source, "model")
    if answer.reachable:
        return [], source
    directory, problem = cached_model(source)
    if not problem:
        return [Finding(subject, f"{answer.fallback()}; the run will load the copy in the local hub cache", "",
                        True)], str(directory)
    has_config = directory is not None and (directory / "config.json").is_file()
    return [Finding(subject, f"{answer.failure()} and {problem}",
                    f"on a machine with network run `hf download {source}` (fills the cache; point HF_HOME at "
                    f"storage the jobs share), or `hf download {source} --local-dir <dir>` and set "
                    f"{key}.path: <dir> instead of hub:")], (str(directory) if has_config else None)
