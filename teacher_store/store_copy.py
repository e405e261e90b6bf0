"""`distill copy SRC DST`: copy a store, or a slot range of it at a smaller K or in another
encoding, between folders, object stores and the distill service.

A copy is a store writer whose "teacher" is the source: the destination's shard units are
computed from the source's verified files (:mod:`teacher_store.copy_source`) and committed
with the generation job's protocol (unit files, then the unit's record; the manifest last), so
a copy killed at any point resumes by unit when the same command runs again, and a finished
copy is a valid store of its own. Its attrs record what it was taken from
(:class:`~teacher_store.store.schema.CopiedFrom`: the source's identity and address, the slot
range, the source's K and encoding) and, for a slot range A:B, ``slot_offset`` A and the
source's schedule span, so that its slot r replays exactly the source's slot A + r.

A unit whose source unit has the same slots, K, encoding and chunking is copied byte for byte
(a whole-store copy is only that); any other is decoded from the source's shards, cut to the
top ``K2`` entries (values are stored in rank order, so the ``K2`` largest are the first
``K2``: exact), re-encoded if asked, and written through the same writer as generation. What
the smaller K and the other encoding cost (KL, nats per view) is summed per unit, printed and
kept in the copy's manifest stats, which `distill info` shows.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from teacher_store.copy_source import CopySource, open_source
from teacher_store.errors import StoreConflict
from teacher_store.options import MAX_TOPK
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.arrays import (
    commit_unit,
    committed_units,
    create_store,
    finalize,
    output_location,
    write_unit,
)
from teacher_store.store.id_order import encoding_kl, stored_to_rank, truncation_kl
from teacher_store.store.layout import ARRAYS, ShardUnit, shard_units
from teacher_store.store.schema import (
    VALUE_ENCODINGS,
    CopiedFrom,
    StoreAttrs,
    decode_values,
    encode_values,
)
from teacher_store.store.value_encodings import LogProbFloat
from teacher_store.store.value_encodings import encoding as value_encoding

_LOOKAHEAD = 2  # units fetched ahead per fetch thread


class CopyConfig(BaseModel):
    """Everything `distill copy` needs (version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    src: str
    dst: str
    # The source's slots [A, B); None: all, an open end (None) its first or last slot.
    slots: tuple[int | None, int | None] | None = None
    topk: int | None = Field(None, ge=1, le=MAX_TOPK)  # None: the source's K
    encoding: str | None = None  # the copy's value encoding; None: the source's
    token_file: str | None = None  # bearer token for a service source
    overwrite: bool = False
    workers: int = Field(4, ge=1, le=64)  # threads fetching and checking source files
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CopyConfig:
        """A validated config from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)


def parse_slots(text: str) -> tuple[int | None, int | None]:
    """``"A:B"``, ``"A:"`` or ``":B"`` -> (A, B) with None for an open end (one-line
    ValueError otherwise)."""
    first, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a = int(first) if first.strip() else None
        b = int(stop) if stop.strip() else None
    except ValueError:
        raise ValueError(f"--slots {text!r}: want A:B (first slot, stop slot), e.g. 2:5") from None
    return a, b


# --------------------------------------------------------------------------------------------
# what the copy is


@dataclass(frozen=True)
class _Plan:
    src: CopySource
    attrs: StoreAttrs  # the destination's
    first: int  # the source's slot of the copy's slot 0
    topk: int
    encoding: str

    def raw(self, unit: ShardUnit) -> ShardUnit | None:
        """The source unit whose files are exactly this unit's files, if there is one."""
        s, d = self.src.attrs, self.attrs
        same = (
            self.topk == s.topk
            and self.encoding == s.value_encoding
            and (d.chunk_views, d.shard_views) == (s.chunk_views, s.shard_views)
        )
        a, b = self.first + unit.slot_start, self.first + unit.slot_stop
        g = a // s.shard_views
        if not same or a != g * s.shard_views or b != min(s.views, (g + 1) * s.shard_views):
            return None
        j = unit.start // s.shard_samples
        return ShardUnit(g, j, a, b, unit.start, unit.stop)

    def sources(self, unit: ShardUnit) -> list[ShardUnit]:
        """The source units holding this unit's views."""
        s = self.src.attrs
        a, b = self.first + unit.slot_start, self.first + unit.slot_stop
        j = unit.start // s.shard_samples
        groups = range(a // s.shard_views, (b - 1) // s.shard_views + 1)
        return [
            ShardUnit(
                g,
                j,
                g * s.shard_views,
                min(s.views, (g + 1) * s.shard_views),
                unit.start,
                unit.stop,
            )
            for g in groups
        ]


def _check_options(cfg: CopyConfig, s: StoreAttrs) -> tuple[int, int, int, str]:
    a, b = cfg.slots if cfg.slots is not None else (None, None)
    a, b = 0 if a is None else a, s.views if b is None else b
    if not 0 <= a < b <= s.views:
        raise ValueError(
            f"--slots {a}:{b} is not a slot range of the source's {s.views} view slots; "
            f"pass A:B with 0 <= A < B <= {s.views}"
        )
    k2 = cfg.topk or s.topk
    if k2 > s.topk:
        raise ValueError(
            f"--topk {k2} exceeds the source's top-{s.topk}: a copy can only drop entries; "
            f"pass --topk {s.topk} or less"
        )
    enc = cfg.encoding or s.value_encoding
    if enc not in VALUE_ENCODINGS:
        raise ValueError(f"--encoding {enc!r} is not one of {', '.join(VALUE_ENCODINGS)}")
    return a, b, k2, enc


def copy_attrs(src: CopySource, a: int, b: int, k2: int, enc: str) -> StoreAttrs:
    """The attrs of a copy of the source's slots [a, b) at top-``k2`` in encoding ``enc``:
    the source's, with its own slot count, K, encoding and view chunking, and what it was
    taken from."""
    s = src.attrs
    views = b - a
    cviews = min(s.chunk_views, views)
    sviews = s.shard_views if cviews == s.chunk_views else cviews
    sviews = min(sviews, -(-views // cviews) * cviews)
    copied = CopiedFrom(
        identity=src.identity,
        address=src.address,
        views=s.views,
        slots=[a, b],
        topk=s.topk,
        value_encoding=s.value_encoding,
        shard_views=s.shard_views,
        batches_kept=_batches_kept(s, a, b, sviews),
        encoding_kl=carried_kl(s, src.stats),
    )
    config = {
        **s.config,
        "views": views,
        "topk": k2,
        "value_encoding": enc,
        "chunk_views": cviews,
        "shard_views": sviews,
    }
    fields = {
        **s.to_dict(),
        "views": views,
        "topk": k2,
        "value_encoding": enc,
        "chunk_views": cviews,
        "shard_views": sviews,
        # slot r is the views' slot first_slot + a + r, its knobs from the source's schedule
        "slot_offset": (s.first_slot + a) or None,
        "slot_span": s.schedule_views if s.schedule_views != views else None,
        "copied_from": copied.to_dict(),
        "config": config,
    }
    # A grown source's base_views pins its own layout and schedule: the copy has its own
    # layout, and its schedule span is slot_span (set above from schedule_views).
    fields.pop("base_views", None)
    return StoreAttrs.from_dict(fields)


def _batches_kept(s: StoreAttrs, a: int, b: int, sviews: int) -> bool:
    """Whether a copy of slots [a, b) cut into ``sviews``-slot units has its source's units
    (the same slots in each, hence the generation's teacher batches when the source had)."""
    aligned = sviews == s.shard_views and a % sviews == 0 and (b == s.views or b % sviews == 0)
    return aligned and bool((s.copied_from or {}).get("batches_kept", True))


def carried_kl(attrs: StoreAttrs, stats: dict[str, Any]) -> float | None:
    """Mean nats per view the stored values add to the float32 top-K of the original
    generation (its encoding, and for a copy what its smaller K and re-encoding added), from
    a store's attrs and manifest stats; None when the generation recorded none."""
    views = stats.get("views")
    if not isinstance(views, int | float) or views <= 0:
        return None
    if attrs.copied_from is None:
        total = stats.get("encoding_kl_sum")
        return float(total) / views if isinstance(total, int | float) else None
    base = attrs.copied_from.get("encoding_kl")
    if base is None:
        return None
    added = sum(float(stats.get(k) or 0.0) for k in ("copy_topk_kl_sum", "copy_encoding_kl_sum"))
    return float(base) + added / views


# --------------------------------------------------------------------------------------------
# reading and converting units


class _Fetcher:
    """Source unit files, fetched and checked in threads; a few recent units kept (a copy's
    unit that straddles two source units shares one with its neighbour)."""

    def __init__(self, src: CopySource, keep: int) -> None:
        self.src, self.keep = src, keep
        self._lock = threading.Lock()
        self._units: OrderedDict[str, Future[dict[str, bytes | None]]] = OrderedDict()

    def unit(self, pool: ThreadPoolExecutor, u: ShardUnit) -> Future[dict[str, bytes | None]]:
        with self._lock:
            fut = self._units.get(u.name)
            if fut is None:
                fut = pool.submit(self._read, u)
                self._units[u.name] = fut
            self._units.move_to_end(u.name)
            while len(self._units) > self.keep:
                self._units.popitem(last=False)
            return fut

    def _read(self, u: ShardUnit) -> dict[str, bytes | None]:
        return {key: self.src.shard(key) for key in u.keys().values()}


def _memory_arrays(src: CopySource, shards: dict[str, bytes | None]) -> Any:
    """The source's arrays over its metadata and ``shards`` (absent shards read as fill)."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    proto = default_buffer_prototype().buffer
    mem = {k: proto.from_bytes(v) for k, v in {**src.meta, **shards}.items() if v is not None}
    return zarr.open_group(MemoryStore(mem), mode="r")


def _read_region(
    plan: _Plan, unit: ShardUnit, files: dict[str, bytes | None]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The source's views of ``unit``: ids [rs, n, K] and values (rank order), valid [rs, n]."""
    group = _memory_arrays(plan.src, files)
    sl = (
        slice(plan.first + unit.slot_start, plan.first + unit.slot_stop),
        slice(unit.start, unit.stop),
    )
    ids, values = stored_to_rank(
        np.asarray(group["ids"][sl]), np.asarray(group["values"][sl]), plan.src.attrs
    )
    return ids, values, np.asarray(group["valid"][sl])


def _convert(
    plan: _Plan, ids: np.ndarray, values: np.ndarray, valid: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Top-K2 of the source's entries in the copy's encoding, and what that cost (KL sums
    over the valid views)."""
    s, k2, classes = plan.src.attrs, plan.topk, plan.src.attrs.num_classes
    ok = valid.astype(bool)  # [rs, n]
    logp = decode_values(values[ok], s.value_encoding)  # [v, K]
    topk_kl = float(truncation_kl(logp, k2, classes).sum()) if k2 < s.topk else 0.0
    out_ids, out_values = ids[..., :k2].copy(), values[..., :k2].copy()
    enc_kl = 0.0
    if plan.encoding != s.value_encoding:
        fresh = encode_values(logp[:, :k2], plan.encoding)
        if isinstance(value_encoding(plan.encoding), LogProbFloat):
            # A zero the source stored is "one of the other classes" (its class is not known):
            # -inf keeps that meaning (the student loss spreads the rest mass over it), where
            # the encoding's floor would give that class p = 0.
            fresh[np.isneginf(logp[:, :k2])] = -np.inf
        enc_kl = float(encoding_kl(logp[:, :k2], fresh, plan.encoding, classes).sum())
        out_values = np.zeros(out_ids.shape, fresh.dtype)
        out_values[ok] = fresh
    out_ids[~ok] = 0  # invalid views hold fill values, as a generated store's do
    out_values[~ok] = 0
    stats = {"views": int(ok.sum()), "copy_topk_kl_sum": topk_kl, "copy_encoding_kl_sum": enc_kl}
    return out_ids, out_values, stats


def _bad(plan: _Plan, unit: ShardUnit) -> list[dict[str, Any]]:
    return [dict(b) for b in plan.src.manifest.bad_samples if unit.start <= b["sample"] < unit.stop]


def _byte_copy(plan: _Plan, out: Location, unit: ShardUnit, raw: ShardUnit) -> dict[str, Any]:
    """Copy and commit a unit whose files are source unit ``raw``'s, byte for byte (in a pool
    thread: units are disjoint files, each committed by its own record)."""
    src = plan.src
    shards, known = {}, {}
    for name in ARRAYS:
        data = src.shard(raw.keys()[name])
        shards[unit.keys()[name]] = data
        if data is not None:
            known[unit.keys()[name]] = src.record(raw.keys()[name])
    # Nothing is cut or re-encoded: the KL sums are 0 whatever the count of views they are
    # averaged over, so the unit's views are counted without decoding its valid flags.
    views = (unit.slot_stop - unit.slot_start) * (unit.stop - unit.start)
    stats = {"views": views, "copy_topk_kl_sum": 0.0, "copy_encoding_kl_sum": 0.0}
    return commit_unit(out, unit, shards, _bad(plan, unit), stats, known)


def _convert_unit(
    plan: _Plan, dst: str, unit: ShardUnit, files: dict[str, dict[str, bytes | None]]
) -> dict[str, Any]:
    """Decode, cut, re-encode, write and commit one unit from its source units' files."""
    merged = {k: v for got in files.values() for k, v in got.items()}
    ids, values, valid = _read_region(plan, unit, merged)
    out_ids, out_values, stats = _convert(plan, ids, values, valid)
    return write_unit(dst, unit, out_ids, out_values, valid, _bad(plan, unit), stats)


_Task = tuple[ShardUnit, "Future[dict[str, Any]] | dict[str, Future[dict[str, bytes | None]]]"]


def _copy_units(plan: _Plan, dst: str, todo: list[ShardUnit], workers: int) -> Iterator[Any]:
    """Copy ``todo``, yielding each unit's committed record in order. Byte-for-byte units run
    whole in ``workers`` threads; the others' source files are fetched there and converted
    here (zarr encodes in this thread)."""
    out = Location.at(dst)
    fetcher = _Fetcher(plan.src, keep=max(4, 2 * workers * _LOOKAHEAD))
    with ThreadPoolExecutor(workers, thread_name_prefix="copy") as pool:
        pending: list[_Task] = []
        it = iter(todo)
        try:
            while True:
                while len(pending) < workers * _LOOKAHEAD:
                    u = next(it, None)
                    if u is None:
                        break
                    raw = plan.raw(u)
                    if raw is not None:
                        pending.append((u, pool.submit(_byte_copy, plan, out, u, raw)))
                    else:
                        pending.append(
                            (u, {s.name: fetcher.unit(pool, s) for s in plan.sources(u)})
                        )
                if not pending:
                    return
                u, task = pending.pop(0)
                if isinstance(task, Future):
                    yield task.result()
                else:
                    files = {name: f.result() for name, f in task.items()}
                    yield _convert_unit(plan, dst, u, files)
        finally:
            for _, task in pending:
                for f in [task] if isinstance(task, Future) else list(task.values()):
                    f.cancel()


# --------------------------------------------------------------------------------------------
# the job


def _same_place(src: CopySource, dst: str) -> bool:
    """Whether the destination is the source, or one lies inside the other."""
    if src.kind == "service":
        return False
    here = Location.at(dst)
    there = Location.at(src.address)
    if here.is_local != there.is_local:
        return False
    a = os.path.realpath(here.root) if here.is_local else here.root.rstrip("/")
    b = os.path.realpath(there.root) if there.is_local else there.root.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _check_destination(cfg: CopyConfig, src: CopySource, attrs: StoreAttrs) -> None:
    """Refuse a destination that is (or holds, or lies in) the source, and a copy of the
    source as it was before it changed (a resume would mix two stores)."""
    if _same_place(src, cfg.dst):
        raise StoreConflict(
            f"--out {cfg.dst} overlaps the source store {src.address}; copy to another place"
        )
    loc = output_location(cfg.dst)
    old = layout.read_root_attrs(loc)
    if cfg.overwrite or not old or not isinstance(old.get("copied_from"), dict):
        return
    was = old["copied_from"]
    if was.get("address") == src.address and was.get("identity") != src.identity:
        raise StoreConflict(
            f"{loc.display} holds a copy of {src.address} as it was (identity "
            f"{was.get('identity')}); the source is now {src.identity}: pass --overwrite to "
            "copy it afresh"
        )


def _copy_side_files(src: CopySource, out: Location, units: list[ShardUnit]) -> None:
    """Copy the files the source's manifest lists beside its shard units (a store-wide file
    the attrs describe, such as per-sample records), checked like the shards: the copy keeps
    the source's attrs, so it must keep what they describe."""
    shards = {key for u in units for key in u.keys().values()}
    for key, entry in sorted(src.manifest.files.items()):
        if key in shards or not entry.size:
            continue
        data = src.shard(key)
        if data is not None and layout.file_record(out, key) != src.record(key):
            layout.write_file(out, key, data)


def _token(cfg: CopyConfig) -> str | None:
    if not cfg.token_file:
        return None
    try:
        return Path(cfg.token_file).read_text().strip() or None
    except OSError as e:
        raise ValueError(f"--token-file {cfg.token_file}: {e.strerror or e}") from None


def run_copy(cfg: CopyConfig, on_unit: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Copy (or resume copying) ``cfg.src`` into ``cfg.dst``; returns a summary dict.

    ``on_unit(done, total)`` is called after each unit is committed (progress, tests)."""
    src = open_source(cfg.src, _token(cfg))
    try:
        return _run(cfg, src, on_unit)
    finally:
        src.close()


def _run(
    cfg: CopyConfig, src: CopySource, on_unit: Callable[[int, int], None] | None
) -> dict[str, Any]:
    from tqdm import tqdm

    a, b, k2, enc = _check_options(cfg, src.attrs)
    attrs = copy_attrs(src, a, b, k2, enc)
    _check_destination(cfg, src, attrs)
    resumed = create_store(cfg.dst, attrs, cfg.overwrite)
    plan = _Plan(src, attrs, a, k2, enc)
    units = shard_units(attrs)
    _copy_side_files(src, Location.at(cfg.dst), shard_units(src.attrs))
    done = committed_units(cfg.dst, units)
    todo = [u for u in units if u.name not in done]
    bar = tqdm(
        total=len(units), initial=len(done), unit="unit", disable=not cfg.progress, file=sys.stderr
    )
    t0, written, raw, nbytes = time.perf_counter(), 0, 0, 0
    try:
        for unit, record in zip(todo, _copy_units(plan, cfg.dst, todo, cfg.workers), strict=False):
            written += 1
            raw += plan.raw(unit) is not None
            nbytes += sum(int(f["size"]) for f in record["files"].values())
            bar.update(1)
            if on_unit is not None:
                on_unit(len(done) + written, len(units))
    finally:
        bar.close()
    # Every file read matched the manifest read at the start, so the copy holds that store's
    # bytes; a source replaced meanwhile (even by one whose remaining files are the same) is
    # still refused rather than called a copy of it.
    src.check_unchanged()
    manifest = finalize(cfg.dst, units)
    stats = manifest.get("stats") or {}
    views = float(stats.get("views") or 0)
    return {
        "store": Location.at(cfg.dst).display,
        "source": src.address,
        "identity": src.identity,
        "slots": [a, b],
        "topk": [src.attrs.topk, k2],
        "value_encoding": [src.attrs.value_encoding, enc],
        "resumed": bool(resumed and done),
        "units": len(units),
        "units_skipped": len(done),
        "units_written": written,
        "units_byte_copied": raw,
        "bytes_written": nbytes,
        "seconds": time.perf_counter() - t0,
        "topk_kl": float(stats.get("copy_topk_kl_sum") or 0) / views if views else 0.0,
        "encoding_kl": float(stats.get("copy_encoding_kl_sum") or 0) / views if views else 0.0,
        "complete": True,
    }


__all__ = ["CopyConfig", "carried_kl", "copy_attrs", "parse_slots", "run_copy"]
