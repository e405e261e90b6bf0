"""The stores under the root: discovered at startup, re-scanned cheaply (at most once a second).

A store is a direct sub-folder of the root with a ``zarr.json`` whose attrs say
``kind == "distill-teacher-store"``. A store with ``_distill/manifest.json`` is complete and served;
an unfinished one is listed with its progress; a damaged one (a file that fails its schema: root
``zarr.json``, consolidated metadata, manifest) is listed as ``invalid`` with the reason naming
the file, and its data requests answer 409. Scans run in a worker thread, never on the event
loop, and cost what is on disk (a folder listing, the root and manifest JSON), never what the
attrs claim. Only these keys of a complete store are served: ``zarr.json`` files of the group and
of every array named in its consolidated metadata, ``_distill/manifest.json``, and the shard files
the manifest lists. Nothing else under the store (or outside it) is reachable.

The root is a folder or an object-store prefix (``s3://BUCKET/PREFIX``): its stores are the
"sub-folders" a listing shows, and a file's signature is the storage room's
(:meth:`~teacher_store.storage.location.Location.signature`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool

from api.errors import store_status
from api.shards import ArrayLayout, parse_layout
from teacher_store.errors import StoreDamaged, StoreError
from teacher_store.fidelity import FidelityStatus, read_status
from teacher_store.storage.location import Location, Signature
from teacher_store.store import layout
from teacher_store.store.integrity import CheckedStore, check_store, legacy_note, meta_keys
from teacher_store.store.layout import BOOK, FIDELITY, MANIFEST, ROOT_META, FileRecord
from teacher_store.store.schema import STORE_KIND, StoreAttrs

log = logging.getLogger("distill.api")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
State = Literal["complete", "incomplete", "invalid"]
NAME_RULE = "store names are 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"
_Sig = Signature
_META_KEYS = frozenset(meta_keys())


def printable_name(name: str) -> str:
    """A folder name as text that is always valid UTF-8 (undecodable bytes as \\xNN)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def name_problem(name: str) -> str | None:
    """Why the service will not serve a store folder called ``name`` (None: it will)."""
    if NAME_RE.fullmatch(name):
        return None
    if not name:
        return f"its name is empty; {NAME_RULE}"
    if len(name) > 128:
        return f"its name has {len(name)} characters; {NAME_RULE}"
    if not (name[0].isascii() and name[0].isalnum()):
        return f"its name starts with {printable_name(name[0])!r}; {NAME_RULE}"
    bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "._-")))
    return f"its name contains {printable_name(bad)!r}; {NAME_RULE}"


def _sig(loc: Location, key: str) -> _Sig | None:
    """A key's change signature (the storage room's: inode, size and mtime; an object's size,
    ETag and time), or None when nothing is there."""
    try:
        return loc.signature(key)
    except OSError:
        return None


@dataclass
class StoreEntry:
    """One store folder as last scanned."""

    name: str
    path: str  # the store's address: its folder or its URL
    real: str
    state: State
    sigs: tuple[_Sig | None, _Sig | None]
    uid: int
    attrs: StoreAttrs | None = None
    error: str | None = None
    committed_units: int = 0
    total_units: int | None = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    empty: frozenset[str] = frozenset()  # manifest keys of size 0: never written, fill values
    identity: str = ""  # sha256 of the manifest bytes (16 hex digits): which store this is
    grown_from: list[dict[str, Any]] = field(default_factory=list)  # a grown store's lineage
    meta_keys: frozenset[str] = frozenset()
    meta: dict[str, FileRecord] = field(default_factory=dict)  # recorded metadata digests
    layouts: dict[str, ArrayLayout | None] = field(default_factory=dict)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_samples: int = 0
    loc: Location | None = None  # where its files are read (a folder: its real path)
    damage: tuple[str, _Sig | None] | None = None  # a file found damaged when served, its stat
    code: str = "store_invalid"  # the error code of an invalid store (api.errors.STORE_ERRORS)
    # The recorded fidelity check (teacher_store.fidelity), re-read when its file changes;
    # never part of the identity (the manifest does not list it).
    fidelity: FidelityStatus | None = None
    fidelity_sig: _Sig | None = None

    @property
    def location(self) -> Location:
        return self.loc if self.loc is not None else Location.local(self.real)

    def exists(self, key: str) -> bool:
        """Whether a file is at ``key`` (a dangling symlink counts)."""
        return self.location.lexists(key)

    @property
    def data_bytes(self) -> int:
        """Bytes of the target arrays' files (bookkeeping files such as the samples' content
        digests are not target data: bytes per view counts targets only)."""
        return sum(r.size for k, r in self.files.items() if not k.startswith(f"{BOOK}/"))

    def committed(self, key: str) -> FileRecord | Literal[False] | None:
        """The manifest record of a served key (metadata: its recorded digest, None in older
        stores and for the manifest itself), or False if not served (a key of size 0 in the
        manifest is not served: it reads as the fill value)."""
        if key in self.files:
            return self.files[key]
        return self.meta.get(key) if key in self.meta_keys else False


def _invalid(key: str, problem: str) -> StoreDamaged:
    """A store file failing its schema; the message starts with the file's key in the store."""
    return StoreDamaged(key, problem, f"{key} {problem}")


def _root_doc(loc: Location) -> tuple[bytes, Any] | None:
    """The root ``zarr.json`` (bytes and JSON) of a store; None for a folder that is no store
    at all (no root and no bookkeeping folder, or some other zarr group)."""
    has_book = loc.is_dir(BOOK)
    if not loc.lexists(ROOT_META) and not has_book:
        return None
    raw, doc = layout.read_json(loc, ROOT_META)
    if isinstance(doc, dict) and not has_book:
        attrs = doc.get("attributes")
        if not isinstance(attrs, dict) or attrs.get("kind") != STORE_KIND:
            return None  # some other zarr group: not ours, not listed
    return raw, doc


def _load_complete(entry: StoreEntry, checked: CheckedStore) -> None:
    """What serving a finished store needs from its (checked) manifest and metadata."""
    manifest = checked.manifest
    assert manifest is not None
    files = {k: FileRecord(v.size, v.crc32c, v.sha256) for k, v in manifest.files.items() if v.size}
    empty = frozenset(k for k, v in manifest.files.items() if not v.size)
    for key in sorted(empty):  # size 0 means "never written": an existing file contradicts it
        if entry.exists(key):
            raise _invalid(MANIFEST, f"records {key} with size 0, but the file exists")
    entry.identity = checked.identity
    entry.grown_from = [g.model_dump() for g in manifest.grown_from]
    entry.files, entry.empty = files, empty
    # Served metadata is verified against the digests the manifest recorded (older stores: none).
    entry.meta = {k: FileRecord(v.size, v.crc32c, v.sha256) for k, v in manifest.meta.items()}
    entry.bad_samples = len(manifest.bad_samples)
    nodes = checked.arrays
    entry.meta_keys = frozenset({ROOT_META, MANIFEST, *(f"{node}/{ROOT_META}" for node in nodes)})
    for node, meta in nodes.items():
        entry.arrays[node] = meta
        entry.layouts[node] = parse_layout(node, meta)


def _file_sizes(entry: StoreEntry) -> dict[str, int]:
    """Size of every file of the store: one stat each on disk (a link out of the store counts
    as missing: ``-1``), one listing on an object store (a stat per object would be a request
    per object)."""
    loc = entry.location
    if not loc.is_local:
        return loc.file_sizes()
    sizes: dict[str, int] = {}
    for key in entry.files:
        real = os.path.realpath(os.path.join(entry.real, key))
        if not real.startswith(entry.real + os.sep):
            sizes[key] = -1
            continue
        with contextlib.suppress(FileNotFoundError):
            sizes[key] = os.stat(real).st_size
    return sizes


def _check_files(entry: StoreEntry) -> None:
    """Every committed file must exist inside the store with its manifest size: a missing or
    cut shard makes the store damaged at once, not at its first read."""
    sizes = _file_sizes(entry)
    for key, rec in sorted(entry.files.items()):
        size = sizes.get(key)
        if size == -1:
            raise _invalid(key, "resolves outside the store (symlink)")
        if size is None:
            raise _invalid(key, "is missing")
        if size != rec.size:
            raise _invalid(key, f"is {size} bytes but the manifest says {rec.size} (truncated?)")


def _open_entry(
    name: str, loc: Location, real: str, sigs: tuple[Any, Any], uid: int
) -> StoreEntry | None:
    """The store at ``loc`` as it is now (``invalid`` with the reason when a file is bad)."""
    entry = StoreEntry(name, loc.display, real, "invalid", sigs, uid, loc=loc)
    try:
        root = _root_doc(entry.location)
        if root is None:
            return None
        # The checks every reader makes (attrs, arrays, metadata digests): one shared function.
        checked = check_store(entry.location, where="", root=root)
        entry.attrs = checked.attrs
        entry.total_units = entry.attrs.unit_count
        if checked.manifest is None:
            entry.state = "incomplete"
            return entry
        if not checked.meta_recorded:
            log.warning("%s", legacy_note(repr(name)))
        _load_complete(entry, checked)
        _check_files(entry)
        entry.state = "complete"
    except StoreError as e:  # a store file fails its schema, or a version this code cannot read
        entry.code = store_status(e)[1]
        if isinstance(e, StoreDamaged) and (e.file in entry.files or e.file in _META_KEYS):
            entry.damage = (e.file, _sig(entry.location, e.file))  # reopen once it is restored
        entry.error = (
            f"store {name!r} is damaged and cannot be served: {e}; restore the file or "
            "regenerate the store (re-run the same `distill generate`)"
        )
    except OSError as e:  # a real I/O fault outside the store's own files (a listing, a stat)
        entry.error = f"store {name!r} cannot be served: {type(e).__name__}: {e}"
    except Exception as e:  # one store's surprise must never stop the scan of the others
        log.exception("store %r: unexpected error while opening it", name)
        entry.error = f"store {name!r} cannot be served: {type(e).__name__}: {e}"
    if entry.error is not None:
        entry.state, entry.files, entry.arrays, entry.layouts = "invalid", {}, {}, {}
        log.warning("%s", entry.error)
    return entry


def _read_fidelity(entry: StoreEntry) -> None:
    """(Re)read the store's recorded fidelity check when its file changed (one stat a scan);
    shown as stale when it names another identity than the store's."""
    if entry.state != "complete":
        entry.fidelity, entry.fidelity_sig = None, None
        return
    sig = _sig(entry.location, FIDELITY)
    if sig == entry.fidelity_sig and entry.fidelity is not None:
        return
    entry.fidelity_sig = sig
    entry.fidelity = None if sig is None else read_status(entry.location, entry.identity)


def check_root(root: str) -> Location:
    """The served root's location: a folder that exists, or a reachable object-store prefix
    (one-line typed errors otherwise: bad scheme, missing bucket, refused credentials)."""
    loc = Location.at(root)
    if loc.is_local and not os.path.isdir(loc.root):
        raise ValueError(f"--root {root} is not a directory")
    loc.probe()
    return loc


def _same_damage(entry: StoreEntry) -> bool:
    """False once the file a request found damaged has changed (restored?): reopen."""
    if entry.damage is None:
        return True
    key, sig = entry.damage
    return _sig(entry.location, key) == sig


def _count_units(loc: Location) -> int:
    """Unit records present (a folder listing: bounded by what is on disk)."""
    return layout.count_unit_records(loc)


class Registry:
    """Map name -> :class:`StoreEntry` over one root (a folder or an object-store prefix),
    re-scanned in a worker thread."""

    def __init__(self, root: str | os.PathLike[str], rescan_interval_s: float = 1.0) -> None:
        self.loc = Location.at(root)
        self.root = self.loc.display
        self.name = self.loc.root.rstrip("/").rsplit("/", 1)[-1]
        self.real_root = os.path.realpath(self.loc.root) if self.loc.is_local else self.loc.root
        self.interval = rescan_interval_s
        self.ready = False
        self._stores: dict[str, StoreEntry] = {}
        self._others: dict[str, tuple[Any, ...]] = {}  # folders that are no store, by signature
        self._skipped: dict[str, str] = {}  # store folders not served: printable name -> why
        self._skipping: dict[str, str] = {}  # the same, found by the scan in progress
        self._store_like: dict[str, bool] = {}  # object-store folders with a bad name, checked
        self._lock = threading.Lock()
        self._last = -1e18
        self._uid = 0
        self._task: asyncio.Future[None] | None = None

    def scan(self) -> None:
        """Re-read the root (blocking): new stores appear, changed ones reopen, removed ones go."""
        with self._lock:
            try:
                children = self._children()
            except OSError as e:  # keep serving what was found before
                log.error("cannot list the served root %s: %s", self.root, e.strerror or e)
                children = None
            if children is not None:
                self._note_skipped()
                found: dict[str, StoreEntry] = {}
                for name, child, real in children:
                    entry = self._scan_one(name, child, real)
                    if entry is not None:
                        found[entry.name] = entry
                self._stores = found
            self._last = time.monotonic()
            if not self.ready:
                log.info("serving %d stores from %s", len(self._stores), self.root)
            self.ready = True

    def _children(self) -> list[tuple[str, Location, str]]:
        """(name, location, real path) of the sub-folders that may be stores, by name. Store
        folders that will not be served (a name the API cannot address, a link out of the
        root) are collected in ``_skipping`` with the reason."""
        self._skipping = {}
        if not self.loc.is_local:
            return self._object_children()
        out = []
        for path in sorted(Path(self.loc.root).iterdir()):
            if not path.is_dir():
                continue
            why = name_problem(path.name)
            if why is not None:
                if any(os.path.lexists(path / key) for key in (ROOT_META, BOOK)):
                    self._skipping[printable_name(path.name)] = why
                continue
            real = os.path.realpath(path)
            if not real.startswith(self.real_root + os.sep):
                why = f"it resolves outside the served root (to {printable_name(real)})"
                self._skipping[printable_name(path.name)] = why
                continue
            out.append((path.name, Location.local(real), real))
        return out

    def _object_children(self) -> list[tuple[str, Location, str]]:
        out = []
        for name in self.loc.folders():
            child = self.loc.child(name)
            why = name_problem(name)
            if why is None:
                out.append((name, child, child.root))
                continue
            if name not in self._store_like:  # one request per such folder, not per scan
                self._store_like[name] = child.exists(ROOT_META)
            if self._store_like[name]:
                self._skipping[printable_name(name)] = why
        return out

    def _note_skipped(self) -> None:
        """Log each newly skipped store folder once (scans repeat every second)."""
        for name, why in sorted(self._skipping.items()):
            if self._skipped.get(name) != why:
                log.warning("not serving the store folder %r: %s", name, why)
        self._skipped = self._skipping

    def skipped(self) -> list[tuple[str, str]]:
        """(name, why) of the store folders under the root that are not served, as last
        scanned."""
        return sorted(self._skipped.items())

    def _scan_one(self, name: str, child: Location, real: str) -> StoreEntry | None:
        sigs = (_sig(child, ROOT_META), _sig(child, MANIFEST))
        book = _sig(child, BOOK)
        old = self._stores.get(name)
        if old is not None and old.sigs == sigs and old.real == real and _same_damage(old):
            if old.state == "incomplete":
                old.committed_units = _count_units(child)
            _read_fidelity(old)
            return old
        if self._others.get(name) == (sigs, book, real):
            return None
        self._uid += 1
        entry = _open_entry(name, child, real, sigs, self._uid)
        if entry is None:
            self._others[name] = (sigs, book, real)
            return None
        self._others.pop(name, None)
        entry.committed_units = entry.total_units or 0
        if entry.state == "incomplete":
            entry.committed_units = _count_units(child)
        _read_fidelity(entry)
        return entry

    async def refresh(self) -> None:
        """Rescan in a worker thread when the view is older than the interval; concurrent
        callers share one scan, and the event loop (``/healthz``) never waits on it."""
        if self.ready and time.monotonic() - self._last < self.interval:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(run_in_threadpool(self.scan))
        await asyncio.shield(self._task)

    def mark_damaged(self, entry: StoreEntry, key: str, reason: str) -> None:
        """A request reading ``entry`` found ``key`` damaged: list the store as invalid with the
        reason and refuse its data (409) until the file changes on disk (then it is reopened).
        Nothing happens when ``entry`` is no longer the store listed under its name (it was
        replaced meanwhile: the new store is not the one found damaged)."""
        with self._lock:
            if self._stores.get(entry.name) is not entry or entry.state != "complete":
                return
            entry.damage = (key, _sig(entry.location, key))
            entry.state, entry.error, entry.code = "invalid", reason, "store_damaged"
        log.warning("%s", reason)

    def list(self) -> list[StoreEntry]:
        """The stores as last scanned."""
        return list(self._stores.values())

    def get(self, name: str) -> StoreEntry | None:
        """The store called ``name`` as last scanned (routes call :meth:`refresh` first)."""
        return self._stores.get(name)
