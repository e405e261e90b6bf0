"""What a reader checks before it believes a store: one function for every command and the service.

:func:`check_store` reads a store's root ``zarr.json`` (and its manifest once finished) and
refuses the store with a one-line :class:`~teacher_store.errors.StoreDamaged` naming the file
when any of these fails, in this order (the most specific explanation first):

1. the attrs: kind and versions, then the whole attribute tree with one schema
   (:class:`~teacher_store.store.schema.StoreAttrs`: nested objects, bounds on every size that
   sets an allocation, attrs that agree with each other);
2. the manifest (once finished) is valid, and the arrays' metadata (the root's consolidated
   metadata once finished, else each array's ``zarr.json``) has the shapes, data types and
   chunking the attrs make: ``topk`` is the K dimension, ``num_samples`` N, ``views`` R,
   ``value_encoding`` the values' dtype, ``num_classes`` the ids' dtype;
3. the manifest records the number of shard units the attrs make;
4. the metadata files (root and every array's ``zarr.json``) are the bytes whose digests the
   manifest recorded when the store was finished: an attribute edited afterwards
   (``store_seed``, ``class_order``, ``value_encoding``, ...) is refused, never believed. The
   store identity is a digest of the manifest, so it covers these files too.

Stores finished before the manifest recorded those digests (no ``meta`` in it) are accepted
with a one-line note: their other checks still apply, but an edit that keeps the attrs
consistent cannot be detected. Re-running the same ``distill generate`` on such a store
finalizes it again and records them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from teacher_store.errors import StoreDamaged, StoreNotFound
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.layout import ARRAYS, MANIFEST, ROOT_META, FileRecord
from teacher_store.store.schema import (
    Manifest,
    NodeMeta,
    RootMeta,
    StoreAttrs,
    check_readable,
    validation_message,
)

log = logging.getLogger("distill.store")
FIX = "restore the file or regenerate the store (re-run the same `distill generate`)"
_NOTED: set[str] = set()  # stores whose "no metadata digests" note was logged (once each)
IDENTITY_BYTES = 8  # as carried in every block's header (teacher_store.store.blockfmt)


def store_identity(manifest_bytes: bytes | bytearray | memoryview) -> str:
    """The identity of a store: 16 hex digits of the sha256 of its ``manifest.json`` bytes.

    The manifest is written last and records every file's size, crc32c and sha256, the
    metadata files' too, so it names the store's bytes: a regenerated or replaced store, or
    one whose attrs differ, has another identity.
    """
    return hashlib.sha256(manifest_bytes).hexdigest()[: 2 * IDENTITY_BYTES]


def meta_keys() -> tuple[str, ...]:
    """The metadata files a finished store's manifest records digests of."""
    return (ROOT_META, *(f"{name}/{ROOT_META}" for name in ARRAYS))


def meta_records(loc: Location, root: bytes) -> dict[str, dict[str, Any]]:
    """The manifest's ``meta`` entry for a store being finished: the record (size, crc32c,
    sha256) of the root ``zarr.json`` bytes ``root`` and of every array's ``zarr.json``."""
    out = {ROOT_META: FileRecord.of(root).to_dict()}
    for key in meta_keys()[1:]:
        out[key] = FileRecord.of(loc.read(key)).to_dict()
    return out


@dataclass(frozen=True)
class CheckedStore:
    """A store whose metadata passed :func:`check_store`."""

    attrs: StoreAttrs
    root: RootMeta
    arrays: dict[str, dict[str, Any]]  # each array's zarr.json, as checked
    manifest: Manifest | None  # None while the store is unfinished
    manifest_bytes: bytes  # b"" while unfinished
    meta_recorded: bool  # the manifest has digests of the metadata files (False: older store)

    @property
    def identity(self) -> str:
        """The store identity (16 hex digits of the manifest's sha256), "" while unfinished."""
        return store_identity(self.manifest_bytes) if self.manifest is not None else ""


def legacy_note(where: str) -> str:
    """The one-line note for a store finished before its manifest recorded metadata digests."""
    return (
        f"note: store {where} was finished before distill recorded its metadata digests, so an "
        "edit of its zarr.json attributes cannot be detected; re-run the same `distill "
        "generate` to record them"
    )


def _damaged(where: str, key: str, reason: str) -> StoreDamaged:
    """StoreDamaged naming ``key``; a command's message (``where`` given) also names the
    store and the fix, the service's (``where`` "") is ``key reason`` and it adds its own."""
    if not where:
        return StoreDamaged(key, reason, f"{key} {reason}")
    return StoreDamaged(key, reason, f"store {where}: {key} {reason}; {FIX}")


def _read_root(loc: Location, where: str) -> tuple[bytes, RootMeta]:
    if not loc.is_file(ROOT_META):
        raise StoreNotFound(f"{loc.display} is not a store (no zarr.json); check the path")
    raw, doc = layout.read_json(loc, ROOT_META)
    try:
        return raw, RootMeta.model_validate(doc)
    except ValidationError as e:
        raise _damaged(where, ROOT_META, f"is malformed: {validation_message(e)}") from None


def _expected(attrs: StoreAttrs) -> dict[str, tuple[list[int], str, list[int], list[int]]]:
    """Per array: (shape, data type, shard shape, inner chunk shape) the attrs make."""
    r, n, k = attrs.views, attrs.num_samples, attrs.topk
    shard, chunk = (
        [attrs.shard_views, attrs.shard_samples],
        [attrs.chunk_views, attrs.chunk_samples],
    )
    return {
        "ids": ([r, n, k], attrs.ids_dtype.name, [*shard, k], [*chunk, k]),
        "values": ([r, n, k], attrs.values_dtype.name, [*shard, k], [*chunk, k]),
        "valid": ([r, n], "uint8", shard, chunk),
    }


# What each dimension of an array is called in the attrs, for messages.
_DIMS = ("views", "num_samples", "topk")


def _inner_chunks(meta: Mapping[str, Any]) -> Any:
    codecs = meta.get("codecs") or [{}]
    first = codecs[0] if isinstance(codecs, list) and isinstance(codecs[0], dict) else {}
    if first.get("name") != "sharding_indexed":
        return None
    return (first.get("configuration") or {}).get("chunk_shape")


def _check_array(attrs: StoreAttrs, name: str, meta: Mapping[str, Any]) -> str | None:
    """Why array ``name``'s metadata contradicts the attrs (None when it agrees)."""
    shape, dtype, shard, chunk = _expected(attrs)[name]
    have = meta.get("shape")
    if have != shape:
        if isinstance(have, list) and len(have) == len(shape):
            dim = next(i for i, (a, b) in enumerate(zip(have, shape, strict=True)) if a != b)
            what = f"{_DIMS[dim]} {shape[dim]}"
        else:
            what = f"shape {shape}"
        return f"says {what}, but array {name!r} has shape {have}"
    if meta.get("data_type") != dtype:
        field = "num_classes" if name == "ids" else "value_encoding"
        said = getattr(attrs, field) if name != "valid" else "flags"
        return (
            f"says {field if name != 'valid' else 'valid'} {said} ({dtype} {name}), but array "
            f"{name!r} holds {meta.get('data_type')}"
        )
    grid = (meta.get("chunk_grid") or {}).get("configuration", {}).get("chunk_shape")
    inner = _inner_chunks(meta)
    if grid != shard or inner != chunk:
        return (
            f"makes shards {shard} of chunks {chunk}, but array {name!r} is cut into {grid} "
            f"of {inner}"
        )
    return None


def _arrays(loc: Location, root: RootMeta, finished: bool, where: str) -> dict[str, dict[str, Any]]:
    """Each array's metadata: from the root's consolidated metadata (what zarr reads once a
    store is finished), else from the array's own zarr.json."""
    if root.consolidated_metadata is not None:
        nodes = root.consolidated_metadata.metadata
        return {name: nodes[name].model_dump() for name in ARRAYS if name in nodes}
    if finished:
        raise _damaged(where, ROOT_META, "has no consolidated metadata; re-run finalize")
    out = {}
    for name in ARRAYS:
        key = f"{name}/{ROOT_META}"
        _, doc = layout.read_json(loc, key)
        try:
            out[name] = NodeMeta.model_validate(doc).model_dump()
        except ValidationError as e:
            raise _damaged(where, key, f"is malformed: {validation_message(e)}") from None
    return out


def check_arrays(attrs: StoreAttrs, arrays: Mapping[str, Mapping[str, Any]], where: str) -> None:
    """Refuse attrs that contradict the arrays' metadata (naming the root zarr.json, where
    the attrs are)."""
    for name in ARRAYS:
        meta = arrays.get(name)
        if meta is None or meta.get("node_type") != "array":
            raise _damaged(where, ROOT_META, f"has no array {name!r} in its metadata")
        why = _check_array(attrs, name, meta)
        if why is not None:
            raise _damaged(where, ROOT_META, f"{why}: the attrs contradict the arrays")


def _load_manifest(loc: Location, where: str) -> tuple[bytes, Manifest] | None:
    if not loc.is_file(MANIFEST):
        return None
    raw, doc = layout.read_json(loc, MANIFEST)
    try:
        return raw, Manifest.model_validate(doc)
    except ValidationError as e:
        raise _damaged(where, MANIFEST, f"is malformed: {validation_message(e)}") from None


def check_meta(loc: Location, manifest: Manifest, root: bytes, where: str) -> bool:
    """Every metadata file is the one the manifest recorded (``root``: the root zarr.json's
    bytes as read); False for a manifest written before it recorded them (nothing checked)."""
    if not manifest.meta:
        return False
    for key in meta_keys():
        want = manifest.meta.get(key)
        if want is None:
            raise _damaged(where, MANIFEST, f"records no digest of {key}")
        data = root if key == ROOT_META else loc.read(key)
        if FileRecord.of(data) != FileRecord(want.size, want.crc32c, want.sha256):
            raise _damaged(
                where,
                key,
                "was changed after the store was finished (it is not the file whose sha256 "
                "the manifest recorded)",
            )
    return True


def check_store(
    loc: Location,
    where: str | None = None,
    root: tuple[bytes, Any] | None = None,
    note: bool = True,
) -> CheckedStore:
    """Read and check a store's metadata (see the module doc); one-line typed errors.

    ``where`` names the store in messages (default: its address; "" for the service, which
    words its own); ``root``: the root zarr.json's bytes and parsed JSON when already read;
    ``note``: log :func:`legacy_note` (once per store and process) for an older store.
    """
    where = loc.display if where is None else where
    if root is None:
        raw, meta = _read_root(loc, where)
    else:
        raw = root[0]
        try:
            meta = RootMeta.model_validate(root[1])
        except ValidationError as e:
            raise _damaged(where, ROOT_META, f"is malformed: {validation_message(e)}") from None
    try:
        attrs = check_readable(
            dict(meta.attributes), f"{where}/{ROOT_META}" if where else ROOT_META
        )
    except StoreDamaged as e:  # invalid attrs: the message names the file and the fix
        raise _damaged(where, ROOT_META, e.reason) from None
    found = _load_manifest(loc, where)
    arrays = _arrays(loc, meta, found is not None, where)
    check_arrays(attrs, arrays, where)
    if found is not None and found[1].units != attrs.unit_count:
        raise _damaged(
            where,
            MANIFEST,
            f"records {found[1].units} shard units but zarr.json's attrs make {attrs.unit_count}",
        )
    recorded = found is not None and check_meta(loc, found[1], raw, where)
    if note and found is not None and not recorded and where and where not in _NOTED:
        _NOTED.add(where)
        log.warning("%s", legacy_note(where))
    return CheckedStore(
        attrs,
        meta,
        arrays,
        found[1] if found else None,
        found[0] if found else b"",
        recorded,
    )


__all__ = [
    "FIX",
    "IDENTITY_BYTES",
    "CheckedStore",
    "check_arrays",
    "check_meta",
    "check_store",
    "legacy_note",
    "meta_keys",
    "meta_records",
    "store_identity",
]
