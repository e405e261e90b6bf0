"""Store writer (commit protocol) and the local reader.

Work is cut into shard units (:mod:`teacher_store.store.layout`). A unit is one zarr shard file per
array, written whole by exactly one writer (zarr loses data when two writers touch one shard).
Once its files are written, the writer records them (size, crc32c, sha256) in the unit's
record with an atomic rename; a unit counts as done only when that record exists and matches
the files. The store is final when the manifest and the consolidated metadata are written, last.
Where each of these lives is :mod:`teacher_store.store.layout`'s business.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, TransposeCodec

from teacher_store.errors import StoreConflict, StoreIncomplete, StoreNotFound
from teacher_store.store import layout
from teacher_store.store.encodings import rank_to_stored, stored_to_rank
from teacher_store.store.layout import ARRAYS, BOOK, Location, ShardUnit, shard_units
from teacher_store.store.schema import StoreAttrs, check_readable, decode_values

# ARRAYS, BOOK, ShardUnit and shard_units live in teacher_store.store.layout; importable
# from here too.
__all__ = [
    "ARRAYS",
    "BOOK",
    "LocalStore",
    "ShardUnit",
    "TargetBlock",
    "committed_units",
    "create_store",
    "finalize",
    "recorded_config",
    "shard_units",
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


def recorded_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The generation config recorded in an existing store's attrs, or None."""
    root = Path(path)
    attrs = layout.read_root_attrs(Location.local(root)) if root.is_dir() else None
    return dict(attrs.get("config") or {}) if attrs else None


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
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


def store_differences(path: str | os.PathLike[str], attrs: StoreAttrs) -> list[str]:
    """What differs between the store at ``path`` and ``attrs`` (``["not a store"]`` when there
    is none); empty when ``attrs`` describe that store. Library versions do not count."""
    root = Path(path)
    old = layout.read_root_attrs(Location.local(root)) if root.is_dir() else None
    return _differences(old, attrs.to_dict()) if old is not None else ["not a store"]


def create_store(path: str | os.PathLike[str], attrs: StoreAttrs, overwrite: bool = False) -> bool:
    """Create an empty store at ``path``, or accept an existing one with the same config.

    Returns True when an existing store is being resumed. A different store (other config, other
    dataset, other teacher weights) or a non-empty non-store folder is refused unless
    ``overwrite``.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise StoreConflict(f"output {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        old = layout.read_root_attrs(Location.local(root))
        diff = _differences(old, attrs.to_dict()) if old is not None else ["not a store"]
        if not diff:
            return True
        if not overwrite:
            what = f"a different store ({', '.join(diff)} differ)" if old else "not a store"
            raise StoreConflict(
                f"output {root} is {what}; choose another --out or pass --overwrite"
            )
        shutil.rmtree(root)
    existed = root.is_dir()
    try:
        _create_arrays(root, attrs)
    except OSError:
        # A half-created store (disk full) has no root zarr.json and would be refused as "not a
        # store" on the re-run; remove what was written so the same command starts afresh.
        if not existed:
            shutil.rmtree(root, ignore_errors=True)
        for child in list(root.iterdir()) if existed else []:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        raise
    return False


def _create_arrays(root: Path, attrs: StoreAttrs) -> None:
    group = zarr.open_group(root, mode="w", zarr_format=3, attributes=attrs.to_dict())
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
    layout.make_book(Location.local(root))


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    assert isinstance(node, zarr.Array), name
    return node


def write_unit(
    path: str | os.PathLike[str],
    unit: ShardUnit,
    ids: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    bad: list[dict[str, Any]],
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one unit's shards (ids/values [rs, n, K] in rank order, values encoded; valid
    [rs, n]) and then commit its record. The entries are laid out as the store's ``id_order``
    says (:func:`~teacher_store.store.encodings.rank_to_stored`)."""
    root = Path(path)
    group = zarr.open_group(root, mode="r+")
    ids, values = rank_to_stored(ids, values, StoreAttrs.from_dict(dict(group.attrs)))
    sl = (slice(unit.slot_start, unit.slot_stop), slice(unit.start, unit.stop))
    for name, data in (("ids", ids), ("values", values), ("valid", valid)):
        _array(group, name)[sl] = data
    loc = Location.local(root)
    files = {key: layout.file_record(loc, key).to_dict() for key in unit.keys().values()}
    record = {"unit": unit.name, "files": files, "bad": sorted(bad, key=lambda b: b["sample"])}
    if stats is not None:  # e.g. the encoding's KL over the unit's views, for `distill info`
        record["stats"] = stats
    layout.write_unit_record(loc, unit.name, record)
    return record


def committed_units(path: str | os.PathLike[str], units: list[ShardUnit]) -> set[str]:
    """Names of units whose record exists and whose files match it (size, crc32c, sha256)."""
    loc = Location.local(path)
    done = set()
    for unit in units:
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


def finalize(path: str | os.PathLike[str], units: list[ShardUnit]) -> dict[str, Any]:
    """Write the final manifest and consolidated metadata; the store is complete afterwards."""
    loc = Location.local(path)
    files: dict[str, Any] = {}
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec (yet)
        zarr.consolidate_metadata(loc.root)
    layout.write_manifest(loc, manifest)
    return manifest


@dataclass(frozen=True)
class TargetBlock:
    """Targets of view slot ``slot`` for samples [start, stop)."""

    slot: int
    start: int
    ids: np.ndarray  # [n, K] uint16/uint32, rank order
    values: np.ndarray  # [n, K] stored encoding
    valid: np.ndarray  # [n] bool
    encoding: str

    def logprobs(self) -> np.ndarray:
        """[n, K] float32 log-probabilities (-inf where the encoding rounded p to zero)."""
        return decode_values(self.values, self.encoding)


class LocalStore:
    """Reader over a store folder; checks versions and (when complete) the manifest's files."""

    def __init__(self, path: str | os.PathLike[str], require_complete: bool = True) -> None:
        from teacher_store.views.codec import CODEC_VERSION

        self.path = Path(path)
        loc = Location.local(self.path)
        raw = layout.read_root_attrs(loc)
        if raw is None:
            raise StoreNotFound(f"{self.path} is not a store (no zarr.json); check the path")
        self.attrs = check_readable(raw, str(self.path), CODEC_VERSION)
        self.manifest = layout.read_manifest(loc)
        if require_complete and self.manifest is None:
            raise StoreIncomplete(
                f"store {self.path} is unfinished; re-run the same `distill generate` to finish it"
            )
        if self.manifest is not None:
            layout.check_sizes(loc, self.manifest["files"])
        self.group = zarr.open_group(self.path, mode="r")

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        a = self.attrs
        a.check_block(slot, start, stop)
        ids, values = stored_to_rank(
            np.asarray(_array(self.group, "ids")[slot, start:stop]),
            np.asarray(_array(self.group, "values")[slot, start:stop]),
            a,
        )
        valid = np.asarray(_array(self.group, "valid")[slot, start:stop]).astype(bool)
        return TargetBlock(slot, start, ids, values, valid, a.value_encoding)
