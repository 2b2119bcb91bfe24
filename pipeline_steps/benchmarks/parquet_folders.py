"""A local copy of a hub dataset as researchers actually have it on disk.

Copies reach a cluster by ``hf download``, by ``git clone`` (with or without git-lfs), or as
folders copied from a shared disk, often without the dataset card. The authors' own code reads
``<config>/train-00000-of-00001.parquet`` directly, so a folder per config is as much a copy as
one with its card. This module finds a config's parquet shards (from the card when it lists the
config, else from the config's folder), and checks them before ``datasets`` reads them, because
its errors ("Parquet magic bytes not found in footer", ``NonMatchingSplitsSizesError``) name
neither the file nor the cause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import yaml

CARD = "README.md"
SHARD_NAME = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")  # train-00000-of-00002 -> train
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class ConfigFiles:
    splits: dict[str, list[Path]]  # split name -> its shards, in the order datasets reads them
    from_card: bool  # the card lists the config (read through it, so its features and sizes apply)


def read_card(root: Path, where: str) -> dict:
    """The card's YAML header, or {} for a copy without one (a valid way to have the data)."""
    path = root / CARD
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    if not text.startswith("---"):
        return {}
    header = text[3:].split("\n---", 1)[0]
    try:
        card = yaml.safe_load(header) or {}
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(f"{where}: the dataset card {path} has a malformed YAML header ({first_line}); "
                         f"fix it or move it away to read the config folders as they are") from None
    return card if isinstance(card, dict) else {}


def _card_patterns(card: dict, config: str) -> dict[str, list[str]] | None:
    for entry in card.get("configs") or []:
        if isinstance(entry, dict) and entry.get("config_name") == config:
            data_files = entry.get("data_files")
            if isinstance(data_files, (str, list)) and not (isinstance(data_files, list) and data_files
                                                            and isinstance(data_files[0], dict)):
                return {"train": [data_files] if isinstance(data_files, str) else list(data_files)}
            patterns = {}
            for item in data_files or []:
                path = item.get("path")
                patterns[item.get("split", "train")] = [path] if isinstance(path, str) else list(path or [])
            return patterns
    return None


def _split_of(shard: Path) -> str:
    match = SHARD_NAME.match(shard.stem)
    return match.group("split") if match else shard.stem


def config_files(root: Path, card: dict, config: str) -> ConfigFiles | None:
    """The config's shards per split, or None when the copy has neither a card entry with files
    present nor a folder ``<config>/`` holding parquet files."""
    patterns = _card_patterns(card, config)
    if patterns is not None:
        splits = {split: sorted({p for pattern in globs for p in root.glob(pattern) if p.is_file()})
                  for split, globs in patterns.items()}
        splits = {split: shards for split, shards in splits.items() if shards}
        if splits:
            return ConfigFiles(splits, from_card=True)
    folder = root / config
    if not folder.is_dir():
        return None
    splits: dict[str, list[Path]] = {}
    for shard in sorted(folder.rglob("*.parquet")):
        splits.setdefault(_split_of(shard), []).append(shard)
    return ConfigFiles(splits, from_card=False) if splits else None


def choose_split(splits: dict[str, list[Path]], where: str) -> str:
    """``train``, or the only split a config has: older revisions named their one split ``test``."""
    if "train" in splits:
        return "train"
    if len(splits) == 1:
        return next(iter(splits))
    raise ValueError(f"{where}: splits {', '.join(sorted(splits))} and none is 'train', so which one holds the "
                     f"benchmark is unclear; keep only the right split's files in the config's folder")


def check_shard(path: Path, fix: str) -> int:
    """The shard's row count, read from its footer; a clear error for a file that is not parquet data."""
    with path.open("rb") as handle:
        head = handle.read(len(LFS_POINTER))
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - 4))
        tail = handle.read(4)
    if head.startswith(LFS_POINTER):
        raise ValueError(f"{path} is a git-lfs pointer file, not the data: the copy was cloned without git-lfs; "
                         f"run 'git lfs install && git lfs pull' in the clone, or {fix}")
    if size == 0:
        raise ValueError(f"{path} is empty (an interrupted download?); {fix}")
    if head[:4] != PARQUET_MAGIC or tail != PARQUET_MAGIC:
        state = "is truncated: no parquet footer" if head[:4] == PARQUET_MAGIC else "is not a parquet file"
        raise ValueError(f"{path} {state}, {size} bytes on disk; {fix}")
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pyarrow.ArrowException, OSError) as error:
        raise ValueError(f"{path} is a corrupt parquet file ({str(error).strip().splitlines()[0]}); {fix}") from None


def declared_rows(card: dict, config: str, split: str) -> int | None:
    infos = card.get("dataset_info") or []
    for info in [infos] if isinstance(infos, dict) else infos:
        if isinstance(info, dict) and info.get("config_name", "default") == config:
            for entry in info.get("splits") or []:
                if isinstance(entry, dict) and entry.get("name") == split and "num_examples" in entry:
                    return int(entry["num_examples"])
    return None


def check_declared_rows(card: dict, config: str, split: str, shards: dict[Path, int], root: Path, where: str,
                        fix: str) -> None:
    """The card's size of a split against its files: a card and files of two revisions would otherwise
    end in datasets' NonMatchingSplitsSizesError, which names neither."""
    declared, found = declared_rows(card, config, split), sum(shards.values())
    if declared is not None and declared != found:
        files = ", ".join(f"{path.relative_to(root)} ({rows} rows)" for path, rows in shards.items())
        raise ValueError(f"{where}: the card {root / CARD} declares {declared} rows in split '{split}' but the files "
                         f"hold {found}: {files}; the card and the files come from different revisions: take both "
                         f"from one revision ({fix}), or move {CARD} away to read the files as they are")
