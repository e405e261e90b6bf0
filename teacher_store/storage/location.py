"""Where a store is: :class:`Location`, a root on an fsspec filesystem, and the operations
every store module does there (read, ranged read, atomic write, list, remove, change signatures).

Local disk is ``fsspec.filesystem("file")``; an object store (s3fs) or fsspec's memory
filesystem needs no change in the callers. What differs between object stores (bucket probes,
failure messages) is :mod:`teacher_store.storage.failures`'s business.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import fsspec
from fsspec.implementations.local import LocalFileSystem

from teacher_store.storage import failures, faults

# What fsspec info fields change with a file's content, by filesystem: local (mtime, ino),
# S3 (ETag, LastModified), memory (created), others (last_modified, etag).
CHANGE_FIELDS = ("mtime", "LastModified", "last_modified", "ETag", "etag", "ino", "created")


class Signature(NamedTuple):
    """What tells one version of a file apart from another without reading it: its type, its
    size and what the storage says changes with it (``marks``: a local file's device, inode
    and mtime; an object's ETag and modification time)."""

    type: str
    size: int
    marks: tuple[tuple[str, Any], ...]

    @property
    def weak(self) -> bool:
        """Only the size: two versions of one size look alike (read the file to tell)."""
        return not self.marks


def stat_signature(st: os.stat_result) -> Signature:
    """The signature of a local file (or folder) from its ``os.stat``."""
    kind = "file" if stat.S_ISREG(st.st_mode) else "directory" if stat.S_ISDIR(st.st_mode) else ""
    marks = (("dev", st.st_dev), ("ino", st.st_ino), ("mtime_ns", st.st_mtime_ns))
    return Signature(kind or "other", st.st_size, marks)


def info_signature(info: Mapping[str, Any]) -> Signature:
    """The signature of a file from an fsspec ``info`` dict (any filesystem)."""
    marks = tuple((k, str(info[k])) for k in CHANGE_FIELDS if info.get(k) is not None)
    return Signature(str(info.get("type") or ""), int(info.get("size") or 0), marks)


# Remote locations whose client is asynchronous (s3fs): a forked child (a DataLoader worker
# reading images from object storage) cannot use its parent's client (fsspec refuses: "not
# fork-safe"), so each is given a fresh one, built from its URL and options, after a fork.
_ASYNC_LOCATIONS: list[weakref.ref[Location]] = []


def _is_async(fs: Any) -> bool:
    from fsspec.asyn import AsyncFileSystem

    return isinstance(fs, AsyncFileSystem)


def _track(loc: Location) -> None:
    if len(_ASYNC_LOCATIONS) >= 1024:  # drop the dead references now and then
        _ASYNC_LOCATIONS[:] = [r for r in _ASYNC_LOCATIONS if r() is not None]
    _ASYNC_LOCATIONS.append(weakref.ref(loc))


class _ClientAfterFork:
    """Stands in a forked child for a Location's client: builds the child's own client (from
    the URL and options) on first use, then puts it in the Location. Nothing is built in the
    fork hook itself (a child must not start threads or take locks there)."""

    def __init__(self, loc: Location) -> None:
        self._loc, self._lock = weakref.ref(loc), threading.Lock()
        self._fs: Any = None

    def _client(self) -> Any:
        with self._lock:
            if self._fs is None:
                loc = self._loc()
                assert loc is not None  # a Location's own client outlives no Location
                self._fs = fsspec.core.url_to_fs(loc.url, **dict(loc.options))[0]
                object.__setattr__(loc, "fs", self._fs)  # frozen: the field a fork replaces
            return self._fs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)


def _fresh_clients_after_fork() -> None:
    """In a forked child: every live remote Location gets a client of its own on first use
    (fsspec's instance cache is per process, so that builds a new one)."""
    alive = []
    for ref in _ASYNC_LOCATIONS:
        loc = ref()
        if loc is not None:
            object.__setattr__(loc, "fs", _ClientAfterFork(loc))
            alive.append(ref)
    _ASYNC_LOCATIONS[:] = alive


os.register_at_fork(after_in_child=_fresh_clients_after_fork)


@dataclass(frozen=True)
class Location:
    """A store's root on a filesystem; ``name`` is how messages call it (default: the root);
    ``url`` is the fsspec URL of a non-local root and ``options`` the fsspec options ``fs`` was
    built with (zarr's asynchronous client is built from the same two)."""

    fs: fsspec.AbstractFileSystem
    root: str
    name: str = ""
    url: str = ""
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.url and (_is_async(self.fs) or isinstance(self.fs, _ClientAfterFork)):
            _track(self)

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> Location:
        """A store folder on local disk."""
        return cls(fsspec.filesystem("file"), str(Path(path)))

    @classmethod
    def at(cls, address: str | os.PathLike[str], **options: Any) -> Location:
        """The location of a store address: a folder, or an fsspec URL such as
        ``s3://bucket/prefix`` (credentials and endpoint from the standard AWS variables and
        config, never from the address or the store; ``options``: more fsspec options). A
        service URL or an unsupported scheme is a
        :class:`~teacher_store.reader.address.StoreAddressError`; nothing is read here."""
        from teacher_store.reader.address import resolve_address

        kind, url = resolve_address(address)
        return cls.resolved(kind, url, **options)

    @classmethod
    def resolved(cls, kind: str, url: str, **options: Any) -> Location:
        """The location of an address already read by
        :func:`~teacher_store.reader.address.resolve_address` (its ``(kind, url)``): a reader that
        resolved it once does not resolve it again here."""
        from teacher_store.reader.address import StoreAddressError

        if kind == "local":
            return cls.local(url)
        if kind == "service":
            raise StoreAddressError(
                f"store address {url} is a distill service, which only serves stores; pass "
                "the store's folder or object-store URL (s3://BUCKET/PREFIX) instead"
            )
        provider = failures.provider_for(url.split("://", 1)[0])
        opts = {**(provider.options if provider else {}), **options}
        fs, root = fsspec.core.url_to_fs(url, **opts)
        if isinstance(fs, LocalFileSystem):
            return cls.local(root)
        url = url.rstrip("/")
        return cls(fs, root.rstrip("/"), url, url, opts)

    @property
    def display(self) -> str:
        """How messages name this store: ``name`` if given, else the root."""
        return self.name or self.root

    @property
    def is_local(self) -> bool:
        """True for a folder on local disk (atomic renames), False for an object store."""
        return isinstance(self.fs, LocalFileSystem)

    def path(self, key: str) -> str:
        """The filesystem path of ``key``."""
        return f"{self.root.rstrip('/')}/{key}"

    def child(self, name: str) -> Location:
        """The location of the folder (or prefix) ``name`` under this root."""
        if self.is_local:
            return Location.local(self.path(name))
        url = f"{self.display.rstrip('/')}/{name}"
        return Location(self.fs, self.path(name), url, url, self.options)

    def zarr_store(self, read_only: bool = True) -> Any:
        """What ``zarr.open_group`` takes for this root: a folder path or an FsspecStore."""
        if self.is_local:
            return self.root
        from zarr.storage import FsspecStore

        # The same URL and options as ``fs``: one recipe for both clients (zarr needs its own,
        # asynchronous one).
        options = dict(self.options) or None
        return FsspecStore.from_url(self.url, storage_options=options, read_only=read_only)

    def probe(self, what: str = "store") -> None:
        """A one-line typed error now, rather than a traceback later, when the object store is
        unreachable, refuses the credentials or has no such bucket (local roots: nothing);
        ``what`` names the thing at this location in the message (a store, a dataset)."""
        failures.probe(self, what)

    # ---- reading ----------------------------------------------------------------------------

    def is_file(self, key: str) -> bool:
        """Whether ``key`` exists as a file under the root."""
        return bool(self.fs.isfile(self.path(key)))

    def is_dir(self, key: str) -> bool:
        """Whether ``key`` is a folder (an object store: a prefix with objects under it)."""
        return bool(self.fs.isdir(self.path(key)))

    def exists(self, key: str) -> bool:
        """Whether a file or folder is at ``key``."""
        return bool(self.fs.exists(self.path(key)))

    def lexists(self, key: str) -> bool:
        """Whether anything is at ``key``, a dangling symlink on local disk included."""
        return bool(self.fs.lexists(self.path(key)))

    def read(self, key: str) -> bytes:
        """The bytes of ``key`` (FileNotFoundError when it does not exist)."""
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    def read_range(self, key: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of ``key`` (fewer at its end; FileNotFoundError if missing)."""
        # By keyword: s3fs's cat_file takes a version id second, and would read [stop, end).
        data: bytes = self.fs.cat_file(self.path(key), start=start, end=stop)
        return data

    def open(self, key: str) -> IO[bytes]:
        """``key`` opened for reading (a file object; close it)."""
        f: IO[bytes] = self.fs.open(self.path(key), "rb")
        return f

    def size(self, key: str) -> int | None:
        """The size of the regular file at ``key``; None when there is none (or a folder)."""
        try:
            info = self.fs.info(self.path(key))
        except FileNotFoundError:
            return None
        return int(info.get("size") or 0) if info.get("type") == "file" else None

    def signature(self, key: str) -> Signature:
        """The change :class:`Signature` of ``key`` as the storage says it now (local disk:
        through the key's own path, so that a folder swapped in is seen); FileNotFoundError
        when nothing is there."""
        path = self.path(key)
        if self.is_local:
            return stat_signature(os.stat(path))
        self.fs.invalidate_cache(path)  # another process may have replaced it
        return info_signature(self.fs.info(path))

    def keys(self) -> list[str]:
        """The keys of every file stored under the root (none when there is no root)."""
        return sorted(self.file_sizes())

    def file_sizes(self, prefix: str = "") -> dict[str, int]:
        """Size of every file under the root (or under the folder ``prefix``), by key: one
        listing (an object store answers 1,000 keys per request, a stat would be one each)."""
        # find() names a local file by its absolute path, an object by bucket/key.
        root = (os.path.abspath(self.root) if self.is_local else self.root).rstrip("/")
        base = f"{root}/{prefix}".rstrip("/") if prefix else root
        try:
            found = self.fs.find(base, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return {
            str(p)[len(root) + 1 :]: int(v.get("size") or 0)
            for p, v in found.items()
            if v.get("type") == "file"
        }

    def names(self, key: str = "") -> list[str]:
        """Names of the entries directly under folder ``key`` (the root by default); none
        when there is no such folder or it cannot be listed."""
        try:
            found = self.fs.ls(self.path(key) if key else self.root, detail=False)
        except OSError:  # no folder (FileNotFoundError), or not listable
            return []
        return [str(p).rstrip("/").rsplit("/", 1)[-1] for p in found]

    def folders(self) -> list[str]:
        """Names of the sub-folders (object store: common prefixes) directly under the root."""
        entries = self.fs.ls(self.root, detail=True)
        return sorted(
            str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
            for e in entries
            if e.get("type") == "directory"
        )

    def is_empty(self) -> bool:
        """Whether nothing is stored under the root (no folder, an empty one, no object)."""
        try:
            return not self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return True

    def sizes(self) -> tuple[int, int]:
        """(bytes, files) of everything stored under the root."""
        found = self.file_sizes()
        return sum(found.values()), len(found)

    # ---- writing ----------------------------------------------------------------------------

    def makedirs(self, key: str) -> None:
        """Create folder ``key`` on local disk (object stores have no folders: and s3fs's
        makedirs would create a missing bucket, which must be an error instead)."""
        if self.is_local:
            self.fs.makedirs(self.path(key), exist_ok=True)

    def write_atomic(self, key: str, data: bytes, kind: str = "file") -> None:
        """Replace ``key`` with ``data`` so that readers see the old or the new file, whole.

        On local disk the bytes go to a temporary file (:func:`is_temporary`) renamed over
        ``key``; a crash can leave that file behind (:meth:`remove_temporaries`). ``kind``
        names the file for the crash points (:mod:`teacher_store.storage.faults`)."""
        path = self.path(key)
        if not self.is_local:
            faults.torn_write(kind, lambda part: self.fs.pipe_file(path, part), data)
            self.fs.pipe_file(path, data)  # an object store's PUT is atomic by itself
            faults.crash_point(f"{kind}-written")
            return
        parent, base = path.rsplit("/", 1)
        tmp = f"{parent}/.{base}.tmp{os.getpid()}"
        faults.torn_write(kind, lambda part: _write_closed(tmp, part), data)
        try:
            with _create(tmp) as f:
                f.write(data)
            # os.replace, not fs.mv: shutil.move (behind LocalFileSystem.mv) falls back to a
            # non-atomic copy when the rename fails, and a crash mid-copy leaves half a file.
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)  # a disk-full write leaves no stray temporary file
            if e.errno is None or e.filename is not None:
                raise
            # A failed write() or close() names no file: name the one being written, so a
            # disk-full message says where the store stopped.
            raise OSError(e.errno, e.strerror, path) from e
        faults.crash_point(f"{kind}-written")

    @contextlib.contextmanager
    def open_atomic(self, key: str) -> Iterator[IO[bytes]]:
        """A file to write ``key`` through, streamed (a tar shard of a GB need not sit in
        memory): it appears whole when the block ends, and not at all if the block raises.

        Local disk: a temporary file beside ``key`` (:func:`is_temporary`) renamed over it;
        an object store: a local temporary file uploaded in one PUT (multipart for large
        files) when the block ends."""
        path = self.path(key)
        if self.is_local:
            parent, base = path.rsplit("/", 1)
            tmp = f"{parent}/.{base}.tmp{os.getpid()}"
            try:
                with _create(tmp) as f:
                    yield f
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            return
        with tempfile.NamedTemporaryFile(prefix="distill-upload-") as f:
            yield f
            f.flush()
            self.fs.put_file(f.name, path)

    def remove_temporaries(self) -> int:
        """Delete the temporary files that killed writers left (local disk; an object store
        has none); returns how many. Only while no writer is at work on this store: another
        process's temporary file is indistinguishable from a dead one's."""
        if not self.is_local:
            return 0
        leftovers = [k for k in self.keys() if is_temporary(k.rsplit("/", 1)[-1])]
        for key in leftovers:
            self.remove(key)
        return len(leftovers)

    def remove(self, key: str) -> None:
        """Delete ``key`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def clear(self) -> None:
        """Delete everything under the root; a folder itself stays (it may be a mount point)."""
        if not self.is_local:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self.root, recursive=True)  # a prefix: nothing stays
            return
        try:
            children = self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        for child in children:
            self.fs.rm(child, recursive=True)


def _create(path: str) -> Any:
    """``path`` opened for writing (truncated), its folder made first if missing: a store
    writes thousands of files into a few folders, and a mkdir per file costs a metadata
    operation each (measured: ~0.8 ms per file on a loaded machine)."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return open(path, "wb")


def _write_closed(path: str, data: bytes) -> None:
    with _create(path) as f:
        f.write(data)


_TEMPORARY = re.compile(r"\.[^/]+\.tmp[0-9]+")


def is_temporary(name: str) -> bool:
    """Whether a file name is that of :meth:`Location.write_atomic`'s temporary files."""
    return _TEMPORARY.fullmatch(name) is not None


__all__ = [
    "CHANGE_FIELDS",
    "Location",
    "Signature",
    "info_signature",
    "is_temporary",
    "stat_signature",
]
