"""The stores under the root: discovered at startup, re-scanned cheaply (at most once a second).

A store is a direct sub-folder of the root with a ``zarr.json`` whose attrs say
``kind == "distill-teacher-store"``. A store with ``_distill/manifest.json`` is complete and served;
an unfinished one is listed with its progress; an unreadable one is listed with the reason.
Only these keys of a complete store are served: ``zarr.json`` files of the group and of every
array named in its consolidated metadata, ``_distill/manifest.json``, and the shard files the
manifest lists. Nothing else under the store (or outside it) is reachable.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from api.cache import FileRecord
from api.shards import ArrayLayout, parse_layout
from teacher_store.schema import STORE_KIND, StoreAttrs, check_readable
from teacher_store.store import BOOK, shard_units

log = logging.getLogger("distill.api")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MANIFEST = f"{BOOK}/manifest.json"
State = Literal["complete", "incomplete", "invalid"]
_Sig = tuple[int, int, int]


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
    meta_keys: frozenset[str] = frozenset()
    layouts: dict[str, ArrayLayout | None] = field(default_factory=dict)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_samples: int = 0

    @property
    def data_bytes(self) -> int:
        return sum(r.size for r in self.files.values())

    def committed(self, key: str) -> FileRecord | Literal[False] | None:
        """The manifest record of a served key (None for metadata), or False if not served."""
        if key in self.files:
            return self.files[key]
        return None if key in self.meta_keys else False


def _attrs_of(root_meta: dict[str, Any], where: str) -> StoreAttrs:
    from teacher_store.codec import CODEC_VERSION

    return check_readable(dict(root_meta.get("attributes", {})), where, CODEC_VERSION)


def _load_complete(entry: StoreEntry, root_meta: dict[str, Any]) -> None:
    manifest = json.loads((entry.path / MANIFEST).read_text())
    entry.files = {
        k: FileRecord(int(v["size"]), int(v["crc32c"]), str(v.get("sha256", "")))
        for k, v in manifest["files"].items()
        if int(v["size"]) > 0
    }
    entry.bad_samples = len(manifest.get("bad_samples", []))
    consolidated = (root_meta.get("consolidated_metadata") or {}).get("metadata")
    if not isinstance(consolidated, dict):
        raise ValueError("its zarr.json has no consolidated metadata; re-run finalize")
    entry.meta_keys = frozenset(
        {"zarr.json", MANIFEST, *(f"{node}/zarr.json" for node in consolidated)}
    )
    for node, meta in consolidated.items():
        if meta.get("node_type") != "array":
            continue
        entry.layouts[node] = parse_layout(node, meta)
        entry.arrays[node] = meta


def _open_entry(name: str, path: Path, real: str, sigs: tuple[Any, Any], uid: int) -> StoreEntry:
    entry = StoreEntry(name, path, real, "invalid", sigs, uid)
    try:
        root_meta = json.loads((path / "zarr.json").read_text())
        entry.attrs = _attrs_of(root_meta, f"store {name!r}")
        entry.total_units = len(shard_units(entry.attrs))
        if sigs[1] is None:
            entry.state = "incomplete"
            return entry
        _load_complete(entry, root_meta)
        entry.state = "complete"
    except (OSError, ValueError, KeyError, TypeError) as e:
        entry.error = f"store {name!r} cannot be served: {e}"
        entry.state = "invalid"
        log.warning("%s", entry.error)
    return entry


def _is_store(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text())
        return bool(meta.get("attributes", {}).get("kind") == STORE_KIND)
    except (OSError, ValueError, AttributeError):
        return False


def _count_units(path: Path) -> int:
    try:
        return sum(1 for p in os.scandir(path / BOOK / "shards") if p.name.endswith(".json"))
    except OSError:
        return 0


class Registry:
    """Thread-safe map name -> :class:`StoreEntry` over one root folder."""

    def __init__(self, root: Path, rescan_interval_s: float = 1.0) -> None:
        self.root = Path(root)
        self.real_root = os.path.realpath(self.root)
        self.interval = rescan_interval_s
        self.ready = False
        self._stores: dict[str, StoreEntry] = {}
        self._lock = threading.Lock()
        self._last = -1e18
        self._uid = 0

    def scan(self) -> None:
        """Re-read the root: new stores appear, changed ones reopen, removed ones disappear."""
        with self._lock:
            found: dict[str, StoreEntry] = {}
            for child in sorted(self.root.iterdir()):
                entry = self._scan_one(child)
                if entry is not None:
                    found[entry.name] = entry
            self._stores = found
            self._last = time.monotonic()
            self.ready = True

    def _scan_one(self, child: Path) -> StoreEntry | None:
        name = child.name
        real = os.path.realpath(child)
        if not NAME_RE.match(name) or not child.is_dir():
            return None
        if not real.startswith(self.real_root + os.sep):
            log.warning("skipping %s: it resolves outside the root (%s)", child, real)
            return None
        sigs = (_sig(child / "zarr.json"), _sig(child / MANIFEST))
        old = self._stores.get(name)
        if old is not None and old.sigs == sigs and old.real == real:
            if old.state == "incomplete":
                old.committed_units = _count_units(child)
            return old
        if not _is_store(child):
            return None
        self._uid += 1
        entry = _open_entry(name, child, real, sigs, self._uid)
        entry.committed_units = entry.total_units or 0
        if entry.state == "incomplete":
            entry.committed_units = _count_units(child)
        return entry

    def maybe_rescan(self) -> None:
        if time.monotonic() - self._last >= self.interval:
            self.scan()

    def list(self) -> list[StoreEntry]:
        self.maybe_rescan()
        return list(self._stores.values())

    def get(self, name: str) -> StoreEntry | None:
        """The store called ``name``; the view is at most ``rescan_interval_s`` old."""
        self.maybe_rescan()
        return self._stores.get(name)
