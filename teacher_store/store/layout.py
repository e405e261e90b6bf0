"""The store's key space: the one module that knows where everything of a store lives.

A store is a Zarr v3 group (root ``zarr.json``, arrays :data:`ARRAYS`) plus a bookkeeping
folder :data:`BOOK` beside the zarr keys:

- ``_distill/shards/<unit>.json``: the record of one committed shard unit (its files' size,
  crc32c and sha256, and its unreadable samples), written once the unit's shard files are;
- ``_distill/sample_digests.u64``: the content digest of every sample's image file
  (:class:`~teacher_store.images.digests.SampleDigests`), written with the store (before the
  root ``zarr.json``) and listed in the manifest;
- ``_distill/manifest.json``: every committed file of the finished store, written last;
- ``_distill/fidelity.json``: the last recorded fidelity check (`distill verify --record`),
  outside the manifest and the store identity.

Work is cut into *shard units*: a block of ``shard_views`` view slots by ``shard_samples``
samples, one zarr shard file per array (see :class:`ShardUnit`).

Everything here goes through a :class:`~teacher_store.storage.location.Location` (the storage
room, :mod:`teacher_store.storage`): local disk, an object store or fsspec's memory filesystem
need no change here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import crc32c
from pydantic import ValidationError

from teacher_store.errors import StoreDamaged
from teacher_store.storage.failures import storage_failure
from teacher_store.storage.location import Location, is_temporary
from teacher_store.store.schema import Manifest, StoreAttrs, UnitRecord, validation_message

# Location, is_temporary and storage_failure moved to teacher_store.storage; importable from
# here for one release.

ROOT_META = "zarr.json"  # the root group's metadata: attrs, consolidated metadata once final
ARRAYS = ("ids", "values", "valid")
BOOK = "_distill"  # bookkeeping folder inside the store, beside the zarr keys
SHARDS = f"{BOOK}/shards"
MANIFEST = f"{BOOK}/manifest.json"
GROWTH = f"{BOOK}/growth.json"  # the plan of a growth under way (teacher_store.store.grow)
GROWTH_STAGE = f"{BOOK}/growth/"  # a growth's staged shard files and kept unit records
SAMPLE_DIGESTS = f"{BOOK}/sample_digests.u64"  # N little-endian uint64, sample order
# The last `distill verify --record` (teacher_store.fidelity): a side record that names the
# identity it checked. Never in the manifest, so writing it leaves the identity as it is.
FIDELITY = f"{BOOK}/fidelity.json"
MAX_JSON = 256 << 20  # a manifest of 1M shard files is ~150 MB; anything larger is not ours


def unit_record_key(unit: str) -> str:
    """Key of the record of the unit called ``unit`` (:attr:`ShardUnit.name`)."""
    return f"{SHARDS}/{unit}.json"


# --------------------------------------------------------------------------------------------
# shard units


@dataclass(frozen=True)
class ShardUnit:
    """Slots [slot_start, slot_stop) x samples [start, stop): one shard of every array."""

    group: int
    index: int
    slot_start: int
    slot_stop: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        """The unit's name ``GROUP.INDEX`` (its record is ``_distill/shards/NAME.json``)."""
        return f"{self.group}.{self.index}"

    def keys(self) -> dict[str, str]:
        """Zarr keys of this unit's shard files (default chunk-key encoding, '/' separator)."""
        g, j = self.group, self.index
        return {
            "ids": f"ids/c/{g}/{j}/0",
            "values": f"values/c/{g}/{j}/0",
            "valid": f"valid/c/{g}/{j}",
        }


def shard_units(attrs: StoreAttrs) -> list[ShardUnit]:
    """All units of a store, in canonical order (sample range major, then slot group)."""
    units = []
    n_groups = -(-attrs.views // attrs.shard_views)
    n_ranges = -(-attrs.num_samples // attrs.shard_samples)
    for j in range(n_ranges):
        for g in range(n_groups):
            units.append(
                ShardUnit(
                    g,
                    j,
                    g * attrs.shard_views,
                    min(attrs.views, (g + 1) * attrs.shard_views),
                    j * attrs.shard_samples,
                    min(attrs.num_samples, (j + 1) * attrs.shard_samples),
                )
            )
    return units


# --------------------------------------------------------------------------------------------
# what a key holds


def kind_of(key: str) -> str:
    """What a key holds, as the crash points (:mod:`teacher_store.storage.faults`) name it."""
    if key == MANIFEST:
        return "manifest"
    if key == SAMPLE_DIGESTS:
        return "digests"
    if key == FIDELITY:
        return "fidelity"  # no crash point: not part of the store's commit protocol
    if key.startswith(f"{SHARDS}/"):
        return "record"
    if key == ROOT_META:
        return "root-meta"
    if key == GROWTH or (key.startswith(GROWTH_STAGE) and key.endswith(".json")):
        return "growth"  # a growth's plan or a kept unit record (teacher_store.store.grow)
    return "meta" if key.endswith(f"/{ROOT_META}") else "shard"


def write_file(loc: Location, key: str, data: bytes) -> None:
    """Write one file of a store atomically (:meth:`Location.write_atomic`)."""
    loc.write_atomic(key, data, kind_of(key))


# --------------------------------------------------------------------------------------------
# JSON documents: root attrs, manifest, unit records


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def read_json(loc: Location, key: str, max_bytes: int = MAX_JSON) -> tuple[bytes, Any]:
    """The bytes and parsed JSON of a regular file, or :class:`StoreDamaged` naming ``key``."""
    try:
        size = loc.size(key)
        if size is None:
            if not loc.exists(key):
                raise FileNotFoundError(key)
            raise StoreDamaged(key, "is not a regular file")  # a FIFO would block or never end
        if size > max_bytes:
            raise StoreDamaged(key, f"is {size} bytes, more than any store writes")
        raw = loc.read(key)
    except FileNotFoundError:
        raise StoreDamaged(key, "is missing") from None
    except OSError as e:
        raise StoreDamaged(key, f"is unreadable: {e.strerror or e}") from None
    try:
        return raw, json.loads(raw)
    except ValueError as e:  # also UnicodeDecodeError
        what = "empty" if not raw.strip() else f"not valid JSON ({e})"
        raise StoreDamaged(key, f"is {what}") from None


def read_root_attrs(loc: Location) -> dict[str, Any] | None:
    """The root attrs (not validated: see :func:`~teacher_store.store.schema.check_readable`), or
    None when there is no root ``zarr.json``."""
    if not loc.is_file(ROOT_META):
        return None
    try:
        return dict(json.loads(loc.read(ROOT_META)).get("attributes", {}))
    except (ValueError, OSError) as e:
        where = f"{loc.display.rstrip('/')}/{ROOT_META}"
        raise StoreDamaged(
            ROOT_META,
            f"is unreadable ({e})",
            f"{where} is unreadable ({e}); remove it or pass --overwrite",
        ) from None


def manifest_bytes(loc: Location) -> bytes:
    """The manifest's bytes, as hashed for the store identity (FileNotFoundError if none)."""
    return loc.read(MANIFEST)


def read_manifest(loc: Location) -> dict[str, Any] | None:
    """The manifest as a dict, or None while the store is unfinished."""
    try:
        return dict(json.loads(loc.read(MANIFEST)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StoreDamaged(
            MANIFEST, f"is unreadable: {e}", f"{loc.display}/{MANIFEST} is unreadable: {e}"
        ) from None


def load_manifest(loc: Location, max_bytes: int = MAX_JSON) -> tuple[bytes, Manifest]:
    """The manifest's bytes and validated contents (:class:`StoreDamaged` naming it if bad)."""
    raw, doc = read_json(loc, MANIFEST, max_bytes)
    try:
        return raw, Manifest.model_validate(doc)
    except ValidationError as e:
        msg = validation_message(e)
        raise StoreDamaged(MANIFEST, msg, f"{MANIFEST}: {msg}") from None


def write_manifest(loc: Location, manifest: dict[str, Any]) -> None:
    """Write the manifest (atomically): the store is final afterwards."""
    write_file(loc, MANIFEST, _dumps(manifest))


def make_book(loc: Location) -> None:
    """Create the bookkeeping folders of a new store (on local disk: object stores have none)."""
    loc.makedirs(SHARDS)


def read_unit_record(loc: Location, unit: str) -> dict[str, Any] | None:
    """The record of unit ``unit``, or None when it is missing, unreadable or not a valid
    record of that unit (cut short, garbage): such a unit is not committed, and is rewritten."""
    try:
        rec = json.loads(loc.read(unit_record_key(unit)))
        valid = UnitRecord.model_validate(rec)
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    if valid.unit != unit or any("sample" not in b for b in valid.bad):
        return None
    return dict(rec)


def read_unit_records(loc: Location, units: Iterable[ShardUnit]) -> dict[str, dict[str, Any]]:
    """Records present for ``units``, by unit name (not checksummed)."""
    out = {}
    for u in units:
        rec = read_unit_record(loc, u.name)
        if rec is not None:
            out[u.name] = rec
    return out


def has_unit_record(loc: Location, unit: str) -> bool:
    return loc.exists(unit_record_key(unit))


def listed_units(loc: Location) -> set[str]:
    """Names of the units that have a record, from one listing (an object store answers a
    listing per 1,000 keys, where probing each unit's record would cost a request per unit)."""
    names = loc.names(SHARDS)  # none: no folder yet, or not listable
    return {n[: -len(".json")] for n in names if n.endswith(".json") and not n.startswith(".")}


def count_unit_records(loc: Location) -> int:
    """How many unit records exist (a folder listing: bounded by what is on disk)."""
    return len(listed_units(loc))


def write_unit_record(loc: Location, unit: str, record: dict[str, Any]) -> None:
    """Commit unit ``unit`` (atomically): it counts as done from now on."""
    write_file(loc, unit_record_key(unit), _dumps(record))


# --------------------------------------------------------------------------------------------
# file records and checks


@dataclass(frozen=True)
class FileRecord:
    """What a unit record or the manifest says about one file (size 0: never written).

    The crc32c alone is no content identity: a zarr shard is a chain of crc32c-suffixed
    segments, whose whole-file crc32c depends only on the segment lengths; sha256 tells a stale
    or swapped shard of the same layout apart ("" in records written before it was kept).
    """

    size: int
    crc32c: int
    sha256: str = ""

    @classmethod
    def of(cls, data: bytes) -> FileRecord:
        """The record of a file holding ``data``: its size, crc32c and sha256."""
        return cls(len(data), crc32c.crc32c(data), hashlib.sha256(data).hexdigest())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FileRecord:
        """The record from :meth:`to_dict`'s fields (``sha256`` may be absent in old records)."""
        return cls(int(d["size"]), int(d["crc32c"]), str(d.get("sha256", "")))

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields, as unit records and the manifest store it."""
        return {"size": self.size, "crc32c": self.crc32c, "sha256": self.sha256}

    def mismatch(self, crc: int, sha256: str) -> str | None:
        """Which checksum of a file disagrees with this record: "crc32c", "sha256" or None."""
        if crc != self.crc32c:
            return "crc32c"
        if self.sha256 and sha256 != self.sha256:  # same segment layout, other content
            return "sha256"
        return None


EMPTY = FileRecord(0, 0, "")


class FileHasher:
    """The :class:`FileRecord` of a file fed block by block (files too big to hold)."""

    def __init__(self) -> None:
        self.size = self.crc = 0
        self._sha = hashlib.sha256()

    def update(self, block: bytes) -> None:
        self.size += len(block)
        self.crc = crc32c.crc32c(block, self.crc)
        self._sha.update(block)

    def record(self) -> FileRecord:
        return FileRecord(self.size, self.crc, self._sha.hexdigest())


def crc32c_of(data: bytes) -> int:
    """The crc32c a file record keeps (cheap re-check of bytes already verified)."""
    return int(crc32c.crc32c(data))


def file_record(loc: Location, key: str) -> FileRecord:
    """The record of ``key`` as it is now (:data:`EMPTY` when there is no file)."""
    return FileRecord.of(loc.read(key)) if loc.is_file(key) else EMPTY


def file_matches(loc: Location, key: str, want: Mapping[str, Any]) -> bool:
    """Whether ``key`` exists with exactly the recorded size, crc32c and sha256."""
    return loc.is_file(key) and FileRecord.of(loc.read(key)) == FileRecord.from_dict(want)


def check_sizes(loc: Location, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Cheap check at open: every written file exists with its recorded size."""
    for key, want in files.items():
        if not want["size"]:
            continue  # never written: nothing to find
        found = loc.size(key)  # one stat per file: manifests can list millions
        size = -1 if found is None else found
        if size != want["size"]:
            state = "missing" if size < 0 else f"{size} bytes, expected {want['size']}"
            raise StoreDamaged(
                key, f"is {state}", f"store {loc.display}: shard {key} is {state}; regenerate it"
            )


_FIX = "regenerate the store or restore it"


def check_files(loc: Location, files: Mapping[str, Mapping[str, Any]]) -> None:
    """Full check (verify): every file as recorded, in key order; :class:`StoreDamaged` names
    the first that is not (missing, resized, corrupt, swapped, or there but recorded empty)."""
    for key, want in sorted(files.items()):
        rec = FileRecord.from_dict(want)
        if not rec.size:
            if loc.size(key):
                raise StoreDamaged(
                    key,
                    "exists but is recorded as empty",
                    f"shard {key} exists but the manifest records it as empty: the store was "
                    f"modified after it was finished; {_FIX}",
                )
            continue
        if not loc.is_file(key):
            raise StoreDamaged(key, "is missing", f"shard {key} is missing: {_FIX}")
        have = FileRecord.of(loc.read(key))
        if have.size != rec.size:
            raise StoreDamaged(
                key,
                f"is {have.size} bytes, recorded {rec.size}",
                f"shard {key} is {have.size} bytes, the manifest says {rec.size}: the file is "
                f"truncated or damaged; {_FIX}",
            )
        why = rec.mismatch(have.crc32c, have.sha256)
        if why == "crc32c":
            raise StoreDamaged(
                key,
                "fails its crc32c checksum",
                f"shard {key} fails its checksum (crc32c {have.crc32c:08x}, manifest "
                f"{rec.crc32c:08x}): the file is damaged; {_FIX}",
            )
        if why == "sha256":
            raise StoreDamaged(
                key,
                "fails its sha256",
                f"shard {key} fails its sha256 (not the file the manifest recorded): it was "
                f"replaced or swapped; {_FIX}",
            )


__all__ = [
    "ARRAYS",
    "BOOK",
    "EMPTY",
    "FIDELITY",
    "GROWTH",
    "GROWTH_STAGE",
    "MANIFEST",
    "MAX_JSON",
    "ROOT_META",
    "SAMPLE_DIGESTS",
    "SHARDS",
    "FileHasher",
    "FileRecord",
    "Location",
    "ShardUnit",
    "check_files",
    "check_sizes",
    "count_unit_records",
    "crc32c_of",
    "file_matches",
    "file_record",
    "has_unit_record",
    "is_temporary",
    "kind_of",
    "listed_units",
    "load_manifest",
    "make_book",
    "manifest_bytes",
    "read_json",
    "read_manifest",
    "read_root_attrs",
    "read_unit_record",
    "read_unit_records",
    "shard_units",
    "storage_failure",
    "unit_record_key",
    "write_file",
    "write_manifest",
    "write_unit_record",
]
