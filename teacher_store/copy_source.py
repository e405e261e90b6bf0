"""The store `distill copy` reads: its files, each checked against the source's manifest.

A source is a finished store at any address: a folder, an object-store URL (``s3://...``) or a
distill service URL (``http(s)://HOST/v1/stores/NAME``, whose zarr key space serves the root
and arrays' ``zarr.json``, the manifest and every shard file, each answer tagged with the
store identity). :func:`open_source` reads the manifest once; its sha256 is the source's
identity (:func:`~teacher_store.store.blockfmt.store_identity`). Every shard file read is
then checked against the size, crc32c and sha256 that manifest records, so a copy only ever
holds that store's bytes. A service answer tagged with another identity, a file that fails its
checksums because the store was replaced, or a changed manifest at the end of the copy is
:class:`SourceChangedError` (one line), never a copy that mixes two stores; a file that fails
its checksums while the identity still holds is :class:`~teacher_store.errors.StoreDamaged`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from teacher_store.address import redact_url, resolve_address
from teacher_store.errors import StoreChangedError, StoreDamaged, StoreError, StoreIncomplete
from teacher_store.retry import RetryPolicy, StoreClientError
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.blockfmt import IDENTITY_HEADER, store_identity
from teacher_store.store.integrity import CheckedStore, check_store, meta_keys
from teacher_store.store.layout import MANIFEST, FileRecord
from teacher_store.store.schema import Manifest, StoreAttrs


class SourceChangedError(StoreChangedError):
    """The source of a copy was regenerated or replaced while it was being copied."""

    def __init__(self, url: str, old: str, new: str) -> None:
        StoreError.__init__(
            self,
            f"source store {url} changed during the copy (identity {old} → "
            f"{new or 'no manifest'}): it was regenerated or replaced; re-run the copy with "
            "--overwrite to copy the store as it is now",
        )
        self.url, self.old, self.new = url, old, new


class _Files(Protocol):
    """Raw access to a store's keys."""

    def read(self, key: str) -> bytes: ...

    def identity_now(self) -> str: ...


class _LocationFiles:
    """A folder or an object store; the manifest re-hashed only when its signature changes."""

    def __init__(self, loc: Location) -> None:
        self.loc = loc
        self._sig: Any = None
        self._identity = ""

    def read(self, key: str) -> bytes:
        return self.loc.read(key)

    def _signature(self) -> Any:
        sig = self.loc.signature(MANIFEST)
        return None if sig.weak else sig  # None: re-hash every time (size alone tells nothing)

    def identity_now(self) -> str:
        try:
            sig = self._signature()
        except FileNotFoundError:
            return ""
        if sig is None or sig != self._sig or not self._identity:
            try:
                self._identity = store_identity(self.loc.read(MANIFEST))
            except FileNotFoundError:
                return ""
            self._sig = sig
        return self._identity


class _ServiceFiles:
    """A store of a distill service, through its zarr key space (``{base}/zarr/{key}``)."""

    def __init__(self, base: str, token: str | None, retry_budget_s: float) -> None:
        from teacher_store.reader.backends import ServiceBackend

        self.base = base.rstrip("/")
        self.backend = ServiceBackend(self.base, token, RetryPolicy(retry_budget_s), 60.0)
        self.opened = self.backend.identity  # what every answer must carry

    def read(self, key: str) -> bytes:
        url = f"{self.base}/zarr/{key}"
        try:
            reply = self.backend.get(url)
        except StoreClientError as e:
            if e.status in (404, 409):  # a key gone or refused: the store replaced?
                now = self.identity_now()
                if now != self.opened:
                    raise SourceChangedError(self.base, self.opened, now) from e
                if e.status == 404:
                    raise FileNotFoundError(key) from None
            raise
        got = reply.headers.get(IDENTITY_HEADER, "")
        if got != self.opened:
            raise SourceChangedError(self.base, self.opened, got)
        return bytes(reply.body)

    def identity_now(self) -> str:
        try:
            return str(self.backend.get(self.base).json().get("identity") or "")
        except StoreClientError as e:
            if e.status == 404:  # the store is gone
                return ""
            raise

    def close(self) -> None:
        self.backend.close()


@dataclass
class CopySource:
    """A finished store opened for copying: attrs, identity, manifest, array metadata."""

    address: str  # how messages name it (credentials redacted)
    kind: str  # "local", "fsspec" or "service"
    files: _Files
    attrs: StoreAttrs
    identity: str
    manifest: Manifest
    stats: dict[str, Any]  # the manifest's generation stats (encoding KL), {} if none
    meta: dict[str, bytes] = field(default_factory=dict)  # root and arrays' zarr.json

    def record(self, key: str) -> FileRecord:
        """The manifest's record of ``key`` (what :meth:`shard` checks the bytes against)."""
        e = self.manifest.files[key]
        return FileRecord(e.size, e.crc32c, e.sha256)

    def shard(self, key: str) -> bytes | None:
        """The bytes of shard file ``key`` as the manifest records them (None: recorded empty,
        i.e. all fill values); :class:`SourceChangedError` or
        :class:`~teacher_store.errors.StoreDamaged` otherwise."""
        entry = self.manifest.files.get(key)
        if entry is None:
            raise StoreDamaged(key, "is not in the manifest", self._damaged(key, "is not listed"))
        if not entry.size:
            return None
        try:
            data = self.files.read(key)
        except FileNotFoundError:
            self.check_unchanged()
            raise StoreDamaged(key, "is missing", self._damaged(key, "is missing")) from None
        want = FileRecord(entry.size, entry.crc32c, entry.sha256)
        have = FileRecord.of(data)
        if have != want:
            self.check_unchanged()  # a replaced store explains any mismatch
            why = "size" if have.size != want.size else want.mismatch(have.crc32c, have.sha256)
            raise StoreDamaged(key, f"fails its {why}", self._damaged(key, f"fails its {why}"))
        return data

    def _damaged(self, key: str, what: str) -> str:
        return (
            f"source store {self.address}: shard {key} {what} against its manifest; restore "
            "or regenerate the source, then re-run the copy"
        )

    def check_unchanged(self) -> None:
        """:class:`SourceChangedError` unless the source still has the identity seen at open."""
        now = self.files.identity_now()
        if now != self.identity:
            raise SourceChangedError(self.address, self.identity, now)

    def close(self) -> None:
        """Close the source's connections (the service's sessions)."""
        if isinstance(self.files, _ServiceFiles):
            self.files.close()


def _checked(meta: dict[str, bytes], raw: bytes, where: str) -> CheckedStore:
    """The one store check every reader runs (:func:`~teacher_store.store.integrity.
    check_store`: attrs schema, arrays against attrs, metadata digests in the manifest) on the
    very bytes the copy uses, whichever kind of address they came from (put in memory)."""
    import uuid

    loc = Location.at(f"memory://distill-copy/{uuid.uuid4().hex}")
    try:
        for key, data in {**meta, MANIFEST: raw}.items():
            loc.write_atomic(key, data)  # kind "file": no crash point of the store's protocol
        return check_store(Location(loc.fs, loc.root, where, loc.url), where)
    finally:
        loc.clear()


def open_source(
    address: str | os.PathLike[str], token: str | None = None, retry_budget_s: float = 600.0
) -> CopySource:
    """The finished store at ``address`` (folder, fsspec URL or service URL), ready to copy.

    One-line typed errors for an unfinished, missing, damaged or unreadable store."""
    kind, url = resolve_address(address)
    shown = redact_url(url)
    files: _Files
    if kind == "service":
        files = _ServiceFiles(url, token, retry_budget_s)
    else:
        loc = Location.at(url)
        loc.probe()
        if layout.read_root_attrs(loc) is None:
            raise StoreError(f"{loc.display} is not a store (no zarr.json); check the source")
        files, shown = _LocationFiles(loc), loc.display
    try:
        raw = files.read(MANIFEST)
    except FileNotFoundError:
        raise StoreIncomplete(
            f"source store {shown} is unfinished (no {MANIFEST}); finish it with the same "
            "`distill generate` before copying it"
        ) from None
    identity = store_identity(raw)
    if isinstance(files, _ServiceFiles) and identity != files.opened:
        raise SourceChangedError(shown, files.opened, identity)
    meta = {key: files.read(key) for key in meta_keys()}
    checked = _checked(meta, raw, shown)
    assert checked.manifest is not None  # a manifest was read
    stats = dict(json.loads(raw).get("stats") or {})
    return CopySource(shown, kind, files, checked.attrs, identity, checked.manifest, stats, meta)


__all__ = ["CopySource", "SourceChangedError", "open_source"]
