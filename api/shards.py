"""Our own reader of zarr v3 sharded arrays: shard index, inner chunks, and block assembly.

Supports what the store writes (``sharding_indexed`` over a regular grid, inner codecs
[``transpose``] + ``bytes`` + any of blosc/zstd/gzip/crc32c, index codecs ``bytes``
[+ ``crc32c``], index at the start or end, default chunk-key encoding). Every inner chunk's
crc32c is checked when it is decoded. Anything else makes :func:`parse_layout` return None,
and the caller reads via zarr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import crc32c
import numcodecs
import numpy as np

from api.errors import StoreDamaged

_EMPTY = np.iinfo(np.uint64).max
_INNER = {"blosc", "zstd", "gzip", "crc32c"}


@dataclass(frozen=True)
class ArrayLayout:
    """How one array of the store is cut into shard files and inner chunks."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fill: Any
    shard: tuple[int, ...]  # shard shape (the outer chunk grid)
    inner: tuple[int, ...]  # inner chunk shape
    codecs: tuple[dict[str, Any], ...]  # inner codecs after "bytes", in encode order
    index_crc: bool
    index_at_end: bool
    separator: str
    order: tuple[int, ...] | None = None  # the inner ``transpose`` codec's order, if any

    @property
    def grid(self) -> tuple[int, ...]:
        """Inner chunks per shard along each dimension."""
        return tuple(s // c for s, c in zip(self.shard, self.inner, strict=True))

    @property
    def index_size(self) -> int:
        return math.prod(self.grid) * 16 + (4 if self.index_crc else 0)

    def shard_key(self, coords: tuple[int, ...]) -> str:
        return self.separator.join((self.name, "c", *map(str, coords)))


def _bytes_little(codec: dict[str, Any]) -> bool:
    cfg = codec.get("configuration") or {}
    return codec.get("name") == "bytes" and cfg.get("endian", "little") == "little"


def parse_layout(name: str, meta: dict[str, Any]) -> ArrayLayout | None:
    """The layout of an array from its zarr.json, or None if this reader does not support it."""
    try:
        codecs = meta["codecs"]
        if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
            return None
        cfg = codecs[0]["configuration"]
        inner_codecs, index_codecs = cfg["codecs"], cfg["index_codecs"]
        order = None
        if inner_codecs and inner_codecs[0]["name"] == "transpose":
            order = tuple(int(i) for i in inner_codecs[0]["configuration"]["order"])
            inner_codecs = inner_codecs[1:]
        if not _bytes_little(inner_codecs[0]) or not _bytes_little(index_codecs[0]):
            return None
        if any(c["name"] not in _INNER for c in inner_codecs[1:]):
            return None
        if [c["name"] for c in index_codecs[1:]] not in ([], ["crc32c"]):
            return None
        key_enc = meta["chunk_key_encoding"]
        if meta["chunk_grid"]["name"] != "regular" or key_enc["name"] != "default":
            return None
        shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        inner = tuple(cfg["chunk_shape"])
        if len(shard) != len(inner) or any(s % c for s, c in zip(shard, inner, strict=True)):
            return None
        if order is not None and sorted(order) != list(range(len(inner))):
            return None
        return ArrayLayout(
            name=name,
            shape=tuple(meta["shape"]),
            dtype=np.dtype(meta["data_type"]).newbyteorder("<"),
            fill=meta.get("fill_value", 0),
            shard=shard,
            inner=inner,
            codecs=tuple(inner_codecs[1:]),
            index_crc=len(index_codecs) == 2,
            index_at_end=cfg.get("index_location", "end") == "end",
            separator=(key_enc.get("configuration") or {}).get("separator", "/"),
            order=order,
        )
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def parse_index(layout: ArrayLayout, data: bytes, store: str, key: str) -> np.ndarray:
    """The shard index as [n_chunks, 2] uint64 (offset, nbytes); checks its crc32c."""
    size = layout.index_size
    if len(data) < size:
        raise StoreDamaged(store, key, f"is {len(data)} bytes, shorter than its shard index")
    raw = data[-size:] if layout.index_at_end else data[:size]
    body = raw[:-4] if layout.index_crc else raw
    if layout.index_crc and crc32c.crc32c(body) != int.from_bytes(raw[-4:], "little"):
        raise StoreDamaged(store, key, "has a shard index that fails its crc32c (corrupt)")
    index = np.frombuffer(body, "<u8").reshape(-1, 2)
    used = index[index[:, 0] != _EMPTY]
    if used.size and int((used[:, 0] + used[:, 1]).max()) > len(data):
        raise StoreDamaged(store, key, "has a shard index pointing past its end (corrupt)")
    return index


def _decode_bytes(codecs: tuple[dict[str, Any], ...], buf: bytes, store: str, key: str) -> bytes:
    for codec in reversed(codecs):
        name, cfg = codec["name"], codec.get("configuration") or {}
        if name == "crc32c":
            if len(buf) < 4 or crc32c.crc32c(buf[:-4]) != int.from_bytes(buf[-4:], "little"):
                raise StoreDamaged(store, key, "has a chunk that fails its crc32c (corrupt)")
            buf = buf[:-4]
        elif name == "blosc":
            buf = numcodecs.blosc.decompress(buf)
        elif name == "zstd":
            buf = numcodecs.Zstd().decode(buf)
        else:
            buf = numcodecs.GZip(level=cfg.get("level", 1)).decode(buf)
    return bytes(buf)


def decode_chunk(
    layout: ArrayLayout, data: bytes, index: np.ndarray, linear: int, store: str, key: str
) -> np.ndarray:
    """Inner chunk number ``linear`` (row-major in the shard) as an array of the inner shape."""
    offset, nbytes = (int(x) for x in index[linear])
    if offset == _EMPTY:
        return np.full(layout.inner, layout.fill, dtype=layout.dtype)
    try:
        raw = _decode_bytes(layout.codecs, data[offset : offset + nbytes], store, key)
    except StoreDamaged:
        raise
    except Exception as e:  # a codec refusing its input: the bytes are damaged
        raise StoreDamaged(store, key, f"has a chunk that fails to decode ({e})") from None
    want = math.prod(layout.inner) * layout.dtype.itemsize
    if len(raw) != want:
        raise StoreDamaged(store, key, f"has a chunk of {len(raw)} bytes, expected {want}")
    arr = np.frombuffer(raw, layout.dtype)
    if layout.order is None:
        return arr.reshape(layout.inner)
    # Stored transposed: [inner[order[0]], inner[order[1]], ...]; back to the array's order.
    stored = arr.reshape(tuple(layout.inner[i] for i in layout.order))
    return np.ascontiguousarray(stored.transpose(np.argsort(layout.order)))


# (shard coords, linear chunk index in the shard) -> decoded inner chunk
ChunkGetter = Callable[[ArrayLayout, tuple[int, ...], int], np.ndarray]


def read_slot_range(
    layout: ArrayLayout, get_chunk: ChunkGetter, slot: int, start: int, stop: int, out: np.ndarray
) -> None:
    """Fill ``out`` ([stop - start, *trailing]) with ``array[slot, start:stop]``."""
    cv, cs = layout.inner[0], layout.inner[1]
    sv, ss = layout.shard[0], layout.shard[1]
    if any(c != s for c, s in zip(layout.inner[2:], layout.shape[2:], strict=True)):
        raise ValueError(f"array {layout.name} is chunked along its trailing dimensions")
    grid = layout.grid
    trailing_zero = (0,) * (len(layout.shape) - 2)
    for c in range(start // cs, (stop - 1) // cs + 1):
        lo, hi = max(start, c * cs), min(stop, (c + 1) * cs)
        coords = (slot // sv, (c * cs) // ss, *trailing_zero)
        within = ((slot % sv) // cv, c - coords[1] * (ss // cs), *trailing_zero)
        linear = int(np.ravel_multi_index(within, grid))
        chunk = get_chunk(layout, coords, linear)
        out[lo - start : hi - start] = chunk[slot % cv, lo - c * cs : hi - c * cs]
