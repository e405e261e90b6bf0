"""The store's key space: the one module that knows where everything of a store lives.

A store is a Zarr v3 group (root ``zarr.json``, arrays :data:`ARRAYS`) plus a bookkeeping
folder :data:`BOOK` beside the zarr keys:

- ``_distill/shards/<unit>.json``: the record of one committed shard unit (its files' size,
  crc32c and sha256, and its unreadable samples), written once the unit's shard files are;
- ``_distill/sample_digests.u64``: the content digest of every sample's image file
  (:class:`~teacher_store.images.digests.SampleDigests`), written with the store (before the
  root ``zarr.json``) and listed in the manifest;
- ``_distill/manifest.json``: every committed file of the finished store, written last.

Work is cut into *shard units*: a block of ``shard_views`` view slots by ``shard_samples``
samples, one zarr shard file per array (see :class:`ShardUnit`).

Everything here goes through a :class:`Location`: an fsspec filesystem and the store's root
path on it (local disk is ``fsspec.filesystem("file")``), so another storage (s3fs) needs no
change in the callers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from teacher_store.errors import StoreAccessError, StoreDamaged, StoreNotFound, causes
from teacher_store.store import _faults
from teacher_store.store.schema import Manifest, StoreAttrs, UnitRecord, validation_message

ROOT_META = "zarr.json"  # the root group's metadata: attrs, consolidated metadata once final
ARRAYS = ("ids", "values", "valid")
BOOK = "_distill"  # bookkeeping folder inside the store, beside the zarr keys
SHARDS = f"{BOOK}/shards"
MANIFEST = f"{BOOK}/manifest.json"
SAMPLE_DIGESTS = f"{BOOK}/sample_digests.u64"  # N little-endian uint64, sample order
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
# where a store is


# Object stores whose bucket :meth:`Location.probe` checks (HEAD bucket) before any work.
_BUCKET_PROTOCOLS = {"s3", "s3a", "gs", "gcs"}
_CREDENTIALS = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials"


@dataclass(frozen=True)
class Location:
    """A store's root on a filesystem; ``name`` is how messages call it (default: the root);
    ``url`` is the fsspec URL of a non-local root (zarr opens its own client from it)."""

    fs: fsspec.AbstractFileSystem
    root: str
    name: str = ""
    url: str = ""

    @classmethod
    def local(cls, path: str | os.PathLike[str]) -> Location:
        """A store folder on local disk."""
        return cls(fsspec.filesystem("file"), str(Path(path)))

    @classmethod
    def at(cls, address: str | os.PathLike[str]) -> Location:
        """The location of a store address: a folder, or an fsspec URL such as
        ``s3://bucket/prefix`` (credentials and endpoint from the standard AWS variables and
        config, never from the address or the store). A service URL or an unsupported scheme
        is a :class:`~teacher_store.address.StoreAddressError`; nothing is read here."""
        from teacher_store.address import StoreAddressError, resolve_address

        kind, url = resolve_address(address)
        if kind == "local":
            return cls.local(url)
        if kind == "service":
            raise StoreAddressError(
                f"store address {url} is a distill service, which only serves stores; pass "
                "the store's folder or object-store URL (s3://BUCKET/PREFIX) instead"
            )
        protocol = url.split("://", 1)[0]
        # No listing cache: other ranks and processes write the same prefix.
        opts = {"use_listings_cache": False} if protocol in _BUCKET_PROTOCOLS else {}
        fs, root = fsspec.core.url_to_fs(url, **opts)
        if isinstance(fs, LocalFileSystem):
            return cls.local(root)
        url = url.rstrip("/")
        return cls(fs, root.rstrip("/"), url, url)

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

    def zarr_store(self, read_only: bool = True) -> Any:
        """What ``zarr.open_group`` takes for this root: a folder path or an FsspecStore."""
        if self.is_local:
            return self.root
        from zarr.storage import FsspecStore

        return FsspecStore.from_url(self.url, read_only=read_only)

    def probe(self) -> None:
        """A one-line typed error now, rather than a traceback later, when the object store is
        unreachable, refuses the credentials or has no such bucket (local roots: nothing)."""
        if not set(_protocols(self.fs)) & _BUCKET_PROTOCOLS:
            return
        bucket = self.root.split("/", 1)[0]
        endpoint = _endpoint(self.fs)
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise StoreNotFound(
                f"store {self.display}: bucket {bucket!r} does not exist at {endpoint}; create "
                "it or fix the address (and AWS_ENDPOINT_URL)"
            ) from None
        except PermissionError as e:
            raise StoreAccessError(
                f"store {self.display}: {endpoint} refused the credentials ({_first_line(e)}); "
                f"check {_CREDENTIALS}"
            ) from None
        except Exception as e:  # connection refused, DNS, TLS: botocore's own exception types
            raise StoreAccessError(
                f"store {self.display}: cannot reach {endpoint} ({_first_line(e)}); check "
                "AWS_ENDPOINT_URL and the network"
            ) from None

    def is_file(self, key: str) -> bool:
        """Whether ``key`` exists as a file under the root."""
        return bool(self.fs.isfile(self.path(key)))

    def read(self, key: str) -> bytes:
        """The bytes of ``key`` (FileNotFoundError when it does not exist)."""
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` so that readers see the old or the new file, whole.

        On local disk the bytes go to a temporary file (:func:`is_temporary`) renamed over
        ``key``; a crash can leave that file behind (:meth:`remove_temporaries`)."""
        kind = _kind(key)
        path = self.path(key)
        if not self.is_local:
            _faults.torn_write(kind, lambda part: self.fs.pipe_file(path, part), data)
            self.fs.pipe_file(path, data)  # an object store's PUT is atomic by itself
            _faults.crash_point(f"{kind}-written")
            return
        parent, base = path.rsplit("/", 1)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.{base}.tmp{os.getpid()}"
        _faults.torn_write(kind, lambda part: Path(tmp).write_bytes(part), data)
        try:
            with self.fs.open(tmp, "wb") as f:
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
        _faults.crash_point(f"{kind}-written")

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

    def keys(self) -> list[str]:
        """The keys of every file stored under the root (none when there is no root)."""
        # find() names a local file by its absolute path, an object by bucket/key.
        root = (os.path.abspath(self.root) if self.is_local else self.root).rstrip("/")
        try:
            found = self.fs.find(root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [str(p)[len(root) + 1 :] for p in found]

    def remove(self, key: str) -> None:
        """Delete ``key`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(key))

    def is_empty(self) -> bool:
        """Whether nothing is stored under the root (no folder, an empty one, no object)."""
        try:
            return not self.fs.ls(self.root, detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return True

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

    def sizes(self) -> tuple[int, int]:
        """(bytes, files) of everything stored under the root."""
        try:
            found = self.fs.find(self.root, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return 0, 0
        files = [v for v in found.values() if v.get("type") == "file"]
        return sum(int(v.get("size") or 0) for v in files), len(files)


_TEMPORARY = re.compile(r"\.[^/]+\.tmp[0-9]+")


def is_temporary(name: str) -> bool:
    """Whether a file name is that of :meth:`Location.write_atomic`'s temporary files."""
    return _TEMPORARY.fullmatch(name) is not None


def _kind(key: str) -> str:
    """What a key holds, as the crash points (:mod:`teacher_store.store._faults`) name it."""
    if key == MANIFEST:
        return "manifest"
    if key == SAMPLE_DIGESTS:
        return "digests"
    if key.startswith(f"{SHARDS}/"):
        return "record"
    if key == ROOT_META:
        return "root-meta"
    return "meta" if key.endswith(f"/{ROOT_META}") else "shard"


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def _endpoint(fs: fsspec.AbstractFileSystem) -> str:
    """Where an object-store client sends its requests, for messages."""
    kw = getattr(fs, "client_kwargs", None) or {}
    url = kw.get("endpoint_url") or getattr(fs, "endpoint_url", None)
    return str(url or os.environ.get("AWS_ENDPOINT_URL") or "the default endpoint")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


# Error codes of an object store that mean "these credentials may not do this".
_REFUSED = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
}


def storage_failure(loc: Location, e: BaseException) -> tuple[str, str] | None:
    """(what went wrong, what to do), each one line, when ``e`` is an object store refusing
    or failing a request on ``loc`` (credentials revoked, bucket deleted, a 5xx, the endpoint
    gone); None for anything else, and always for a folder."""
    if not set(_protocols(loc.fs)) & _BUCKET_PROTOCOLS:
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    endpoint, bucket = _endpoint(loc.fs), loc.root.split("/", 1)[0]
    for seen in causes(e):
        if isinstance(seen, ValueError):  # a deliberate message (raised while handling one)
            return None
        if isinstance(seen, BotoCoreError):  # no answer: connection refused, DNS, TLS, timeout
            why = f"cannot reach {endpoint} ({_first_line(seen)})"
            return why, "check AWS_ENDPOINT_URL and the network"
        if not isinstance(seen, ClientError):
            continue
        err, meta = seen.response.get("Error", {}), seen.response.get("ResponseMetadata", {})
        code, status = str(err.get("Code") or ""), int(meta.get("HTTPStatusCode") or 0)
        said = f"{status or code} {err.get('Message') or _first_line(seen)}".strip()
        if code == "NoSuchBucket":
            return f"bucket {bucket!r} no longer exists at {endpoint}", "create it again"
        if code in _REFUSED or status == 403:
            why = f"{endpoint} refused the request ({said})"
            return why, f"check {_CREDENTIALS} and that they may write to bucket {bucket!r}"
        if status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            return f"{endpoint} failed the request ({said})", "wait for the object store"
        return f"{endpoint} answered {said}", f"check bucket {bucket!r} and its settings"
    return None


# --------------------------------------------------------------------------------------------
# JSON documents: root attrs, manifest, unit records


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def read_json(loc: Location, key: str, max_bytes: int = MAX_JSON) -> tuple[bytes, Any]:
    """The bytes and parsed JSON of a regular file, or :class:`StoreDamaged` naming ``key``."""
    try:
        info = loc.fs.info(loc.path(key))
        if info.get("type") != "file":  # a FIFO or device would block or never end
            raise StoreDamaged(key, "is not a regular file")
        size = int(info.get("size") or 0)
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
    loc.write_atomic(MANIFEST, _dumps(manifest))


def make_book(loc: Location) -> None:
    """Create the bookkeeping folders of a new store (object stores have no folders: and
    s3fs's makedirs would create a missing bucket, which must be an error instead)."""
    if loc.is_local:
        loc.fs.makedirs(loc.path(SHARDS), exist_ok=True)


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
    return bool(loc.fs.exists(loc.path(unit_record_key(unit))))


def listed_units(loc: Location) -> set[str]:
    """Names of the units that have a record, from one listing (an object store answers a
    listing per 1,000 keys, where probing each unit's record would cost a request per unit)."""
    try:
        names = loc.fs.ls(loc.path(SHARDS), detail=False)
    except OSError:  # no folder yet (FileNotFoundError), or not listable
        return set()
    out = set()
    for p in names:
        base = str(p).rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".json") and not base.startswith("."):
            out.add(base[: -len(".json")])
    return out


def count_unit_records(loc: Location) -> int:
    """How many unit records exist (a folder listing: bounded by what is on disk)."""
    return len(listed_units(loc))


def write_unit_record(loc: Location, unit: str, record: dict[str, Any]) -> None:
    """Commit unit ``unit`` (atomically): it counts as done from now on."""
    loc.write_atomic(unit_record_key(unit), _dumps(record))


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
        try:
            info = loc.fs.info(loc.path(key))  # one stat per file: manifests can list millions
            size = int(info["size"]) if info.get("type") == "file" else -1
        except FileNotFoundError:
            size = -1
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
            if loc.is_file(key) and loc.fs.size(loc.path(key)):
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
    "write_manifest",
    "write_unit_record",
]
