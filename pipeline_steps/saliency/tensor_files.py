"""Large tensor collections on disk: safetensors shards behind an index, written and read streaming.

A Fisher diagonal of a 7B model is 28 GB in fp32 and a mask 7 GB, so neither is ever held whole:

* ``write_tensors`` takes the names, dtypes and shapes up front and a function producing one
  tensor at a time, or one flat chunk of a tensor at a time; it writes each shard's header first
  and then the bytes in order, so memory holds one chunk whatever the model size.
* ``TensorFile`` reads a tensor, a flat range of its elements or a range of its rows, with plain
  file reads (no memory map, so reading a large file does not inflate the process's resident
  memory); it reads as a mapping of names to tensors, each read when asked for.

The layout is Hugging Face's sharded-checkpoint layout: ``<stem>.safetensors.index.json`` maps
each tensor to its shard and carries the metadata; a collection that fits one shard is written as
``<stem>.safetensors``, loadable with ``safetensors.safe_open`` like any checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import struct
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..storage import atomic_file

DTYPE_NAMES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
               torch.bool: "BOOL", torch.uint8: "U8", torch.int64: "I64", torch.int32: "I32"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}
INDEX_SUFFIX = ".safetensors.index.json"


def index_path(stem: Path | str) -> Path:
    return Path(f"{stem}{INDEX_SUFFIX}")


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


def _shard_plan(specs: dict[str, tuple[torch.dtype, tuple[int, ...]]], max_shard_bytes: int) -> list[list[str]]:
    shards, current, size = [], [], 0
    for name, (dtype, shape) in specs.items():
        nbytes = _nbytes(dtype, shape)
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def write_tensors(stem: Path | str, specs: dict[str, tuple[torch.dtype, tuple[int, ...]]],
                  produce: Callable[[str], torch.Tensor | Iterable[torch.Tensor]], metadata: dict[str, str],
                  max_shard_bytes: int = 4 << 30) -> Path:
    """Write tensors ``specs`` (name -> (dtype, shape)) under ``stem``; return the index path.

    ``produce(name)`` is called once per tensor, in ``specs`` order, and returns either the tensor
    (declared dtype and shape) or an iterable of flat chunks of it in order. Shards and index
    appear atomically; the index comes last.
    """
    stem = Path(stem)
    plan = _shard_plan(specs, max_shard_bytes)
    names = ([f"{stem.name}.safetensors"] if len(plan) == 1 else
             [f"{stem.name}-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))])
    weight_map = {}
    with ExitStack() as stack:
        for shard_name, shard in zip(names, plan):
            header, offset = {"__metadata__": dict(metadata)}, 0
            for name in shard:
                dtype, shape = specs[name]
                nbytes = _nbytes(dtype, shape)
                header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
                weight_map[name] = shard_name
            encoded = json.dumps(header, separators=(",", ":")).encode()
            encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
            handle = stack.enter_context(atomic_file(stem.parent / shard_name, "wb"))
            handle.write(struct.pack("<Q", len(encoded)) + encoded)
            for name in shard:
                dtype, shape = specs[name]
                produced = produce(name)
                if isinstance(produced, torch.Tensor):
                    if produced.dtype != dtype or tuple(produced.shape) != tuple(shape):
                        raise ValueError(f"tensor '{name}' is {produced.dtype}{tuple(produced.shape)}, "
                                         f"declared {dtype}{tuple(shape)}")
                    produced = [produced.reshape(-1)]
                written = 0
                for chunk in produced:
                    if chunk.dtype != dtype:
                        raise ValueError(f"a chunk of tensor '{name}' is {chunk.dtype}, declared {dtype}")
                    handle.write(chunk.detach().to("cpu").contiguous().view(torch.uint8).numpy())  # no bytes copy
                    written += chunk.numel()
                if written != math.prod(shape):
                    raise ValueError(f"tensor '{name}' got {written} elements, declared {math.prod(shape)}")
        index = {"metadata": dict(metadata), "weight_map": weight_map}
        with atomic_file(index_path(stem)) as handle:
            json.dump(index, handle, indent=1)
    return index_path(stem)


class TensorFile:
    """A tensor collection written by ``write_tensors`` (or any sharded safetensors checkpoint)."""

    def __init__(self, path: Path | str):
        """``path``: an index, the stem it belongs to, or a single ``.safetensors`` file."""
        path = Path(path)
        self._headers: dict[Path, tuple[int, dict]] = {}
        if path.suffix == ".safetensors" and path.is_file():
            self.index_path = path
            header = self._header(path)[1]
            self.metadata: dict[str, str] = header.get("__metadata__") or {}
            self._shard_of: dict[str, Path] = {name: path for name in header if name != "__metadata__"}
            return
        self.index_path = path if path.name.endswith(INDEX_SUFFIX) else index_path(path)
        if not self.index_path.exists():
            raise FileNotFoundError(f"no tensor index at {self.index_path}")
        index = json.loads(self.index_path.read_text())
        self.metadata = index.get("metadata", {})
        self._shard_of = {name: self.index_path.parent / shard for name, shard in index["weight_map"].items()}

    def names(self) -> list[str]:
        return list(self._shard_of)

    def __contains__(self, name: str) -> bool:
        return name in self._shard_of

    def _header(self, shard: Path) -> tuple[int, dict]:
        if shard not in self._headers:
            with open(shard, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                self._headers[shard] = (8 + length, json.loads(handle.read(length)))
        return self._headers[shard]

    def spec(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        entry = self._header(self._shard_of[name])[1][name]
        return DTYPES[entry["dtype"]], tuple(entry["shape"])

    def get(self, name: str) -> torch.Tensor:
        dtype, shape = self.spec(name)
        return self.read_flat(name, 0, math.prod(shape)).reshape(shape)

    def read_flat(self, name: str, start: int, count: int) -> torch.Tensor:
        """Elements ``start`` to ``start + count`` of the flattened tensor."""
        shard = self._shard_of[name]
        data_start, header = self._header(shard)
        dtype = DTYPES[header[name]["dtype"]]
        size = torch.empty((), dtype=dtype).element_size()
        begin = header[name]["data_offsets"][0] + start * size
        with open(shard, "rb") as handle:
            handle.seek(data_start + begin)
            data = bytearray(handle.read(count * size))
        if len(data) != count * size:
            raise ValueError(f"tensor '{name}' of {shard} is truncated")
        return torch.frombuffer(data, dtype=torch.uint8).view(dtype) if data else torch.empty(0, dtype=dtype)

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start`` to ``stop`` (along dim 0) of a tensor, read alone: a process of a sharded
        run reads its shard of a mask this way, never the whole tensor."""
        dtype, shape = self.spec(name)
        row = math.prod(shape[1:])
        return self.read_flat(name, start * row, (stop - start) * row).reshape((stop - start, *shape[1:]))

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.get(name)

    def __iter__(self):
        return iter(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    def nbytes(self) -> int:
        return sum(os.path.getsize(shard) for shard in set(self._shard_of.values()))

    def items(self) -> Iterable[tuple[str, torch.Tensor]]:
        for name in self.names():
            yield name, self.get(name)
