"""WebDataset tar shards as an image source: random access through their index.

``TarShards.open("s3://b/in22k/shard-{000000..001023}.tar")`` loads the index beside the
shards (:mod:`teacher_store.images.shard_index`: its name rule and contents), checks that every
shard is there with the size the index records (one listing of the folder), and then reads
sample i as one byte range of its shard (:class:`~teacher_store.images.shard_cache.RangeCache`:
aligned blocks in a bounded memory LRU, optionally on disk under ``cache_dir``).

Never wrong pixels: every read is checked against the index's content digest of that sample
(a shard changed, truncated or rewritten after its index was built is a one-line
:class:`ShardChangedError` naming the shard and the key, after one re-read past the cache) and,
when a store's digests are attached (:meth:`TarShards.with_content`), against those as well
(:func:`~teacher_store.images.source.check_content`).

What we wrote and why (the well-kept libraries do the rest: fsspec/s3fs for every byte,
through :class:`~teacher_store.storage.Location`; ``braceexpand`` for patterns; the standard
``tarfile`` for writing and scanning tars):

- the reader itself: WebDataset's readers stream shards in order (no random access), and its
  indexed reader ``wids`` copies whole shards to local disk and indexes names as Python
  objects (see :mod:`~teacher_store.images.shard_index`); generation and replay need sample i
  of a canonical order, read in place;
- the block cache (:mod:`~teacher_store.images.shard_cache`): fsspec's caches are per open
  file and not thread-safe;
- ``distill images pack`` writes tars with ``tarfile`` rather than ``webdataset.TarWriter``:
  the index needs each member's data offset (``tarfile`` gives it as it writes) and the bytes
  must be deterministic (no user name, mtime 0), and the member names must be the folder's
  relative paths, which TarWriter would split at the first dot.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from teacher_store.errors import ImageChangedError
from teacher_store.images.dataset import DatasetFingerprint, decode_image, default_max_image_pixels
from teacher_store.images.digests import SampleDigests, check_content, content_digest
from teacher_store.images.shard_cache import RangeCache
from teacher_store.images.shard_index import (
    ShardIndex,
    ShardIndexError,
    ShardPattern,
    fix_hint,
)
from teacher_store.storage.location import Location

if TYPE_CHECKING:
    from PIL import Image

    from teacher_store.images.dataset import DraftRule

__all__ = ["ShardChangedError", "ShardIndexError", "TarShards", "load_index"]


class ShardChangedError(ImageChangedError):
    """A sample's bytes in its shard are not those its index recorded (the shard changed,
    was truncated or rewritten after the index was built)."""


def load_index(pattern: ShardPattern, location: Location) -> ShardIndex:
    """The index of ``pattern`` beside its shards, checked against the pattern; one-line
    :class:`ShardIndexError` naming the index and the fix otherwise."""
    hint = fix_hint(pattern.text)
    where = pattern.url(pattern.index_name)
    try:
        f = location.open(pattern.index_name)  # read as it loads: no copy of the whole file
    except FileNotFoundError:
        raise ShardIndexError(
            f"no index of the shards {pattern.text} at {where}; build it with {hint} (or pack "
            "a folder with `distill images pack`)"
        ) from None
    except IsADirectoryError:
        raise ShardIndexError(
            f"{where} is a folder, not a shard index; remove it and run {hint}"
        ) from None
    with f:
        index = ShardIndex.from_bytes(f, where, hint)
    names = tuple(s.name for s in index.shards)
    if names != pattern.shards:
        extra = sorted(set(pattern.shards) - set(names))
        lost = sorted(set(names) - set(pattern.shards))
        what = (
            f"it does not list {extra[0]}"
            if extra
            else f"it lists {lost[0]}, which the pattern does not name"
            if lost
            else "its shards are in another order"
        )
        raise ShardIndexError(
            f"index {where} was built for other shards than {pattern.text} ({what}); rebuild "
            f"it with {hint}"
        )
    return index


class TarShards:
    """A set of WebDataset tar shards with their index: an :class:`ImageSource`."""

    def __init__(
        self,
        pattern: ShardPattern,
        index: ShardIndex,
        location: Location,
        cache: RangeCache,
        max_image_pixels: int,
        content: SampleDigests | None = None,
    ) -> None:
        self.pattern, self.index, self.shard_location, self.cache = pattern, index, location, cache
        self._max_image_pixels = max_image_pixels
        self._content = content

    @classmethod
    def open(
        cls,
        pattern: str,
        max_image_pixels: int | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        memory_bytes: int | None = None,
        block_bytes: int | None = None,
        disk_bytes: int | None = None,
    ) -> TarShards:
        """The shards ``pattern`` names (a ``.tar`` or a brace pattern, local or an fsspec URL)
        with their index; :class:`ShardIndexError` (one line naming the shard or index and
        the fix) for a missing or wrong index, or a shard missing or of another size than the
        index records. ``cache_dir``: keep fetched blocks there (up to ``disk_bytes``); by
        default the environment's ``DISTILL_SHARD_CACHE_DIR`` and ``DISTILL_SHARD_CACHE_BYTES``
        (so every command, and every process of a job, shares one cache on a node's disk)."""
        parsed = ShardPattern.parse(os.fspath(pattern))
        cache_dir, disk_bytes = _cache_settings(cache_dir, disk_bytes)
        location = Location.at(parsed.folder)
        index = load_index(parsed, location)
        _check_shards(parsed, index, location)
        limit = default_max_image_pixels() if max_image_pixels is None else max_image_pixels
        options: dict[str, int] = {}
        if block_bytes is not None:
            options["block_bytes"] = block_bytes
        if disk_bytes is not None:
            options["disk_bytes"] = disk_bytes
        folder = None
        if cache_dir is not None:  # one folder per index version: a rebuilt index starts anew
            digests = index.table.sample_digests()
            assert digests is not None  # an index always has them (ShardIndex.problem)
            tag = digests.sha256[:16]
            folder = os.path.join(os.fspath(cache_dir), f"shards-{tag}")
        cache = RangeCache(
            location, parsed.shards, memory_bytes=memory_bytes, cache_dir=folder, **options
        )
        return cls(parsed, index, location, cache, limit)

    # ---- the ImageSource interface ----------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        return self.index.classes

    @property
    def max_image_pixels(self) -> int:
        return self._max_image_pixels

    @property
    def content(self) -> SampleDigests | None:
        return self._content

    @property
    def location(self) -> str:
        return self.pattern.text

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> np.ndarray:
        """Every sample's label, int32 ``[N]`` (the index's array: no object per sample)."""
        return self.index.table.labels

    def label(self, index: int) -> int:
        return int(self.index.table.labels[index])

    def key(self, index: int) -> str:
        return self.index.table.key(index)

    def shard_url(self, index: int) -> str:
        """The shard that holds sample ``index``."""
        return self.pattern.url(self.pattern.shards[int(self.index.shard[index])])

    def where(self, index: int) -> str:
        from teacher_store.images.dataset import printable_path

        return f"{self.shard_url(index)}: {printable_path(self.key(index))}"

    def read(self, index: int) -> bytes:
        """Sample ``index``'s image bytes from its shard, checked against the index's digest
        (:class:`ShardChangedError`) and the attached store's (``ImageChangedError``)."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        shard = int(self.index.shard[index])
        start = int(self.index.data_offset[index])
        stop = start + int(self.index.table.sizes[index])
        want = int(self.index.table.digests[index])  # type: ignore[index]
        try:
            data = self.cache.read(shard, start, stop)
            if len(data) != stop - start or content_digest(data) != want:
                self.cache.forget(shard, start, stop)  # a bad cached block: once more, direct
                data = self.shard_location.read_range(self.pattern.shards[shard], start, stop)
        except FileNotFoundError:
            raise ShardIndexError(
                f"shard {self.shard_url(index)} is gone (reading {self.key(index)}); restore it, "
                f"or rebuild the index with {fix_hint(self.pattern.text)}"
            ) from None
        if len(data) != stop - start or content_digest(data) != want:
            what = (
                f"the shard ends before its bytes [{start}, {stop})"
                if len(data) != stop - start
                else "its bytes are not those the index recorded"
            )
            raise ShardChangedError(
                f"{self.where(index)} (sample {index}): {what}; the shard changed after its "
                f"index was built: restore it, or rebuild the index with "
                f"{fix_hint(self.pattern.text)}",
                self.where(index),
                index,
            )
        check_content(self._content, index, data, self.where(index), self.location)
        return data

    def load(self, index: int, draft: DraftRule | None = None) -> Image.Image:
        return decode_image(self.read(index), self.where(index), self._max_image_pixels, draft)

    def fingerprint(self) -> DatasetFingerprint:
        """Count, classes, names and sizes, labels, and the content record of the index's
        digests (the same as the folder's when it was packed from one)."""
        digests = self.index.table.sample_digests()
        assert digests is not None  # an index always has them (ShardIndex.problem)
        return DatasetFingerprint(
            len(self),
            self.index.table.names_sha256(),
            self.classes,
            content=digests.record(),
            labels_sha256=self.index.table.labels_sha256(),
        )

    def with_content(self, digests: SampleDigests) -> TarShards:
        if len(digests) != len(self):
            raise ValueError(
                f"{len(digests)} content digests for the {len(self)} samples of {self.location}"
            )
        other = copy.copy(self)
        other._content = digests
        return other

    def sample_digests(
        self, threads: int = 8, progress: Callable[[int], None] | None = None
    ) -> SampleDigests:
        """The index's digests (nothing is read)."""
        digests = self.index.table.sample_digests()
        assert digests is not None
        if progress is not None:
            progress(len(self))
        return digests

    def skipped_summary(self, limit: int = 5) -> str | None:
        return None


def _check_shards(pattern: ShardPattern, index: ShardIndex, location: Location) -> None:
    """Every shard there with the size its index records (one listing, or one stat)."""
    if len(pattern.shards) == 1:
        size = location.size(pattern.shards[0])
        sizes = {} if size is None else {pattern.shards[0]: size}
    else:
        sizes = location.file_sizes()
    hint = fix_hint(pattern.text)
    for record in index.shards:
        have = sizes.get(record.name)
        if have is None:
            raise ShardIndexError(
                f"shard {pattern.url(record.name)} is missing ({record.samples} samples of "
                f"{pattern.text}); restore it, or index the shards that are there with "
                "`distill images index` and a pattern that leaves it out"
            )
        if have != record.size:
            raise ShardIndexError(
                f"shard {pattern.url(record.name)} is {have} bytes, its index records "
                f"{record.size} (truncated or rewritten); restore it, or rebuild the index "
                f"with {hint}"
            )


def _cache_settings(
    cache_dir: str | os.PathLike[str] | None, disk_bytes: int | None
) -> tuple[str | os.PathLike[str] | None, int | None]:
    """``cache_dir`` and ``disk_bytes``, else ``DISTILL_SHARD_CACHE_DIR`` and
    ``DISTILL_SHARD_CACHE_BYTES`` from the environment (a ValueError naming a bad one)."""
    if cache_dir is None:
        cache_dir = os.environ.get("DISTILL_SHARD_CACHE_DIR", "").strip() or None
    raw = os.environ.get("DISTILL_SHARD_CACHE_BYTES", "").strip()
    if disk_bytes is None and raw:
        try:
            disk_bytes = int(float(raw.replace("_", "")))
        except (ValueError, OverflowError):
            disk_bytes = 0
        if not 1 << 20 <= disk_bytes <= 1 << 50:
            raise ValueError(
                f"DISTILL_SHARD_CACHE_BYTES={raw!r} must be a byte count from 1 MiB to 1 PiB "
                "(e.g. 500e9)"
            )
    return cache_dir, disk_bytes
