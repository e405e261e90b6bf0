"""The sample table: a dataset's samples as flat arrays, not a Python object per file.

At ImageNet-22k's 14.2 M images a tuple of ``str`` paths costs ~80 B of objects per name plus the
tuple, ~1.3 GiB before labels and sizes. :class:`SampleTable` holds the same facts in five
arrays: the relative keys' bytes in one blob with offsets, labels, sizes and (when known) the
content digests, about 30 + 8 + 4 + 8 + 8 B per sample, and it saves to and loads from one
``.npz`` file without a Python object per sample (``np.load`` of uncompressed arrays).

**File versions.** Version 2 (written now) stores ``offsets`` and ``sizes`` as uint32 when
every value fits (key blobs and images under 4 GiB: always at ImageNet scale), else int64, and
a loaded table keeps them so (30 + 4 + 4 + 4 + 8 B per sample); version 1 files (int64 only)
still load.

Sample i is the i-th key in the canonical order: keys sorted as ``str`` (what
:class:`~teacher_store.images.dataset.ImageFolder` has always done), so a folder and the tar
shards packed from it number their samples alike.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from teacher_store.images.digests import SampleDigests

__all__ = ["SampleTable", "TableError"]

TABLE_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1: offsets and sizes always int64
_WIDE = np.dtype("int64")
_NARROW = np.dtype("uint32")  # offsets / sizes in a version-2 file when every value fits
_HASH_BATCH = 65_536  # samples per vectorised fingerprint step
_CHECK_BATCH = 1 << 20  # offsets checked at once on load (a diff of all would be N x 8 B more)


class TableError(ValueError):
    """A sample table file that is not one (names the file and what is wrong)."""


@dataclass(frozen=True, eq=False)
class SampleTable:
    """N samples: keys (``names[offsets[i]:offsets[i+1]]``, ``os.fsencode`` of the relative
    key), labels, sizes in bytes and, optionally, content digests."""

    names: np.ndarray  # uint8 [total key bytes]
    offsets: np.ndarray  # int64 [N + 1] (uint32 when loaded narrow), offsets[0] == 0
    labels: np.ndarray  # int32 [N]
    sizes: np.ndarray  # int64 [N] (uint32 when loaded narrow)
    digests: np.ndarray | None = None  # uint64 [N] (xxh3_64 of each sample's bytes)

    def __post_init__(self) -> None:
        n = len(self.labels)
        assert len(self.offsets) == n + 1 and len(self.sizes) == n, "ragged sample table"
        assert self.digests is None or len(self.digests) == n, "ragged sample table"

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_items(
        cls, keys: Sequence[str], labels: Sequence[int], sizes: Sequence[int]
    ) -> SampleTable:
        """A table from parallel sequences (small datasets, tests; keys already in order)."""
        encoded = [os.fsencode(k) for k in keys]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        names = np.frombuffer(b"".join(encoded), np.uint8).copy()
        return cls(names, offsets, np.asarray(labels, np.int32), np.asarray(sizes, np.int64))

    def key_bytes(self, index: int) -> bytes:
        """Sample ``index``'s relative key as raw bytes."""
        return self.names[self.offsets[index] : self.offsets[index + 1]].tobytes()

    def key(self, index: int) -> str:
        """Sample ``index``'s relative key (``os.fsdecode``: lone surrogates for non-UTF-8)."""
        return os.fsdecode(self.key_bytes(index))

    def keys(self) -> Iterator[str]:
        """Every key in sample order (one ``str`` at a time)."""
        for i in range(len(self)):
            yield self.key(i)

    def names_sha256(self) -> str:
        """sha256 over ``key \\0 size \\n`` of every sample: the dataset fingerprint's
        ``sha256`` (the formula :class:`ImageFolder` has always used). Computed once per
        table (~8 s at 14.2 M samples) and kept: every source sharing the table reuses it."""
        cached = self.__dict__.get("_names_sha256")
        if cached is not None:
            return str(cached)
        h = hashlib.sha256()
        for start in range(0, len(self), _HASH_BATCH):
            stop = min(len(self), start + _HASH_BATCH)
            parts = []
            for i in range(start, stop):
                parts.append(self.key_bytes(i) + f"\0{int(self.sizes[i])}\n".encode())
            h.update(b"".join(parts))
        object.__setattr__(self, "_names_sha256", h.hexdigest())  # frozen: the table's memo
        return h.hexdigest()

    def labels_sha256(self) -> str:
        """sha256 of the labels as little-endian int32: the fingerprint's ``labels_sha256``."""
        # The array's own buffer (no N x 4 B copy); a copy only on a big-endian host.
        labels = np.ascontiguousarray(self.labels.astype("<i4", copy=False))
        return hashlib.sha256(labels.data).hexdigest()

    def sample_digests(self) -> SampleDigests | None:
        """The recorded content digests, when the table has them."""
        return None if self.digests is None else SampleDigests(self.digests)

    def with_digests(self, digests: SampleDigests) -> SampleTable:
        """This table with ``digests`` (one per sample)."""
        if len(digests) != len(self):
            raise ValueError(f"{len(digests)} content digests for {len(self)} samples")
        return SampleTable(self.names, self.offsets, self.labels, self.sizes, digests.values)

    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        arrays: list[Any] = [self.names, self.offsets, self.labels, self.sizes, self.digests]
        return sum(a.nbytes for a in arrays if a is not None)

    def to_bytes(self, narrow: Collection[str] = (), **extra: np.ndarray) -> bytes:
        """The table (and ``extra`` arrays, e.g. a shard index's offsets) as an ``.npz``
        (:meth:`save`)."""
        buf = io.BytesIO()
        self.save(buf, narrow, **extra)
        return buf.getvalue()

    def save(
        self,
        file: str | os.PathLike[str] | IO[bytes],
        narrow: Collection[str] = (),
        **extra: np.ndarray,
    ) -> None:
        """Write :meth:`to_bytes`'s ``.npz`` to ``file`` (a path or a binary file), array by
        array in chunks: no second copy of the table in memory (14.2 M samples: ~0.7 GB).
        ``offsets``, ``sizes`` and the ``extra`` arrays named in ``narrow`` (int64) are written
        as uint32 when every value fits (version 2), converted chunk by chunk; the bytes
        depend on the arrays only (no time stamps)."""
        arrays = {
            "version": np.asarray([TABLE_VERSION], np.int64),
            "names": self.names,
            "offsets": self.offsets,
            "labels": self.labels,
            "sizes": self.sizes,
            **extra,
        }
        if self.digests is not None:
            arrays["digests"] = self.digests
        narrowed = {"offsets", "sizes", *narrow}
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, values in arrays.items():
                dtype = narrow_dtype(values) if name in narrowed else values.dtype
                _write_npy(zf, name, values, dtype)

    @classmethod
    def from_npz(cls, arrays: Any, where: str) -> SampleTable:
        """The table in an opened ``.npz`` (``np.load``'s result); :class:`TableError` naming
        ``where`` when an array is missing, of the wrong type or ragged."""

        def get(name: str, dtype: str, optional: bool = False, narrow: bool = False) -> Any:
            if name not in arrays.files:
                if optional:
                    return None
                raise TableError(f"{where}: no {name!r} array; rebuild the index")
            a = arrays[name]
            allowed = (np.dtype(dtype), _NARROW) if narrow else (np.dtype(dtype),)
            if a.ndim != 1 or a.dtype not in allowed:
                want = " or ".join(str(d) for d in allowed)
                raise TableError(f"{where}: {name!r} is {a.dtype}{list(a.shape)}, not {want}[N]")
            return a

        version = get("version", "int64")
        if len(version) != 1 or int(version[0]) not in READ_VERSIONS:
            raise TableError(f"{where}: sample table version {version.tolist()} is not "
                             f"{TABLE_VERSION}; rebuild the index with this distill")  # fmt: skip
        narrow = int(version[0]) >= 2
        names, offsets = get("names", "uint8"), get("offsets", "int64", narrow=narrow)
        labels, sizes = get("labels", "int32"), get("sizes", "int64", narrow=narrow)
        digests = get("digests", "uint64", optional=True)
        n = len(labels)
        ragged = (
            len(offsets) != n + 1 or len(sizes) != n or (digests is not None and len(digests) != n)
        )
        if ragged or offsets[0] != 0 or offsets[-1] != len(names) or _decreasing(offsets):
            raise TableError(f"{where}: the sample table's arrays do not agree; rebuild the index")
        if n and (labels.min() < 0 or sizes.min() < 0):
            raise TableError(f"{where}: negative labels or sizes; rebuild the index")
        return cls(names, offsets, labels, sizes, digests)


def narrow_dtype(values: np.ndarray) -> np.dtype[Any]:
    """uint32 when every one of ``values`` (non-negative int64) fits in it, else their dtype:
    what a version-2 file stores."""
    if values.dtype == _WIDE and (len(values) == 0 or 0 <= values.min() <= values.max() < 1 << 32):
        return _NARROW
    return values.dtype


def _write_npy(zf: zipfile.ZipFile, name: str, values: np.ndarray, dtype: np.dtype[Any]) -> None:
    """``values`` (1-D) as ``name.npy`` in ``zf`` as ``dtype``, converted chunk by chunk (no
    copy of the whole array), dated 1980-01-01 (the same arrays give the same bytes)."""
    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": values.shape,
    }
    with zf.open(info, "w", force_zip64=True) as f:
        np.lib.format.write_array_header_1_0(f, header)
        flat = values.reshape(-1)
        for start in range(0, len(flat), _CHECK_BATCH):
            f.write(flat[start : start + _CHECK_BATCH].astype(dtype, copy=False).tobytes())


def _decreasing(offsets: np.ndarray) -> bool:
    """Whether any offset is below the one before it (checked in batches: no N-sized temporary
    array beside the loaded table)."""
    for start in range(0, max(0, len(offsets) - 1), _CHECK_BATCH):
        part = offsets[start : start + _CHECK_BATCH + 1]
        if np.any(part[1:] < part[:-1]):
            return True
    return False
