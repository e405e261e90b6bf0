"""Bounded caches: an LRU by bytes, and verified store files (size + crc32c against the manifest).

A committed file is checked on first use: its real path must stay inside its store, its size
must equal the manifest's and its crc32c must match. Verified contents are kept in the LRU, so a
hot file is read from disk once; files larger than ``max_entry`` are verified once (streamed)
and then read by range. A file whose size, inode or mtime changes is verified again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from api.errors import StoreDamaged, io_error
from teacher_store.store.layout import FileHasher, FileRecord, crc32c_of

_READ = 1 << 20


class ByteLRU:
    """Thread-safe LRU bounded by the sum of entry sizes in bytes; counts hits and misses."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, count: bool = True) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += count
                return None
            self._items.move_to_end(key)
            self.hits += count
            return item[0]

    def put(self, key: Hashable, value: Any, nbytes: int) -> None:
        if nbytes > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._items[key] = (value, nbytes)
            self.size += nbytes
            while self.size > self.capacity:
                _, (_, n) = self._items.popitem(last=False)
                self.size -= n

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class FileState:
    """A verified file: where it really is, its stat signature, size, crc32c and a content
    digest (blake2b-64, for the ETag: the whole-file crc32c of a zarr shard is no content
    identity, since every shard is a chain of crc32c-suffixed segments and the CRC of such a
    chain depends only on the segment lengths)."""

    store: str
    key: str
    real: str
    sig: tuple[int, int, int, int]
    size: int
    crc: int
    digest: str


def _sig(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _checksums(data: bytes | None, path: str) -> tuple[int, str, str]:
    """crc32c, blake2b-64 and sha256 hex digests of ``data`` (or of the file, streamed)."""
    if data is not None:
        rec = FileRecord.of(data)
        return rec.crc32c, hashlib.blake2b(data, digest_size=8).hexdigest(), rec.sha256
    hasher, h = FileHasher(), hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(_READ):
            hasher.update(block)
            h.update(block)
    rec = hasher.record()
    return rec.crc32c, h.hexdigest(), rec.sha256


_WHY = {
    "crc32c": "fails its crc32c checksum (corrupt)",
    "sha256": "fails its sha256 (not the file the manifest recorded)",  # swapped
}


def _mismatch(want: FileRecord | None, crc: int, sha: str) -> str | None:
    """Why a file's checksums do not match its manifest record, or None."""
    if want is None:
        return None
    field = want.mismatch(crc, sha)
    return None if field is None else _WHY[field]


class FileCache:
    """Verified reads of store files, with contents cached in a :class:`ByteLRU`."""

    def __init__(self, capacity: int, max_entry: int | None = None) -> None:
        self.lru = ByteLRU("files", capacity)
        self.max_entry = capacity // 4 if max_entry is None else max_entry
        self._verified: dict[str, tuple[tuple[int, int, int, int], int, str, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, store: str, store_real: str, key: str) -> tuple[str, os.stat_result] | None:
        """Real path and stat of ``key`` inside the store, or None when it does not exist.

        Raises :class:`StoreDamaged` when the path resolves outside the store (a symlink out).
        """
        real = os.path.realpath(os.path.join(store_real, key))
        if not real.startswith(store_real + os.sep):
            raise StoreDamaged(store, key, "resolves outside the store (symlink)")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise io_error(store, key, e) from None
        if not stat.S_ISREG(st.st_mode):
            return None
        return real, st

    def known(
        self, store: str, key: str, real: str, st: os.stat_result, want: FileRecord | None
    ) -> FileState | None:
        """The state of a file already verified with this stat signature, else None (cheap)."""
        if want is not None and st.st_size != want.size:
            raise StoreDamaged(
                store, key, f"is {st.st_size} bytes but the manifest says {want.size} (truncated?)"
            )
        sig = _sig(st)
        with self._lock:
            known = self._verified.get(real)
        if known is None or known[0] != sig:
            return None
        why = _mismatch(want, known[1], known[3])
        if why:
            raise StoreDamaged(store, key, why)
        return FileState(store, key, real, sig, st.st_size, known[1], known[2])

    def verify(
        self, store: str, key: str, real: str, st: os.stat_result, want: FileRecord | None
    ) -> FileState:
        """Check size and crc32c of a committed file (once per stat signature)."""
        state = self.known(store, key, real, st, want)
        if state is not None:
            return state
        sig = _sig(st)
        self.lru.misses += 1  # first use (or changed on disk): read from disk to verify
        try:
            data = self._load(real, st.st_size)
            crc, digest, sha = _checksums(data, real)
        except OSError as e:
            raise io_error(store, key, e) from None
        why = _mismatch(want, crc, sha)
        if why:
            raise StoreDamaged(store, key, why)
        if data is not None and len(data) != st.st_size:
            raise StoreDamaged(store, key, "changed while being read")
        with self._lock:
            self._verified[real] = (sig, crc, digest, sha)
        if data is not None:
            self.lru.put((real, sig), data, len(data))
        return FileState(store, key, real, sig, st.st_size, crc, digest)

    def _load(self, real: str, size: int) -> bytes | None:
        if size > self.max_entry:
            return None
        with open(real, "rb") as f:
            return f.read()

    def cached(self, state: FileState) -> bytes | None:
        """The whole verified content if the LRU holds it."""
        data: bytes | None = self.lru.get((state.real, state.sig))
        return data

    def read(
        self, state: FileState, start: int = 0, stop: int | None = None, count: bool = True
    ) -> bytes:
        """Bytes [start, stop) of a verified file, from the cache when it holds them."""
        stop = state.size if stop is None else stop
        data = self.lru.get((state.real, state.sig), count=count)
        try:
            if data is None and state.size <= self.max_entry:
                data = self._load(state.real, state.size)
                if data is None or len(data) != state.size or crc32c_of(data) != state.crc:
                    raise StoreDamaged(state.store, state.key, "changed on disk since verified")
                self.lru.put((state.real, state.sig), data, len(data))
            if data is not None:
                return data if (start, stop) == (0, len(data)) else data[start:stop]
            with open(state.real, "rb") as f:
                part = os.pread(f.fileno(), stop - start, start)
        except OSError as e:
            raise io_error(state.store, state.key, e) from None
        if len(part) != stop - start:
            raise StoreDamaged(state.store, state.key, "shrank on disk since it was verified")
        return part
