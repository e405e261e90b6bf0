"""The index of a set of WebDataset tar shards: where each sample's image bytes lie.

Shards are named by a brace pattern (``s3://b/in22k/shard-{000000..001023}.tar``, expanded by
``braceexpand``, the library WebDataset itself uses, so a pattern names the same shards for
both) or one ``.tar``; all of them sit in one folder (or prefix), the pattern's folder.

**Name rule.** The index of pattern ``FOLDER/NAME`` is ``FOLDER/NAME.index.npz`` (the pattern's
last component kept as written, braces included: ``shard-{000000..001023}.tar.index.npz``), and
``FOLDER/NAME.classes.json`` holds the class names for stock WebDataset users
(``{"classes": [...]}``; label j of a ``.cls`` member is ``classes[j]``).

**Contents** (one ``.npz``, :class:`ShardIndex`): the :class:`SampleTable` of the samples in
canonical order (keys sorted as ``str``: a sample's key is its image member's name, e.g.
``cls/img.jpg``, the folder's relative path for packed shards), with the content digest of
every image (always: pack and index compute them), plus per sample the shard number (int32) and
the byte offset of the image's data in its shard, and a JSON record: the pattern, the class
names, where labels came from, and for each shard its name, size, sample count and sha256. The
arrays load without a Python object per sample and are checked in batches (no N-sized
temporary). Version 2 (written now) stores the data offsets, like the table's key offsets and
sizes, as uint32 when every value fits (shards under 4 GiB), else int64: ~56 B per sample,
0.74 GiB at 14.2 M samples of ImageNet-22k's ~28-character keys (``bench/scale.py``'s
``tar_index_load`` measures the load's peak RSS); version 1 indexes (int64) still load.

Why we wrote this rather than use ``wids`` (WebDataset's indexed reader): wids downloads whole
shards to a local cache before reading one sample (a random-access epoch over 1,024 shards of
1 GB would copy the dataset onto every node), keeps a pickled per-shard list of Python names
(an object per sample; and unpickling an index is unsafe), and reads URLs with curl/aws
subprocesses instead of the store's fsspec setup and credentials; and webdataset 1.0 no longer
ships it. One flat index of byte ranges, read with ranged GETs, is what random access needs.
"""

from __future__ import annotations

import array
import io
import json
import os
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from teacher_store.images.table import SampleTable, TableError

__all__ = [
    "CLASSES_SUFFIX",
    "INDEX_SUFFIX",
    "IndexBuilder",
    "ShardIndex",
    "ShardIndexError",
    "ShardPattern",
    "ShardRecord",
    "webdataset_key",
]

INDEX_SUFFIX = ".index.npz"
CLASSES_SUFFIX = ".classes.json"
INDEX_FORMAT = "distill-tar-index"
INDEX_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1: data offsets always int64
_CHECK_BATCH = 1 << 20  # samples checked at once (no N-sized temporaries beside the index)
MAX_SHARDS = 1 << 20
# WebDataset's grouping rule (webdataset.tariterators.base_plus_ext): a member's sample key is
# its name up to the first dot of its file name; the rest is the member's extension.
_WDS_KEY = re.compile(r"^((?:.*/|)[^./][^.]*)[.]([^/]*)$")


class ShardIndexError(TableError):
    """Shards or their index that cannot be used: names the shard or index and the fix."""


def webdataset_key(name: str) -> tuple[str, str] | None:
    """(sample key, extension) of tar member ``name`` as WebDataset groups members, or None
    for a name WebDataset cannot group (no dot in its file name, or a leading dot)."""
    m = _WDS_KEY.match(name)
    return (m.group(1), m.group(2)) if m else None


def fix_hint(pattern: str) -> str:
    """The command that rebuilds the index of ``pattern`` (for messages)."""
    return f"`distill images index {pattern}`"


@dataclass(frozen=True)
class ShardPattern:
    """A shard pattern as given (``text``), its folder and its expanded shard names."""

    text: str
    folder: str  # the folder or URL prefix holding every shard
    name: str  # the pattern's last component, as written
    shards: tuple[str, ...]  # shard file names in the folder, in pattern order

    @classmethod
    def parse(cls, text: str) -> ShardPattern:
        """Expand ``text``; :class:`ShardIndexError` for a pattern that names no tar shards,
        shards in more than one folder, or one shard twice."""
        from braceexpand import braceexpand

        folder, _, name = text.rstrip("/").rpartition("/")
        if "{" in folder or "}" in folder:
            raise ShardIndexError(
                f"shard pattern {text}: braces in its folder part; keep a dataset's shards in "
                "one folder and put the braces in the file name (DIR/shard-{000000..000099}.tar)"
            )
        try:
            shards = tuple(braceexpand(name))
        except (ValueError, IndexError) as e:
            raise ShardIndexError(f"shard pattern {text} does not expand: {e}") from None
        bad = [s for s in shards if not s.endswith(".tar") or "/" in s or "{" in s]
        if not shards or bad or len(shards) > MAX_SHARDS:
            what = f"{bad[0]!r} is not a .tar file name" if bad else f"{len(shards)} shards"
            raise ShardIndexError(
                f"shard pattern {text}: {what}; name .tar shards as DIR/NAME.tar or "
                "DIR/shard-{000000..000099}.tar"
            )
        if len(set(shards)) != len(shards):
            raise ShardIndexError(f"shard pattern {text} names a shard twice")
        return cls(text, folder or ".", name, shards)

    @property
    def index_name(self) -> str:
        """The index's file name in :attr:`folder`."""
        return self.name + INDEX_SUFFIX

    @property
    def classes_name(self) -> str:
        """The class-names JSON's file name in :attr:`folder`."""
        return self.name + CLASSES_SUFFIX

    def url(self, shard: str) -> str:
        """Where shard ``shard`` is, printable."""
        return f"{self.folder.rstrip('/')}/{shard}"


@dataclass(frozen=True)
class ShardRecord:
    """One shard as the index knows it: its file name, size, sha256 and sample count."""

    name: str
    size: int
    sha256: str
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardRecord:
        return cls(str(d["name"]), int(d["size"]), str(d["sha256"]), int(d["samples"]))


@dataclass(frozen=True, eq=False)
class ShardIndex:
    """The samples of a set of shards: the table (digests always set), each sample's shard
    number and data offset, the shards, the classes and where the labels came from."""

    table: SampleTable
    shard: np.ndarray  # int32 [N]: index into ``shards``
    data_offset: np.ndarray  # int64 (or uint32) [N]: first byte of the image's data in its shard
    shards: tuple[ShardRecord, ...]
    classes: tuple[str, ...]
    pattern: str  # the pattern's last component it was built for
    labels_from: str  # "cls" or "json:<field>" (or "cls+json:<field>")
    version: int = INDEX_VERSION

    def __len__(self) -> int:
        return len(self.table)

    def meta(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "version": self.version,
            "pattern": self.pattern,
            "classes": list(self.classes),
            "labels_from": self.labels_from,
            "shards": [s.to_dict() for s in self.shards],
        }

    def to_bytes(self) -> bytes:
        """The index file (:meth:`save`) as bytes."""
        buf = io.BytesIO()
        self.save(buf)
        return buf.getvalue()

    def save(self, file: str | os.PathLike[str] | IO[bytes]) -> None:
        """Write the index file (``.npz``): the table's arrays, ``shard``, ``data_offset``
        (uint32 when every offset fits, as the table's offsets and sizes) and ``meta`` (UTF-8
        JSON as uint8), array by array."""
        meta = np.frombuffer(json.dumps(self.meta(), sort_keys=True).encode(), np.uint8)
        self.table.save(
            file, ("data_offset",), shard=self.shard, data_offset=self.data_offset, meta=meta
        )

    @classmethod
    def from_bytes(cls, data: bytes | IO[bytes], where: str, hint: str) -> ShardIndex:
        """The index in ``data`` (the file at ``where``: its bytes, or the file opened, which
        loads the arrays without a second copy of them in memory); :class:`ShardIndexError`
        naming it and ``hint`` (the fix) when it does not parse or its arrays disagree."""
        source = io.BytesIO(data) if isinstance(data, bytes) else data
        try:
            with np.load(source, allow_pickle=False) as arrays:
                table = SampleTable.from_npz(arrays, where)
                extra = {k: arrays[k] for k in ("shard", "data_offset", "meta") if k in arrays}
            meta = json.loads(extra["meta"].tobytes()) if "meta" in extra else None
        except TableError as e:
            raise ShardIndexError(f"{e}; rebuild it with {hint}") from None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise ShardIndexError(f"{where} is not a tar shard index; rebuild it with {hint}")
        if meta.get("version") not in READ_VERSIONS:
            raise ShardIndexError(
                f"{where}: index version {meta.get('version')} is not "
                f"{INDEX_VERSION}; rebuild it with {hint}"
            )
        try:
            shards = tuple(ShardRecord.from_dict(s) for s in meta["shards"])
            index = cls(
                table,
                extra["shard"],
                extra["data_offset"],
                shards,
                tuple(str(c) for c in meta["classes"]),
                str(meta["pattern"]),
                str(meta["labels_from"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ShardIndexError(
                f"{where}: its record is incomplete; rebuild it with {hint}"
            ) from None
        problem = index.problem()
        if problem:
            raise ShardIndexError(f"{where}: {problem}; rebuild it with {hint}")
        return index

    def problem(self) -> str | None:
        """What is inconsistent in the index (vectorised checks in batches), or None."""
        n, t = len(self.table), self.table
        if t.digests is None:
            return "no content digests"
        for name, a, dtypes in (
            ("shard", self.shard, ("int32",)),
            ("data_offset", self.data_offset, ("int64", "uint32")),
        ):
            if a.ndim != 1 or a.dtype not in [np.dtype(d) for d in dtypes] or len(a) != n:
                return f"{name!r} is {a.dtype}{list(a.shape)}, not {' or '.join(dtypes)}[{n}]"
        if not self.shards:
            return "no shards"
        if n == 0:
            return None
        if self.shard.min() < 0 or self.shard.max() >= len(self.shards):
            return "a sample's shard number is out of range"
        if self.data_offset.min() < 0 or _past_shard_end(self):
            return "a sample's byte range lies outside its shard"
        if int(t.labels.max()) >= len(self.classes):
            return f"a label is {int(t.labels.max())}, past the {len(self.classes)} classes"
        return None


def _past_shard_end(index: ShardIndex) -> bool:
    """Whether any sample's bytes end past its shard's size (in batches of samples)."""
    ends = np.asarray([s.size for s in index.shards], np.int64)
    for start in range(0, len(index), _CHECK_BATCH):
        part = slice(start, start + _CHECK_BATCH)
        stop = index.data_offset[part].astype(np.int64) + index.table.sizes[part]
        if np.any(stop > ends[index.shard[part]]):
            return True
    return False


class IndexBuilder:
    """Collects samples (any order) and shards, then builds the :class:`ShardIndex` in
    canonical order. Compact buffers (``array``), no object per sample but while sorting."""

    def __init__(self) -> None:
        self._names = bytearray()
        self._ends = array.array("q")
        self._labels = array.array("q")
        self._sizes = array.array("q")
        self._digests = array.array("Q")
        self._shard = array.array("q")
        self._offset = array.array("q")
        self.shards: list[ShardRecord] = []

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, key: str, label: int, size: int, digest: int, offset: int) -> None:
        """One sample of the shard being read (the next :meth:`add_shard`)."""
        self._names += os.fsencode(key)
        self._ends.append(len(self._names))
        self._labels.append(label)
        self._sizes.append(size)
        self._digests.append(digest)
        self._shard.append(len(self.shards))
        self._offset.append(offset)

    def labels(self) -> array.array[int]:
        """The labels added so far."""
        return self._labels

    def add_shard(self, record: ShardRecord) -> None:
        """Close the current shard: the samples added since the last call lie in it."""
        self.shards.append(record)

    def build(
        self,
        classes: Sequence[str],
        pattern: str,
        labels_from: str,
        where: Callable[[int], str] = str,
    ) -> ShardIndex:
        """The index, samples sorted by key; :class:`ShardIndexError` for a key found twice
        (``where(shard number)`` names the shards)."""
        n = len(self)
        ends = np.frombuffer(self._ends, np.int64) if n else np.zeros(0, np.int64)
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        blob = bytes(self._names)
        keys = [os.fsdecode(blob[a:b]) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
        order = np.asarray(sorted(range(n), key=keys.__getitem__), np.int64)
        shard = np.asarray(self._shard, np.int64)
        for a, b in zip(order[:-1].tolist(), order[1:].tolist(), strict=True):
            if keys[a] == keys[b]:
                raise ShardIndexError(
                    f"sample {keys[a]!r} is in {where(int(shard[a]))} and in "
                    f"{where(int(shard[b]))}: each sample key must appear once"
                )
        del keys
        lengths = (ends - starts)[order]
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Gather the key bytes in sorted order: byte j of sorted key k comes from
        # starts[order[k]] + (j - offsets[k]).
        gather = np.repeat(starts[order] - offsets[:-1], lengths) + np.arange(offsets[-1])
        names = np.frombuffer(blob, np.uint8)[gather]
        table = SampleTable(
            names.astype(np.uint8),
            offsets,
            np.asarray(self._labels, np.int64)[order].astype(np.int32),
            np.asarray(self._sizes, np.int64)[order],
            np.asarray(self._digests, np.uint64)[order],
        )
        return ShardIndex(
            table,
            shard[order].astype(np.int32),
            np.asarray(self._offset, np.int64)[order],
            tuple(self.shards),
            tuple(classes),
            pattern,
            labels_from,
        )
