"""Store layout on disk: shard units, commit protocol, manifest, and the local reader.

Work is cut into *shard units*: a block of ``shard_views`` view slots by ``shard_samples``
samples. A unit is one zarr shard file per array, written whole by exactly one writer (zarr
loses data when two writers touch one shard). Once its files are written, the writer records
them (size, crc32c, sha256) in ``_distill/shards/<unit>.json`` with an atomic rename; a unit
counts as done only when that record exists and matches the files. The store is final when
``_distill/manifest.json`` and the consolidated metadata are written, last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from teacher_store.schema import StoreAttrs, check_readable, decode_values

ARRAYS = ("ids", "values", "valid")
BOOK = "_distill"  # bookkeeping folder inside the store, beside the zarr keys


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


def _compressors(typesize: int) -> list[Any]:
    # Bit-shuffle for bytes (probabilities), byte-shuffle for wider ids and float16 values.
    if typesize == 1:
        return [BloscCodec(cname="zstd", clevel=7, shuffle="bitshuffle"), Crc32cCodec()]
    return [BloscCodec(cname="zstd", clevel=7, shuffle="shuffle"), Crc32cCodec()]


def _read_root_attrs(path: Path) -> dict[str, Any] | None:
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        return dict(json.loads(meta.read_text()).get("attributes", {}))
    except (json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{meta} is unreadable ({e}); remove it or pass --overwrite") from None


def recorded_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The generation config recorded in an existing store's attrs, or None."""
    root = Path(path)
    attrs = _read_root_attrs(root) if root.is_dir() else None
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


def create_store(path: str | os.PathLike[str], attrs: StoreAttrs, overwrite: bool = False) -> bool:
    """Create an empty store at ``path``, or accept an existing one with the same config.

    Returns True when an existing store is being resumed. A different store (other config, other
    dataset, other teacher weights) or a non-empty non-store folder is refused unless
    ``overwrite``.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output {root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        old = _read_root_attrs(root)
        diff = _differences(old, attrs.to_dict()) if old is not None else ["not a store"]
        if not diff:
            return True
        if not overwrite:
            what = f"a different store ({', '.join(diff)} differ)" if old else "not a store"
            raise ValueError(f"output {root} is {what}; choose another --out or pass --overwrite")
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
    r, n, k = attrs.views, attrs.num_samples, attrs.topk
    chunk, shard = (1, attrs.chunk_samples), (attrs.shard_views, attrs.shard_samples)
    for name, dtype in (("ids", attrs.ids_dtype), ("values", attrs.values_dtype)):
        group.create_array(
            name,
            shape=(r, n, k),
            chunks=(*chunk, k),
            shards=(*shard, k),
            dtype=dtype,
            fill_value=0,
            compressors=_compressors(dtype.itemsize),
            dimension_names=("view", "sample", "rank"),
        )
    group.create_array(
        "valid",
        shape=(r, n),
        chunks=chunk,
        shards=shard,
        dtype="uint8",
        fill_value=0,
        compressors=_compressors(1),
        dimension_names=("view", "sample"),
    )
    (root / BOOK / "shards").mkdir(parents=True, exist_ok=True)


def _array(group: zarr.Group, name: str) -> zarr.Array:
    node = group[name]
    assert isinstance(node, zarr.Array), name
    return node


def _file_record(path: Path) -> dict[str, Any]:
    """Size, crc32c and sha256 of a file. The crc32c alone is no content identity: a zarr shard
    is a chain of crc32c-suffixed segments, whose whole-file crc32c depends only on the segment
    lengths; sha256 tells a stale or swapped shard of the same layout apart."""
    data = path.read_bytes()
    return {
        "size": len(data),
        "crc32c": crc32c.crc32c(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a disk-full write leaves no stray temporary file
        raise


def write_unit(
    path: str | os.PathLike[str],
    unit: ShardUnit,
    ids: np.ndarray,
    values: np.ndarray,
    valid: np.ndarray,
    bad: list[dict[str, Any]],
) -> dict[str, Any]:
    """Write one unit's shards (ids/values [rs, n, K], valid [rs, n]) and then commit its record."""
    root = Path(path)
    group = zarr.open_group(root, mode="r+")
    sl = (slice(unit.slot_start, unit.slot_stop), slice(unit.start, unit.stop))
    for name, data in (("ids", ids), ("values", values), ("valid", valid)):
        _array(group, name)[sl] = data
    files = {}
    for key in unit.keys().values():
        f = root / key
        files[key] = _file_record(f) if f.is_file() else {"size": 0, "crc32c": 0, "sha256": ""}
    record = {"unit": unit.name, "files": files, "bad": sorted(bad, key=lambda b: b["sample"])}
    _atomic_write_json(root / BOOK / "shards" / f"{unit.name}.json", record)
    return record


def committed_units(path: str | os.PathLike[str], units: list[ShardUnit]) -> set[str]:
    """Names of units whose record exists and whose files match it (size, crc32c, sha256)."""
    root = Path(path)
    done = set()
    for unit in units:
        rec_path = root / BOOK / "shards" / f"{unit.name}.json"
        try:
            record = json.loads(rec_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        ok = all(
            (root / key).is_file() and _file_record(root / key) == want
            for key, want in record["files"].items()
            if want["size"] > 0
        )
        if ok:
            done.add(unit.name)
    return done


def finalize(path: str | os.PathLike[str], units: list[ShardUnit]) -> dict[str, Any]:
    """Write the final manifest and consolidated metadata; the store is complete afterwards."""
    root = Path(path)
    records = [json.loads((root / BOOK / "shards" / f"{u.name}.json").read_text()) for u in units]
    files: dict[str, Any] = {}
    bad: dict[int, dict[str, Any]] = {}
    for rec in records:
        files.update(rec["files"])
        for b in rec["bad"]:
            bad.setdefault(b["sample"], b)
    manifest = {
        "units": len(units),
        "files": dict(sorted(files.items())),
        "bad_samples": [bad[i] for i in sorted(bad)],
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not in the v3 spec (yet)
        zarr.consolidate_metadata(str(root))
    _atomic_write_json(root / BOOK / "manifest.json", manifest)
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
        from teacher_store.codec import CODEC_VERSION

        self.path = Path(path)
        raw = _read_root_attrs(self.path)
        if raw is None:
            raise ValueError(f"{self.path} is not a store (no zarr.json); check the path")
        self.attrs = check_readable(raw, str(self.path), CODEC_VERSION)
        self.manifest = self._read_manifest()
        if require_complete and self.manifest is None:
            raise ValueError(
                f"store {self.path} is unfinished; re-run the same `distill generate` to finish it"
            )
        if self.manifest is not None:
            self._check_sizes()
        self.group = zarr.open_group(self.path, mode="r")

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.path / BOOK / "manifest.json").read_text()))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.path}/{BOOK}/manifest.json is unreadable: {e}") from None

    def _check_sizes(self) -> None:
        assert self.manifest is not None
        for key, want in self.manifest["files"].items():
            f = self.path / key
            size = f.stat().st_size if f.is_file() else -1
            if want["size"] and size != want["size"]:
                state = "missing" if size < 0 else f"{size} bytes, expected {want['size']}"
                raise ValueError(f"store {self.path}: shard {key} is {state}; regenerate it")

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        a = self.attrs
        a.check_block(slot, start, stop)
        ids = np.asarray(_array(self.group, "ids")[slot, start:stop])
        values = np.asarray(_array(self.group, "values")[slot, start:stop])
        valid = np.asarray(_array(self.group, "valid")[slot, start:stop]).astype(bool)
        return TargetBlock(slot, start, ids, values, valid, a.value_encoding)
