"""Bounded caches: an LRU by bytes, and verified store files (size + crc32c against the manifest).

A committed file is checked on first use: its real path must stay inside its store, its size
must equal the manifest's and its crc32c must match. Verified contents are kept in the LRU, so a
hot file is read from disk once; files larger than ``max_entry`` are verified once (streamed)
and then read by range. A file whose size, inode or mtime changes is verified again.

Stores on an object store (s3://) are read through their
:class:`~teacher_store.storage.location.Location`: an object's change signature is the storage
room's (:meth:`Location.signature`: its size, ETag and modification time), and range reads are
ranged GETs.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import IO, Any

from api.errors import StoreDamaged, io_error
from teacher_store.storage.location import Location, Signature, stat_signature
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
        self.evicted = 0  # bytes dropped to stay within capacity, ever (the trimmer reads it)
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
                self.evicted += n

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class FileStat:
    """What :meth:`FileCache.resolve` found: the size and the storage's change signature (a
    local file's device, inode, size and mtime; an object's size, ETag and modification time)."""

    st_size: int
    sig: Signature
    loc: Location | None = None  # the store's location for an object; None for a local file


@dataclass(frozen=True)
class FileState:
    """A verified file: where it really is, its stat signature, size, crc32c and a content
    digest (blake2b-64, for the ETag: the whole-file crc32c of a zarr shard is no content
    identity, since every shard is a chain of crc32c-suffixed segments and the CRC of such a
    chain depends only on the segment lengths)."""

    store: str
    key: str
    real: str
    sig: Signature
    size: int
    crc: int
    digest: str
    loc: Location | None = None  # as in FileStat


def _open(real: str, key: str, loc: Location | None) -> IO[bytes]:
    return open(real, "rb") if loc is None else loc.open(key)


def _checksums(
    data: bytes | None, real: str, key: str, loc: Location | None = None
) -> tuple[int, str, str]:
    """crc32c, blake2b-64 and sha256 hex digests of ``data`` (or of the file, streamed)."""
    if data is not None:
        rec = FileRecord.of(data)
        return rec.crc32c, hashlib.blake2b(data, digest_size=8).hexdigest(), rec.sha256
    hasher, h = FileHasher(), hashlib.blake2b(digest_size=8)
    with _open(real, key, loc) as f:
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
        self._verified: dict[str, tuple[Signature, int, str, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, store: str, where: str | Location, key: str) -> tuple[str, FileStat] | None:
        """Real path and stat of ``key`` inside the store (``where``: its real folder, or its
        :class:`Location`), or None when it does not exist.

        Raises :class:`StoreDamaged` when the path resolves outside the store (a symlink out).
        """
        if isinstance(where, Location):
            if not where.is_local:
                return _resolve_object(store, where, key)
            where = where.root
        real = os.path.realpath(os.path.join(where, key))
        if not real.startswith(where + os.sep):
            raise StoreDamaged(store, key, "resolves outside the store (symlink)")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise io_error(store, key, e) from None
        if not stat.S_ISREG(st.st_mode):
            return None
        return real, FileStat(st.st_size, stat_signature(st))

    def known(
        self, store: str, key: str, real: str, st: FileStat, want: FileRecord | None
    ) -> FileState | None:
        """The state of a file already verified with this stat signature, else None (cheap)."""
        if want is not None and st.st_size != want.size:
            raise StoreDamaged(
                store, key, f"is {st.st_size} bytes but the manifest says {want.size} (truncated?)"
            )
        sig = st.sig
        with self._lock:
            known = self._verified.get(real)
        if known is None or known[0] != sig:
            return None
        why = _mismatch(want, known[1], known[3])
        if why:
            raise StoreDamaged(store, key, why)
        return FileState(store, key, real, sig, st.st_size, known[1], known[2], st.loc)

    def verify(
        self, store: str, key: str, real: str, st: FileStat, want: FileRecord | None
    ) -> FileState:
        """Check size and crc32c of a committed file (once per stat signature)."""
        state = self.known(store, key, real, st, want)
        if state is not None:
            return state
        sig = st.sig
        self.lru.misses += 1  # first use (or changed on disk): read from disk to verify
        try:
            data = self._load(real, key, st.st_size, st.loc)
            crc, digest, sha = _checksums(data, real, key, st.loc)
        except FileNotFoundError:
            raise _vanished(store, key) from None
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
        return FileState(store, key, real, sig, st.st_size, crc, digest, st.loc)

    def _load(self, real: str, key: str, size: int, loc: Location | None) -> bytes | None:
        if size > self.max_entry:
            return None
        if loc is not None:
            return loc.read(key)
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
                data = self._load(state.real, state.key, state.size, state.loc)
                if data is None or len(data) != state.size or crc32c_of(data) != state.crc:
                    raise StoreDamaged(state.store, state.key, "changed on disk since verified")
                self.lru.put((state.real, state.sig), data, len(data))
            if data is not None:
                return data if (start, stop) == (0, len(data)) else data[start:stop]
            if state.loc is not None:
                part = state.loc.read_range(state.key, start, stop)
            else:
                with open(state.real, "rb") as f:
                    part = os.pread(f.fileno(), stop - start, start)
        except FileNotFoundError:
            raise _vanished(state.store, state.key) from None
        except OSError as e:
            raise io_error(state.store, state.key, e) from None
        if len(part) != stop - start:
            raise StoreDamaged(state.store, state.key, "shrank on disk since it was verified")
        return part


def _vanished(store: str, key: str) -> StoreDamaged:
    """A file that was there when the request began and is gone now: the store is being
    replaced or regenerated under the service (a 409, so a client re-checks the store's
    identity), not a fault of the server's disk (a 500)."""
    return StoreDamaged(store, key, "vanished while being read: was the store replaced?")


def _resolve_object(store: str, loc: Location, key: str) -> tuple[str, FileStat] | None:
    """Path and stat of ``key`` in a store on an object store (no symlinks to follow there)."""
    try:
        sig = loc.signature(key)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise io_error(store, key, e) from None
    if sig.type != "file":
        return None
    return loc.path(key), FileStat(sig.size, sig, loc)
