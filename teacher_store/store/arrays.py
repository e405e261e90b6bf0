"""Store writer (commit protocol); the reader is :mod:`teacher_store.store.store_reader`.

Work is cut into shard units (:mod:`teacher_store.store.layout`). A unit is one zarr shard file per
array, written whole by exactly one writer (zarr loses data when two writers touch one shard).
Once its files are written, the writer records them (size, crc32c, sha256) in the unit's
record with an atomic rename; a unit counts as done only when that record exists and matches
the files. The store is final when the manifest and the consolidated metadata are written, last.
Where each of these lives is :mod:`teacher_store.store.layout`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.storage import MemoryStore

from teacher_store.errors import StoreConflict, StoreDamaged, StoreIncomplete
from teacher_store.images.digests import SampleDigests
from teacher_store.reader.address import StoreAddressError
from teacher_store.storage.location import Location, is_temporary
from teacher_store.store import layout
from teacher_store.store.content import (
    digests_file_record,
    load_sample_digests,
    write_sample_digests,
)
from teacher_store.store.id_order import rank_to_stored
from teacher_store.store.integrity import meta_records
from teacher_store.store.layout import (
    ARRAYS,
    BOOK,
    ROOT_META,
    SAMPLE_DIGESTS,
    ShardUnit,
    shard_units,
)
from teacher_store.store.schema import StoreAttrs
from teacher_store.store.store_reader import StoreReader, TargetBlock

# ARRAYS, BOOK, ShardUnit and shard_units live in teacher_store.store.layout, StoreReader and
# TargetBlock in teacher_store.store.store_reader; importable from here too.
__all__ = [
    "ARRAYS",
    "BOOK",
    "LocalStore",
    "ShardUnit",
    "StoreReader",
    "TargetBlock",
    "attrs_differences",
    "commit_unit",
    "committed_units",
    "create_store",
    "finalize",
    "memory_group",
    "output_location",
    "read_stored_unit",
    "recorded_config",
    "shard_units",
    "write_metadata",
    "write_stored_unit",
    "write_unit",
]


_Shuffle = Literal["noshuffle", "shuffle", "bitshuffle"]


def _compressors(typesize: int, version: int = 1, name: str = "") -> list[Any]:
    shuffle: _Shuffle
    if version == 1:
        # Bit-shuffle for bytes (probabilities), byte-shuffle for wider ids and float16 values.
        shuffle = "bitshuffle" if typesize == 1 else "shuffle"
        return [BloscCodec(cname="zstd", clevel=7, shuffle=shuffle), Crc32cCodec()]
    # Version 2, measured on Lite0 outputs: uint8 values in id order compress best unshuffled
    # (6.4 vs 6.9 B/view at K=10), gap-coded ids byte-shuffled; level 9 saves another 2-3%.
    shuffle = "noshuffle" if name == "values" and typesize == 1 else "shuffle"
    shuffle = "bitshuffle" if name == "valid" else shuffle
    return [BloscCodec(cname="zstd", clevel=9, shuffle=shuffle), Crc32cCodec()]


def _filters(attrs: StoreAttrs, ndim: int) -> list[Any]:
    """Version 2: chunks stored sample-major ([slot, sample, rank] -> [sample, slot, rank])."""
    if attrs.schema_version == 1 or attrs.chunk_views == 1:
        return []
    return [TransposeCodec(order=(1, 0, 2)[:ndim])]


def recorded_config(address: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The generation config recorded in an existing store's attrs, or None."""
    loc = Location.at(address)
    loc.probe()
    attrs = layout.read_root_attrs(loc)
    return dict(attrs.get("config") or {}) if attrs else None


def attrs_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the attrs (and config options) that differ; library versions do not count."""
    out = []
    for k in sorted(set(old) | set(new)):
        if k == "libraries" or old.get(k) == new.get(k):
            continue
        if k == "config" and isinstance(old.get(k), dict):
            oc, nc = old[k], new.get(k) or {}
            out += [f"config.{c}" for c in sorted(set(oc) | set(nc)) if oc.get(c) != nc.get(c)]
        else:
            out.append(k)
    return out


def store_differences(address: str | os.PathLike[str], attrs: StoreAttrs) -> list[str]:
    """What differs between the store at ``address`` and ``attrs`` (``["not a store"]`` when
    there is none); empty when ``attrs`` describe that store. Library versions do not count."""
    old = layout.read_root_attrs(Location.at(address))
    return attrs_differences(old, attrs.to_dict()) if old is not None else ["not a store"]


def output_location(address: str | os.PathLike[str]) -> Location:
    """Where a store will be written; one-line errors before any work for an address that
    cannot be (a service URL, a whole bucket, a missing bucket, refused credentials)."""
    loc = Location.at(address)
    if not loc.is_local and "/" not in loc.root.strip("/"):
        raise StoreAddressError(
            f"output {loc.display} is a whole bucket; write the store under a prefix, "
            f"{loc.display.rstrip('/')}/NAME (--overwrite would empty the bucket)"
        )
    loc.probe()
    return loc


def create_store(
    address: str | os.PathLike[str],
    attrs: StoreAttrs,
    overwrite: bool = False,
    digests: SampleDigests | None = None,
) -> bool:
    """Create an empty store at ``address`` (a folder or an object-store URL), or accept an
    existing one with the same config.

    Returns True when an existing store is being resumed. A different store (other config, other
    dataset, other teacher weights) or a non-empty non-store folder is refused unless
    ``overwrite``. ``digests``: the samples' content digests the attrs record (None: a store
    that records none), written with the store (and again on resume if they are not there).
    """
    loc = output_location(address)
    where = loc.display
    if loc.is_local and loc.fs.exists(loc.root) and not loc.fs.isdir(loc.root):
        raise StoreConflict(f"output {where} exists and is not a directory")
    existed = not loc.is_empty()
    if existed and _half_created(loc):
        loc.clear()  # a creation killed before its root zarr.json: nothing of it is kept
        existed = False
    if existed:
        old = layout.read_root_attrs(loc)
        diff = attrs_differences(old, attrs.to_dict()) if old is not None else ["not a store"]
        if not diff:
            # No writer is at work yet (ranks wait for this): temporary files are a killed
            # run's, and would stay in the store forever.
            loc.remove_temporaries()
            have = layout.file_record(loc, SAMPLE_DIGESTS)
            if digests is not None and have != digests_file_record(digests):
                write_sample_digests(loc, digests)  # deleted or damaged since: the attrs' own
            return True
        if not overwrite:
            what = f"a different store ({', '.join(diff)} differ)" if old else "not a store"
            raise StoreConflict(
                f"output {where} is {what}; choose another --out or pass --overwrite"
            )
        loc.clear()
    try:
        _create_arrays(loc, attrs, digests)
    except OSError:
        # A half-created store (disk full) has no root zarr.json and would be refused as "not a
        # store" on the re-run; remove what was written so the same command starts afresh.
        with contextlib.suppress(OSError):
            loc.clear()
        raise
    return False


def _half_created(loc: Location) -> bool:
    """Whether ``loc`` holds only what :func:`_create_arrays` writes before the root
    ``zarr.json`` (which it writes last): arrays' metadata, the samples' content digests,
    temporary files, empty folders."""
    if layout.read_root_attrs(loc) is not None:
        return False
    metas = {f"{name}/{ROOT_META}" for name in ARRAYS} | {SAMPLE_DIGESTS}
    found = loc.keys()
    ours = [k in metas or is_temporary(k.rsplit("/", 1)[-1]) for k in found]
    return bool(found) and all(ours)


def _define_arrays(group: zarr.Group, attrs: StoreAttrs) -> None:
    r, n, k, v = attrs.views, attrs.num_samples, attrs.topk, attrs.schema_version
    chunk = (attrs.chunk_views, attrs.chunk_samples)
    shard = (attrs.shard_views, attrs.shard_samples)
    for name, dtype in (("ids", attrs.ids_dtype), ("values", attrs.values_dtype)):
        group.create_array(
            name,
            shape=(r, n, k),
            chunks=(*chunk, k),
            shards=(*shard, k),
            dtype=dtype,
            fill_value=0,
            filters=_filters(attrs, 3),
            compressors=_compressors(dtype.itemsize, v, name),
            dimension_names=("view", "sample", "rank"),
        )
    group.create_array(
        "valid",
        shape=(r, n),
        chunks=chunk,
        shards=shard,
        dtype="uint8",
        fill_value=0,
        filters=_filters(attrs, 2),
        compressors=_compressors(1, v, "valid"),
        dimension_names=("view", "sample"),
    )


def _create_arrays(loc: Location, attrs: StoreAttrs, digests: SampleDigests | None) -> None:
    """Write the group's and arrays' metadata and the samples' content ``digests``, the root
    ``zarr.json`` last (it marks a store).

    zarr encodes into memory and every key goes through the location: one code path for a
    folder and an object store, whose writers never share an object.
    """
    mem: dict[str, Buffer] = {}
    group = zarr.open_group(MemoryStore(mem), mode="w", zarr_format=3, attributes=attrs.to_dict())
    _define_arrays(group, attrs)
    for key in sorted(k for k in mem if k != ROOT_META):
        layout.write_file(loc, key, mem[key].to_bytes())
    if digests is not None:
        write_sample_digests(loc, digests)
    layout.write_file(loc, ROOT_META, mem[ROOT_META].to_bytes())
    layout.make_book(loc)


def write_metadata(loc: Location, attrs: StoreAttrs, root: bool = True) -> None:
    """Write the arrays' ``zarr.json`` files, then (``root``) the root's with ``attrs`` (no
    consolidated metadata: :func:`finalize` adds it)."""
    mem, _ = memory_group(attrs)
    for key in sorted(mem, key=lambda k: (k == ROOT_META, k)):
        if root or key != ROOT_META:
            layout.write_file(loc, key, mem[key].to_bytes())


def _memory_group(
    loc: Location, mode: Literal["r+", "r"] = "r+"
) -> tuple[dict[str, Buffer], zarr.Group]:
    """The store's root and array metadata, copied into memory, opened as a zarr group: data
    written into it is encoded exactly as zarr would on disk, and read back key by key."""
    mem: dict[str, Buffer] = {}
    for key in (ROOT_META, *(f"{name}/{ROOT_META}" for name in ARRAYS)):
        mem[key] = default_buffer_prototype().buffer.from_bytes(loc.read(key))
    return mem, zarr.open_group(MemoryStore(mem), mode=mode)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    assert isinstance(node, zarr.Array), name
    return node


def write_unit(
    address: str | os.PathLike[str],
    unit: ShardUnit,
    ids: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    bad: list[dict[str, Any]],
    stats: dict[str, Any] | None = None,
    attrs: StoreAttrs | None = None,
) -> dict[str, Any]:
    """Write one unit's shards (ids/values [rs, n, K] in rank order, values encoded; valid
    [rs, n]) and then commit its record. The entries are laid out as the store's ``id_order``
    says (:func:`~teacher_store.store.id_order.rank_to_stored`).

    Each shard file is encoded in memory and written whole (one PUT on an object store); the
    record, written after all of them, lists what was written. ``attrs``: the store's attrs
    when they are not (yet) those on disk (a store being grown); default: the store's own.
    """
    loc = Location.at(address)
    if attrs is None:
        attrs = StoreAttrs.from_dict(dict(json.loads(loc.read(ROOT_META))["attributes"]))
    ids, values = rank_to_stored(ids, values, attrs)
    return write_stored_unit(loc, unit, attrs, (ids, values, valid), bad, stats)


def write_stored_unit(
    loc: Location,
    unit: ShardUnit,
    attrs: StoreAttrs,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    bad: list[dict[str, Any]],
    stats: dict[str, Any] | None = None,
    staging: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one unit's shards from ``arrays`` (ids, values, valid) as the arrays hold them
    (stored order), encoded against ``attrs``, then commit its record. ``staging``: a key
    prefix to write the shard files under instead of their zarr keys (the record names the
    keys written); ``extra``: more fields for the record."""
    mem, group = memory_group(attrs)
    sl = (slice(unit.slot_start, unit.slot_stop), slice(unit.start, unit.stop))
    for name, data in zip(ARRAYS, arrays, strict=True):
        _array(group, name)[sl] = data
    shards = {}
    for key in unit.keys().values():
        buf = mem.get(key)  # None: all fill values, zarr writes no shard
        shards[key] = None if buf is None else buf.to_bytes()
    return commit_unit(loc, unit, shards, bad, stats, staging=staging, extra=extra)


def commit_unit(
    loc: Location,
    unit: ShardUnit,
    shards: dict[str, bytes | None],
    bad: list[dict[str, Any]],
    stats: dict[str, Any] | None = None,
    known: dict[str, layout.FileRecord] | None = None,
    staging: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one unit's encoded shard files (``shards``: key -> bytes, None for a shard of fill
    values only, which must not exist) and then commit its record; returns the record.

    :func:`write_unit` encodes arrays into such files; `distill copy` passes a source's
    verified files as they are, with their records (``known``: key -> the record the bytes
    were checked against, so they are not hashed again). Each file is written whole (one PUT
    on an object store); the record, written after all of them, lists what was written.
    ``staging``: a key prefix the files go under instead of their zarr keys (a growth's mixed
    unit, :mod:`teacher_store.store.grow`; the record names the keys written); ``extra``: more
    fields for the record.
    """
    if set(shards) != set(unit.keys().values()):
        raise ValueError(f"unit {unit.name} has shards {sorted(unit.keys().values())}")
    files = {}
    for zkey, data in shards.items():
        key = f"{staging}{zkey}"
        if data is None:  # an earlier try's shard must go
            loc.remove(key)
            files[key] = layout.EMPTY.to_dict()
            continue
        layout.write_file(loc, key, data)
        rec = (known or {}).get(key)
        files[key] = (rec if rec is not None else layout.FileRecord.of(data)).to_dict()
    record = {"unit": unit.name, "files": files, "bad": sorted(bad, key=lambda b: b["sample"])}
    if stats is not None:  # e.g. the encoding's KL over the unit's views, for `distill info`
        record["stats"] = stats
    record.update(extra or {})
    layout.write_unit_record(loc, unit.name, record)
    return record


def memory_group(attrs: StoreAttrs) -> tuple[dict[str, Buffer], zarr.Group]:
    """An empty in-memory store with ``attrs``'s arrays: data written into it is encoded
    exactly as in the store on disk (same metadata), and read back key by key."""
    mem: dict[str, Buffer] = {}
    group = zarr.open_group(MemoryStore(mem), mode="w", zarr_format=3, attributes=attrs.to_dict())
    _define_arrays(group, attrs)
    return mem, group


def read_stored_unit(
    loc: Location, attrs: StoreAttrs, unit: ShardUnit, files: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, values, valid) of ``unit`` as the arrays hold them (stored order), decoded from
    its shard files against ``attrs``; each file is checked against its record in ``files``
    first (:class:`StoreDamaged` if it is not the file recorded)."""
    mem, group = memory_group(attrs)
    for zkey in unit.keys().values():
        want = layout.FileRecord.from_dict(files[zkey])
        if not want.size:
            mem.pop(zkey, None)
            continue
        data = loc.read(zkey)
        if layout.FileRecord.of(data) != want:
            raise StoreDamaged(zkey, "is not the file its unit record lists")
        mem[zkey] = default_buffer_prototype().buffer.from_bytes(data)
    sl = (slice(unit.slot_start, unit.slot_stop), slice(unit.start, unit.stop))
    ids, values, valid = (np.asarray(_array(group, name)[sl]) for name in ARRAYS)
    return ids, values, valid


def committed_units(address: str | os.PathLike[str], units: list[ShardUnit]) -> set[str]:
    """Names of units whose record exists and whose files match it (size, crc32c, sha256).

    The records are found by one listing, not a probe per unit."""
    loc = Location.at(address)
    listed = layout.listed_units(loc)
    done = set()
    for unit in units:
        if unit.name not in listed:
            continue
        record = layout.read_unit_record(loc, unit.name)
        if record is None:
            continue
        ok = all(
            layout.file_matches(loc, key, want)
            for key, want in record["files"].items()
            if want["size"] > 0
        )
        if ok:
            done.add(unit.name)
    return done


def finalize(
    address: str | os.PathLike[str],
    units: list[ShardUnit],
    grown_from: list[dict[str, Any]] | None = None,
    attrs: StoreAttrs | None = None,
) -> dict[str, Any]:
    """Write the consolidated metadata, then the final manifest (last: the store is complete
    once it exists), which lists the samples' content digests too when the attrs record them
    (checked against the attrs first: :class:`StoreDamaged` if they are not those).
    ``grown_from``: the stores this one was grown from (``[{"views": R, "identity": ID},
    ...]``, :mod:`teacher_store.store.grow`); default: what the store's manifest says, if it
    has one. ``attrs``: root attrs to write with the consolidated metadata (a grown store's;
    default: the root's own)."""
    loc = Location.at(address)
    if grown_from is None:  # a re-run over a finished store keeps its lineage
        try:
            old = layout.read_manifest(loc)
        except StoreDamaged:  # a manifest cut short (a killed write): rewritten here
            old = None
        grown_from = list((old or {}).get("grown_from") or [])
    files: dict[str, Any] = {}
    mem, group = _memory_group(loc)
    if attrs is not None:  # one root write: readers never see new attrs without their arrays
        doc = json.loads(mem[ROOT_META].to_bytes())
        doc["attributes"] = attrs.to_dict()
        mem[ROOT_META] = default_buffer_prototype().buffer.from_bytes(json.dumps(doc).encode())
    else:
        attrs = StoreAttrs.from_dict(dict(group.attrs))
    digests = load_sample_digests(attrs, loc.read, loc.display)
    if digests is not None:
        files[SAMPLE_DIGESTS] = digests_file_record(digests).to_dict()
    bad: dict[int, dict[str, Any]] = {}
    stats: dict[str, float] = {}
    for u in units:
        rec = layout.read_unit_record(loc, u.name)
        if rec is None:
            raise StoreIncomplete(f"store {loc.display}: shard unit {u.name} is not committed")
        files.update(rec["files"])
        for b in rec["bad"]:
            bad.setdefault(b["sample"], b)
        for k, v in (rec.get("stats") or {}).items():
            stats[k] = stats.get(k, 0) + v
    manifest: dict[str, Any] = {
        "units": len(units),
        "files": dict(sorted(files.items())),
        "bad_samples": [bad[i] for i in sorted(bad)],
    }
    if stats:
        manifest["stats"] = stats
    if grown_from:
        manifest["grown_from"] = grown_from
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec (yet)
        zarr.consolidate_metadata(MemoryStore(mem))
    root = mem[ROOT_META].to_bytes()
    layout.write_file(loc, ROOT_META, root)
    # The metadata files' digests: an attribute edited later is refused by every reader, and
    # the identity (a digest of the manifest) differs for stores whose attrs differ.
    manifest["meta"] = meta_records(loc, root)
    layout.write_manifest(loc, manifest)
    return manifest


class LocalStore(StoreReader):
    """:class:`~teacher_store.store.store_reader.StoreReader` opened from an address (a
    folder or an object-store URL); kept under this name for one release."""

    def __init__(self, address: str | os.PathLike[str], require_complete: bool = True) -> None:
        super().__init__(Location.at(address), require_complete=require_complete)
