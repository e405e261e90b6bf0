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
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from api.cache import FileRecord
from api.shards import ArrayLayout, parse_layout
from teacher_store.schema import (
    STORE_KIND,
    Manifest,
    NodeMeta,
    RootMeta,
    StoreAttrs,
    check_readable,
    validation_message,
)
from teacher_store.store import BOOK

log = logging.getLogger("distill.api")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = f"{BOOK}/manifest.json"
State = Literal["complete", "incomplete", "invalid"]
_Sig = tuple[int, int, int]
_M = TypeVar("_M", bound=BaseModel)


def _sig(path: Path) -> _Sig | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class StoreEntry:
    """One store folder as last scanned."""

    name: str
    path: Path
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
    meta_keys: frozenset[str] = frozenset()
    layouts: dict[str, ArrayLayout | None] = field(default_factory=dict)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_samples: int = 0

    @property
    def data_bytes(self) -> int:
        return sum(r.size for r in self.files.values())

    def committed(self, key: str) -> FileRecord | Literal[False] | None:
        """The manifest record of a served key (None for metadata), or False if not served
        (a key of size 0 in the manifest is not served: it reads as the fill value)."""
        if key in self.files:
            return self.files[key]
        return None if key in self.meta_keys else False


class _Invalid(ValueError):
    """A store file fails its schema; the message starts with the file's key in the store."""


_MAX_JSON = 256 << 20  # a manifest of 1M shard files is ~150 MB; anything larger is not ours


def _read_json(path: Path, key: str) -> tuple[bytes, Any]:
    """The bytes and parsed JSON of a regular file (``_Invalid`` naming ``key`` otherwise)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end
            raise _Invalid(f"{key} is not a regular file")
        if st.st_size > _MAX_JSON:
            raise _Invalid(f"{key} is {st.st_size} bytes, more than any store writes")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _Invalid(f"{key} is missing") from None
    except OSError as e:
        raise _Invalid(f"{key} is unreadable: {e.strerror or e}") from None
    try:
        return raw, json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        what = "empty" if not raw.strip() else f"not valid JSON ({e})"
        raise _Invalid(f"{key} is {what}") from None


def _validated(model: type[_M], doc: Any, key: str) -> _M:
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise _Invalid(f"{key}: {validation_message(e)}") from None


def _root_meta(path: Path) -> RootMeta | None:
    """The validated root ``zarr.json``; None for a folder that is no store at all."""
    has_book = (path / BOOK).is_dir()
    if not os.path.lexists(path / "zarr.json") and not has_book:
        return None
    _, doc = _read_json(path / "zarr.json", "zarr.json")
    if isinstance(doc, dict) and not has_book:
        attrs = doc.get("attributes")
        if not isinstance(attrs, dict) or attrs.get("kind") != STORE_KIND:
            return None  # some other zarr group: not ours, not listed
    return _validated(RootMeta, doc, "zarr.json")


def _attrs_of(root: RootMeta) -> StoreAttrs:
    from teacher_store.codec import CODEC_VERSION

    try:
        return check_readable(dict(root.attributes), "zarr.json", CODEC_VERSION)
    except ValueError as e:
        raise _Invalid(str(e)) from None


def _check_arrays(attrs: StoreAttrs, nodes: dict[str, NodeMeta]) -> None:
    """The consolidated arrays must have the shapes the attrs promise (else blocks would read
    chunks no unit wrote, as fill values)."""
    r, n, k = attrs.views, attrs.num_samples, attrs.topk
    for name, shape in (("ids", [r, n, k]), ("values", [r, n, k]), ("valid", [r, n])):
        node = nodes.get(name)
        if node is None or node.node_type != "array":
            raise _Invalid(f"zarr.json: consolidated metadata has no array {name!r}")
        if node.shape != shape or node.data_type is None:
            raise _Invalid(
                f"zarr.json: array {name!r} has shape {node.shape} but the attrs make {shape}"
            )


def _load_complete(entry: StoreEntry, root: RootMeta) -> None:
    attrs = entry.attrs
    assert attrs is not None
    manifest_bytes, doc = _read_json(entry.path / MANIFEST, MANIFEST)
    manifest = _validated(Manifest, doc, MANIFEST)
    if manifest.units != attrs.unit_count:
        raise _Invalid(
            f"{MANIFEST} records {manifest.units} shard units but zarr.json's attrs make "
            f"{attrs.unit_count}"
        )
    if root.consolidated_metadata is None:
        raise _Invalid("zarr.json has no consolidated metadata; re-run finalize")
    nodes = root.consolidated_metadata.metadata
    _check_arrays(attrs, nodes)
    files = {k: FileRecord(v.size, v.crc32c, v.sha256) for k, v in manifest.files.items() if v.size}
    empty = frozenset(k for k, v in manifest.files.items() if not v.size)
    for key in sorted(empty):  # size 0 means "never written": an existing file contradicts it
        if os.path.lexists(entry.path / key):
            raise _Invalid(f"{MANIFEST} records {key} with size 0, but the file exists")
    entry.identity = hashlib.sha256(manifest_bytes).hexdigest()[:16]
    entry.files, entry.empty = files, empty
    entry.bad_samples = len(manifest.bad_samples)
    entry.meta_keys = frozenset({"zarr.json", MANIFEST, *(f"{node}/zarr.json" for node in nodes)})
    for node, meta in nodes.items():
        if meta.node_type == "array":
            entry.arrays[node] = meta.model_dump()
            entry.layouts[node] = parse_layout(node, entry.arrays[node])


def _open_entry(
    name: str, path: Path, real: str, sigs: tuple[Any, Any], uid: int
) -> StoreEntry | None:
    """The store in ``path`` as it is now (``invalid`` with the reason when a file is bad)."""
    entry = StoreEntry(name, path, real, "invalid", sigs, uid)
    try:
        root = _root_meta(path)
        if root is None:
            return None
        entry.attrs = _attrs_of(root)
        entry.total_units = entry.attrs.unit_count
        if sigs[1] is None:
            entry.state = "incomplete"
            return entry
        _load_complete(entry, root)
        entry.state = "complete"
    except _Invalid as e:
        entry.error = (
            f"store {name!r} is damaged and cannot be served: {e}; restore the file or "
            "regenerate the store (re-run the same `distill generate`)"
        )
    except Exception as e:  # one store's surprise must never stop the scan of the others
        log.exception("store %r: unexpected error while opening it", name)
        entry.error = f"store {name!r} cannot be served: {type(e).__name__}: {e}"
    if entry.error is not None:
        entry.state, entry.files, entry.arrays, entry.layouts = "invalid", {}, {}, {}
        log.warning("%s", entry.error)
    return entry


def _count_units(path: Path) -> int:
    """Unit records present (a folder listing: bounded by what is on disk)."""
    try:
        with os.scandir(path / BOOK / "shards") as it:
            return sum(1 for p in it if p.name.endswith(".json"))
    except OSError:
        return 0


class Registry:
    """Map name -> :class:`StoreEntry` over one root folder, re-scanned in a worker thread."""

    def __init__(self, root: Path, rescan_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.real_root = os.path.realpath(self.root)
        self.interval = rescan_interval_s
        self.ready = False
        self._stores: dict[str, StoreEntry] = {}
        self._others: dict[str, tuple[Any, ...]] = {}  # folders that are no store, by signature
        self._lock = threading.Lock()
        self._last = -1e18
        self._uid = 0
        self._task: asyncio.Future[None] | None = None

    def scan(self) -> None:
        """Re-read the root (blocking): new stores appear, changed ones reopen, removed ones go."""
        with self._lock:
            try:
                children = sorted(self.root.iterdir())
            except OSError as e:  # keep serving what was found before
                log.error("cannot list the served root %s: %s", self.root, e.strerror or e)
                children = None
            if children is not None:
                found: dict[str, StoreEntry] = {}
                for child in children:
                    entry = self._scan_one(child)
                    if entry is not None:
                        found[entry.name] = entry
                self._stores = found
            self._last = time.monotonic()
            if not self.ready:
                log.info("serving %d stores from %s", len(self._stores), self.root)
            self.ready = True

    def _scan_one(self, child: Path) -> StoreEntry | None:
        name = child.name
        if not NAME_RE.match(name) or not child.is_dir():
            return None
        real = os.path.realpath(child)
        if not real.startswith(self.real_root + os.sep):
            log.warning("skipping %s: it resolves outside the root (%s)", child, real)
            return None
        sigs = (_sig(child / "zarr.json"), _sig(child / MANIFEST))
        book = _sig(child / BOOK)
        old = self._stores.get(name)
        if old is not None and old.sigs == sigs and old.real == real:
            if old.state == "incomplete":
                old.committed_units = _count_units(child)
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
        return entry

    async def refresh(self) -> None:
        """Rescan in a worker thread when the view is older than the interval; concurrent
        callers share one scan, and the event loop (``/healthz``) never waits on it."""
        if self.ready and time.monotonic() - self._last < self.interval:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(run_in_threadpool(self.scan))
        await asyncio.shield(self._task)

    def list(self) -> list[StoreEntry]:
        """The stores as last scanned."""
        return list(self._stores.values())

    def get(self, name: str) -> StoreEntry | None:
        """The store called ``name`` as last scanned (routes call :meth:`refresh` first)."""
        return self._stores.get(name)
