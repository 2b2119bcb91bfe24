"""Reading a benchmark's hub dataset (or a local copy of it) config by config.

A ``Source`` says explicitly whether it is a hub id or a local directory: guessing from the string
turned a mistyped path into a hub download. A hub id is read by ``datasets.load_dataset(<id>,
<config>)``; a local copy through its card when the card lists the config, else from the config's
folder of parquet shards (``parquet_folders``), so a copy without its card gives the same records.
Images are kept as the raw bytes the parquet files hold and stored once each by ``ImageStore``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path
from typing import Callable, Iterator

from PIL import Image

from . import parquet_folders as folders

# Errors of unexpected content in one row; turned into a one-line message naming the config and row.
ROW_ERRORS = (KeyError, TypeError, AttributeError, IndexError)


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # "hub" or "path"
    location: str  # hub dataset id, or the local directory
    cache_dir: str | None = None  # where datasets keeps its arrow copy (None: the user's HF cache)
    benchmark: str = "benchmark"  # names in messages, set by the reader: "CLEAR", "MLLMU-Bench"
    home: str = ""  # the benchmark's hub id, for the download command a message suggests

    @classmethod
    def hub(cls, dataset_id: str, cache_dir: str | None = None) -> "Source":
        return cls("hub", dataset_id, cache_dir)

    @classmethod
    def path(cls, directory, cache_dir: str | None = None) -> "Source":
        return cls("path", str(Path(directory).expanduser().resolve()), cache_dir)

    def of(self, benchmark: str, home: str) -> "Source":
        return dataclasses.replace(self, benchmark=benchmark, home=home)

    def describe(self) -> str:
        kind = "hub dataset" if self.kind == "hub" else "local copy"
        return f"{self.benchmark} {kind} '{self.location}'"

    def download_hint(self, config: str | None = None) -> str:
        """How to get the current, complete data: what every refusal of bad data ends with."""
        if self.kind == "hub":
            return f"check the id (the benchmark is '{self.home}') and read the current revision"
        include = f" --include '{config}/*'" if config else ""
        return (f"download the current revision: hf download {self.home or '<dataset id>'} --repo-type dataset"
                f"{include} --local-dir {self.location}")

    def missing_config(self, config: str) -> ValueError:
        return ValueError(f"{self.describe()} has no config '{config}' (no card entry with its files and no folder "
                          f"{config}/ holding parquet files); {self.download_hint(config)}")

    def open(self, config: str) -> "Config | None":
        """One config's ``train`` split (or its only split) with images left as raw bytes; None if absent."""
        import datasets  # here, not above: the workflow reads the formats while it parses
        where = f"{self.describe()}, config '{config}'"
        table, split = (self._open_hub if self.kind == "hub" else self._open_local)(config, where)
        if table is None:
            return None
        for column, feature in table.features.items():
            if isinstance(feature, datasets.Image):
                table = table.cast_column(column, datasets.Image(decode=False))
            elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
                table = table.cast_column(column, datasets.List(datasets.Image(decode=False)))
        return Config(config, split, table, where, self.download_hint(config), self.benchmark)

    def _open_hub(self, config: str, where: str):
        import datasets
        from datasets import exceptions as hf_errors

        try:
            tables = datasets.load_dataset(self.location, config, cache_dir=self.cache_dir)
        except ValueError as error:  # datasets raises ValueError for an unknown config name
            if config in str(error):
                return None, None
            raise ValueError(f"{where}: {error}") from None
        except (ConnectionError, hf_errors.DatasetNotFoundError) as error:
            raise ValueError(f"{where} could not be reached ({str(error).splitlines()[0]}); check the id, allow "
                             f"hub access (unset HF_HUB_OFFLINE), or give a local copy with --path") from None
        except hf_errors.DatasetsError as error:
            raise ValueError(f"{where}: the hub files could not be read ({error}); "
                             f"{self.download_hint()}") from None
        split = folders.choose_split(dict.fromkeys(tables), where)
        return tables[split], split

    def _open_local(self, config: str, where: str):
        root = Path(self.location)
        card = folders.read_card(root, self.describe())
        files = folders.config_files(root, card, config)
        if files is None:
            return None, None
        split = folders.choose_split(files.splits, where)
        fix = self.download_hint(config)
        shards = {path: folders.check_shard(path, fix) for path in files.splits[split]}
        folders.check_declared_rows(card, config, split, shards, root, where, fix)
        if files.from_card:
            arguments = dict(path=str(root), name=config)
        else:
            arguments = dict(path="parquet", data_files={split: [str(p) for p in shards]})
        import datasets
        from datasets import exceptions as hf_errors

        try:
            table = datasets.load_dataset(**arguments, split=split, cache_dir=self.cache_dir)
        except (hf_errors.DatasetsError, OSError) as error:
            cause = error.__cause__ or error
            names = ", ".join(str(p.relative_to(root)) for p in shards)
            detail = str(cause).splitlines()[0] if str(cause) else ""
            raise ValueError(f"{where}: its files ({names}) could not be read together ({type(cause).__name__}: "
                             f"{detail}): the shards of a config must share their columns and types; {fix}") from None
        return table, split


@dataclasses.dataclass
class Config:
    """An opened config: its table, and where it came from, for messages that name it."""

    name: str
    split: str
    table: datasets.Dataset
    where: str  # "CLEAR local copy '/data/CLEAR', config 'full'"
    fix: str  # how to get a good copy
    benchmark: str

    def __len__(self) -> int:
        return len(self.table)

    def has(self, column: str) -> bool:
        return column in self.table.column_names

    def require(self, columns, revision: str) -> None:
        """Refuse a config missing a column the reader cannot do without; ``revision`` says which older
        revision of the data lacks it."""
        for column in columns:
            if not self.has(column):
                raise ValueError(f"{self.where}: no column '{column}' (it has: {', '.join(self.table.column_names)}); "
                                 f"{revision}; {self.fix}")

    def map(self, convert: Callable[[dict], object]) -> Iterator:
        """``convert`` of each row, with any failure reported as one line naming the config and row."""
        for index, row in enumerate(self.table):
            try:
                result = convert(row)
            except ValueError as error:
                raise ValueError(f"{self.where}, row {index}: {error}; {self.fix}") from None
            except ROW_ERRORS as error:
                raise ValueError(f"{self.where}, row {index}: unexpected content ({type(error).__name__}: {error}), "
                                 f"not the {self.benchmark} schema; {self.fix}") from None
            yield result


def image_bytes(value) -> bytes:
    """The encoded bytes of an image cell: a ``{bytes, path}`` struct or a PIL image."""
    if isinstance(value, dict) and value.get("bytes"):
        return value["bytes"]
    if isinstance(value, dict) and value.get("path"):
        return Path(value["path"]).read_bytes()
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise ValueError(f"cannot read an image from {type(value).__name__}")


def content_id(data: bytes, length: int = 20) -> str:
    return hashlib.sha256(data).hexdigest()[:length]


class ImageStore:
    """Saves images once each under ``images/<content hash>.<format>``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)

    def save(self, value) -> str:
        data = image_bytes(value)
        try:
            kind = Image.open(io.BytesIO(data)).format.lower()
        except (OSError, AttributeError):
            raise ValueError(f"an image cell holds {len(data)} bytes that are not an image PIL can read "
                             f"(they begin {data[:8]!r})") from None
        relative = f"images/{content_id(data)}.{kind}"
        target = self.root / relative
        if not target.exists():
            target.write_bytes(data)
        return relative
