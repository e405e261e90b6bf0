"""Byte ranges of tar shards, read through a bounded cache of aligned blocks.

A sample of a shard on object storage is one ranged GET. Samples read in order (generation
walks shard units in sample order, the packed shards' order) lie next to each other, so the
reader fetches aligned blocks (``block_bytes``, 1 MiB by default): one request then serves
the ~9 ImageNet images in it. A read that does not follow on from its shard's previous one
(a shuffled epoch: the next sample is anywhere) fetches its own byte range only, unless its
blocks are cached or on their way: over a dataset far larger than the cache, a block would
serve one image of its ~9 (``bench/images.py``'s small-cache row measures that case). Blocks
stay in a memory LRU bounded by ``memory_bytes`` and,
optionally, in files under ``cache_dir`` bounded by ``disk_bytes`` (oldest evicted first),
which outlive the process (the next epoch, the DataLoader's next worker). Threads reading
neighbouring samples share one request per block (in-flight blocks are awaited, not refetched).
Local shards skip the cache: the page cache already is one.

Why we wrote it: fsspec's file caches (``blockcache``, ``simplecache``) keep one cache per
open file object, are not safe to share between threads, and the on-disk one copies whole
files; a sample-addressed cache bounded in bytes across all shards is ~150 lines.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from teacher_store.storage.location import Location

__all__ = ["DEFAULT_BLOCK_BYTES", "DEFAULT_MEMORY_BYTES", "RangeCache"]

DEFAULT_BLOCK_BYTES = 1 << 20
DEFAULT_MEMORY_BYTES = 64 << 20
DEFAULT_DISK_BYTES = 16 << 30

_Key = tuple[int, int]  # (shard number, block number)


class _DiskBlocks:
    """Blocks as files ``DIR/<shard>-<block>.blk``, at most ``limit`` bytes (oldest out)."""

    def __init__(self, folder: Path, limit: int) -> None:
        self.folder, self.limit = folder, limit
        folder.mkdir(parents=True, exist_ok=True)
        self.used = sum(p.stat().st_size for p in folder.glob("*.blk"))
        self._lock = threading.Lock()

    def _path(self, key: _Key) -> Path:
        return self.folder / f"{key[0]}-{key[1]}.blk"

    def get(self, key: _Key) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: _Key, data: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)  # another process sees the old block or this one, whole
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return  # a cache that cannot be written is no cache, not an error
        with self._lock:
            self.used += len(data)
            if self.used > self.limit:
                self._evict()

    def forget(self, key: _Key) -> None:
        with contextlib.suppress(OSError):
            self._path(key).unlink()

    def _evict(self) -> None:
        """Remove the oldest blocks until 90% of the bound (other processes may share it)."""
        found = []
        for p in self.folder.glob("*.blk"):
            with contextlib.suppress(OSError):
                st = p.stat()
                found.append((st.st_mtime_ns, st.st_size, p))
        found.sort()
        self.used = sum(size for _, size, _ in found)
        for _, size, p in found:
            if self.used <= self.limit * 9 // 10:
                break
            with contextlib.suppress(OSError):
                p.unlink()
            self.used -= size


class RangeCache:
    """Reads ``[start, stop)`` of shard ``s`` (``names[s]`` under ``location``) through the
    block cache; thread-safe; picklable (a copy starts empty)."""

    def __init__(
        self,
        location: Location,
        names: tuple[str, ...],
        *,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        memory_bytes: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        disk_bytes: int = DEFAULT_DISK_BYTES,
    ) -> None:
        self.location, self.names = location, names
        self.block_bytes = max(1, block_bytes)
        if memory_bytes is None:
            memory_bytes = 0 if location.is_local and cache_dir is None else DEFAULT_MEMORY_BYTES
        self.memory_bytes = memory_bytes
        self.cache_dir, self.disk_bytes = cache_dir, disk_bytes
        self._setup()

    def _setup(self) -> None:
        self._lock = threading.Lock()
        self._blocks: OrderedDict[_Key, bytes] = OrderedDict()
        self._pending: dict[_Key, Future[bytes]] = {}
        self.held = 0  # bytes in the memory LRU
        self.requests = 0  # ranged reads sent to the storage
        self.fetched = 0  # bytes they returned
        self._last: dict[int, int] = {}  # shard -> end of its latest read
        self._disk = (
            _DiskBlocks(Path(self.cache_dir), self.disk_bytes)
            if self.cache_dir is not None
            else None
        )

    def __getstate__(self) -> dict[str, Any]:
        keep = ("location", "names", "block_bytes", "memory_bytes", "cache_dir", "disk_bytes")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def read(self, shard: int, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)`` of shard ``shard`` (fewer past its end);
        FileNotFoundError when the shard is gone.

        Whole blocks are fetched for a read that follows on from the previous one in its shard
        (within a block: samples read in order) or whose blocks are cached or on their way; a
        read elsewhere in a shard (a shuffled epoch over more data than the cache holds) fetches
        its own bytes only, not 1 MiB for one ~100 kB image. With ``cache_dir``, always blocks."""
        cached = self.memory_bytes > 0 or self._disk is not None
        b = self.block_bytes
        first, last = start // b, (stop - 1) // b
        big = stop - start > max(self.memory_bytes // 4, b * 4)
        if not cached or big or not self._blockwise(shard, start, stop, first, last):
            self.requests += 1
            data = self.location.read_range(self.names[shard], start, stop)
            self.fetched += len(data)
            return data
        blocks = self._get(shard, first, last)
        data = b"".join(blocks)
        return data[start - first * b : stop - first * b]

    def _blockwise(self, shard: int, start: int, stop: int, first: int, last: int) -> bool:
        """Whether to read ``[start, stop)`` of ``shard`` by blocks (see :meth:`read`); notes
        it as the shard's latest read."""
        b = self.block_bytes
        with self._lock:
            previous = self._last.get(shard)
            self._last[shard] = stop
            if self._disk is not None or previous is None or abs(start - previous) <= b:
                return True  # the shard's first read too: a walk in order starts there
            keys = [(shard, block) for block in range(first, last + 1)]
            return all(k in self._blocks or k in self._pending for k in keys)

    def forget(self, shard: int, start: int, stop: int) -> None:
        """Drop the cached blocks of ``[start, stop)`` (their bytes did not check out)."""
        b = self.block_bytes
        for block in range(start // b, (stop - 1) // b + 1):
            with self._lock:
                data = self._blocks.pop((shard, block), None)
                self.held -= len(data) if data is not None else 0
            if self._disk is not None:
                self._disk.forget((shard, block))

    def _get(self, shard: int, first: int, last: int) -> list[bytes]:
        got: dict[int, bytes] = {}
        waits: dict[int, Future[bytes]] = {}
        mine: dict[int, Future[bytes]] = {}
        with self._lock:
            for block in range(first, last + 1):
                key = (shard, block)
                if key in self._blocks:
                    self._blocks.move_to_end(key)
                    got[block] = self._blocks[key]
                elif key in self._pending:
                    waits[block] = self._pending[key]
                else:
                    mine[block] = self._pending[key] = Future()
        try:
            got.update(self._load(shard, sorted(mine)))
        except BaseException as e:
            self._settle(shard, mine, {}, e)
            raise
        self._settle(shard, mine, got, None)
        for block, fut in waits.items():
            got[block] = fut.result()
        return [got[block] for block in range(first, last + 1)]

    def _settle(
        self, shard: int, mine: dict[int, Future[bytes]], got: dict[int, bytes], error: Any
    ) -> None:
        with self._lock:
            for block, fut in mine.items():
                self._pending.pop((shard, block), None)
                if error is not None:
                    fut.set_exception(error)
                    continue
                fut.set_result(got[block])
                self._keep((shard, block), got[block])

    def _keep(self, key: _Key, data: bytes) -> None:
        """Add a block to the memory LRU (lock held), evicting the least recent."""
        if self.memory_bytes <= 0:
            return
        self._blocks[key] = data
        self.held += len(data)
        while self.held > self.memory_bytes and self._blocks:
            _, old = self._blocks.popitem(last=False)
            self.held -= len(old)

    def _load(self, shard: int, blocks: list[int]) -> dict[int, bytes]:
        """The blocks (from disk, else one ranged read per run of consecutive blocks)."""
        out: dict[int, bytes] = {}
        missing = []
        for block in blocks:
            data = self._disk.get((shard, block)) if self._disk is not None else None
            if data is None:
                missing.append(block)
            else:
                out[block] = data
        b = self.block_bytes
        for run in _runs(missing):
            self.requests += 1
            data = self.location.read_range(self.names[shard], run[0] * b, (run[-1] + 1) * b)
            self.fetched += len(data)
            for i, block in enumerate(run):
                out[block] = piece = data[i * b : (i + 1) * b]
                if self._disk is not None and piece:
                    self._disk.put((shard, block), piece)
        return out


def _runs(blocks: list[int]) -> list[list[int]]:
    """Sorted block numbers split into runs of consecutive ones."""
    runs: list[list[int]] = []
    for block in blocks:
        if runs and runs[-1][-1] == block - 1:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs
