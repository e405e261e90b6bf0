"""Growing a store: append view slots R..R2-1 to a store of R slots, without changing one.

``distill generate --views R2`` on a store of R < R2 slots with the same config otherwise
grows it. The rules (docs/store-format.md, "Growing a store"):

- **Existing slots keep their meaning.** The store records the slots it was created with as
  ``base_views``; its layout (chunk and shard slots) and its recipe's per-slot schedule are
  defined over them, and a slot at or past ``base_views`` takes the knobs of slot
  ``base_views - 1`` (the last stage extends). A growth that asks for another ``base_views``
  would change existing slots, and is refused.
- **Only the new views are computed; no stored value changes.** A shard unit of existing slots
  only is not touched (its files stay byte-identical). A unit that holds both (R is not a
  multiple of the store's shard slots) is *mixed*: its existing slots' stored values are copied
  from its old shard files (checked against the unit's record), its new slots computed, and the
  unit is written under a staging prefix until the growth finishes.
- **Readers keep going.** Until the growth finishes the root metadata and the manifest stay
  those of the R-slot store, so a reader of it sees no change. Finishing moves staged shards
  into place, writes the arrays' metadata, then the root and the manifest (last, as for any
  store). The new manifest lists the stores it grew from (``grown_from``: their view count and
  identity): a reader that opened one of them accepts the new identity as an append
  (:func:`appended`); any other change of identity still stops it.
- **Resumable.** The plan is ``_distill/growth.json`` (the target attrs, the old attrs, the
  lineage); a kept unit record is moved to ``_distill/growth/old/``; a re-run of the same
  command continues from the committed units, as generation does.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from teacher_store.errors import StoreConflict, StoreDamaged
from teacher_store.images.digests import SampleDigests
from teacher_store.store import layout
from teacher_store.store.arrays import (
    attrs_differences,
    committed_units,
    finalize,
    read_stored_unit,
    write_metadata,
    write_stored_unit,
    write_unit,
)
from teacher_store.store.content import digests_file_record, write_sample_digests
from teacher_store.store.id_order import rank_to_stored
from teacher_store.store.layout import (
    GROWTH,
    GROWTH_STAGE,
    SAMPLE_DIGESTS,
    Location,
    ShardUnit,
    shard_units,
)
from teacher_store.store.schema import StoreAttrs

_STAGE = GROWTH_STAGE
_NEW = f"{_STAGE}new/"  # mixed units' shard files until the growth finishes
_OLD = f"{_STAGE}old/"  # mixed units' records of the store before the growth
# What a growth may change: the number of slots and the span it was created with.
_GROWABLE = frozenset({"views", "config.views", "base_views", "config.base_views"})


class GrowthRefused(StoreConflict):
    """A growth that would change existing slots, or one asked for while another is under way."""


@dataclass(frozen=True)
class Growth:
    """A growth under way: ``old`` (R slots) to ``attrs`` (R2 slots)."""

    old: StoreAttrs
    attrs: StoreAttrs
    grown_from: list[dict[str, Any]]
    kept: dict[str, dict[str, Any]]  # mixed unit name -> its record before the growth

    @property
    def from_views(self) -> int:
        """R: the slots the store had before this growth."""
        return self.old.views

    def mixed(self, unit: ShardUnit) -> bool:
        """Whether ``unit`` holds slots from before the growth and new ones."""
        return unit.slot_start < self.from_views < unit.slot_stop

    def first_slot(self, unit: ShardUnit) -> int:
        """The unit's first slot to compute (its slots below are kept)."""
        return self.from_views if unit.name in self.kept else unit.slot_start


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def base_views_for(address: str | os.PathLike[str], views: int) -> int | None:
    """The ``base_views`` a generation of ``views`` slots into ``address`` takes when none is
    asked for: a growth's target's, a grown store's own, the slots of a smaller store (this is
    a growth), else None."""
    loc = Location.at(address)
    plan = _read_plan(loc)
    if plan is not None and plan["attrs"]["views"] == views:
        return plan["attrs"].get("base_views")
    old = layout.read_root_attrs(loc)
    if not old or not isinstance(old.get("views"), int):
        return None
    base = old.get("base_views")
    if base is None and views > old["views"]:
        base = old["views"]
    return int(base) if base is not None and base < views else None


def _read_plan(loc: Location) -> dict[str, Any] | None:
    try:
        doc = json.loads(loc.read(GROWTH))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a plan cut short: written before anything else, so nothing depends on it
    return doc if isinstance(doc, dict) and "attrs" in doc and "old" in doc else None


def pending_growth(address: str | os.PathLike[str]) -> Growth | None:
    """The growth under way at ``address``, or None."""
    loc = Location.at(address)
    plan = _read_plan(loc)
    if plan is None:
        return None
    old, attrs = StoreAttrs.from_dict(plan["old"]), StoreAttrs.from_dict(plan["attrs"])
    kept = {}
    for unit in shard_units(attrs):
        if unit.slot_start < old.views < unit.slot_stop:
            rec = _read_json(loc, f"{_OLD}{unit.name}.json")
            if rec is not None:
                kept[unit.name] = rec
    return Growth(old, attrs, list(plan.get("grown_from") or []), kept)


def _read_json(loc: Location, key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(loc.read(key))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def begin_growth(
    address: str | os.PathLike[str], attrs: StoreAttrs, digests: SampleDigests | None = None
) -> Growth | None:
    """Rank 0, before any unit is written: the growth to ``attrs`` of the store at
    ``address`` (started now, or under way), or None when this is no growth (a new store, a
    resume, or another store: :func:`~teacher_store.store.arrays.create_store` decides).
    ``digests``: the samples' content digests the attrs record, written again if they are
    not there (as a resume does)."""
    loc = Location.at(address)
    old = layout.read_root_attrs(loc)
    if old is None:
        return None
    plan = _read_plan(loc)
    if plan is not None:
        if attrs_differences(plan["attrs"], attrs.to_dict()):
            to = plan["attrs"]["views"]
            raise GrowthRefused(
                f"store {loc.display} is being grown from {plan['old']['views']} to {to} view "
                f"slots; finish that first (re-run it with --views {to}) or choose another --out"
            )
    elif not _is_growth(loc, old, attrs):
        return None
    else:
        plan = _start(loc, old, attrs)
    growth = Growth(
        StoreAttrs.from_dict(plan["old"]), attrs, list(plan.get("grown_from") or []), {}
    )
    _keep_mixed_records(loc, growth)
    if digests is not None and layout.file_record(loc, SAMPLE_DIGESTS) != digests_file_record(
        digests
    ):
        write_sample_digests(loc, digests)  # deleted or damaged since: the attrs' own
    return pending_growth(address)


def _is_growth(loc: Location, old: dict[str, Any], attrs: StoreAttrs) -> bool:
    """Whether ``attrs`` grow the store whose root attrs are ``old``; refuses a growth that
    would change existing slots."""
    if not isinstance(old.get("views"), int) or attrs.views == old["views"]:
        return False
    if set(attrs_differences(old, attrs.to_dict())) - _GROWABLE:
        return False  # another store: create_store refuses it, naming what differs
    if attrs.views < old["views"]:
        raise GrowthRefused(
            f"store {loc.display} has {old['views']} view slots: --views {attrs.views} would "
            f"drop slots (a store only grows); pass --views {old['views']} or more, or "
            "choose another --out"
        )
    base = old.get("base_views") or old["views"]
    if attrs.base_views != base:
        raise GrowthRefused(
            f"growing store {loc.display} from {old['views']} to {attrs.views} view slots with "
            f"--base-views {attrs.base_views or attrs.views} would change its existing slots "
            f"(their layout and recipe stages are defined over the {base} slots it was "
            "created with); drop --base-views"
        )
    return True


def _start(loc: Location, old: dict[str, Any], attrs: StoreAttrs) -> dict[str, Any]:
    """Write the plan of a new growth; the lineage gains the store as it is now, if complete."""
    grown_from: list[dict[str, Any]] = []
    try:
        raw = layout.manifest_bytes(loc)
    except FileNotFoundError:
        raw = None  # an unfinished store: no reader can have opened it
    if raw is not None:
        from teacher_store.store.blockfmt import store_identity

        before = json.loads(raw).get("grown_from") or []
        grown_from = [*before, {"views": old["views"], "identity": store_identity(raw)}]
    plan = {"old": old, "attrs": attrs.to_dict(), "grown_from": grown_from}
    layout.write_file(loc, GROWTH, _dumps(plan))
    return plan


def _keep_mixed_records(loc: Location, growth: Growth) -> None:
    """Move each mixed unit's record of the old store aside (so the unit counts as not done),
    keeping it when its files are intact (their slots are then copied, not recomputed)."""
    for unit in shard_units(growth.attrs):
        if not growth.mixed(unit) or loc.is_file(f"{_OLD}{unit.name}.json"):
            continue
        rec = layout.read_unit_record(loc, unit.name)
        if rec is None or rec.get("slots") == [unit.slot_start, unit.slot_stop]:
            continue  # nothing to keep, or already this growth's record
        old_unit = ShardUnit(
            unit.group, unit.index, unit.slot_start, growth.from_views, unit.start, unit.stop
        )
        if committed_units(loc.url or loc.root, [old_unit]) == {unit.name}:
            layout.write_file(loc, f"{_OLD}{unit.name}.json", _dumps(rec))
        loc.remove(layout.unit_record_key(unit.name))


def write_growing_unit(
    address: str | os.PathLike[str],
    growth: Growth,
    unit: ShardUnit,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    bad: list[dict[str, Any]],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Write a unit of a growth: ``arrays`` (ids, values [rs, n, K] rank order, valid [rs, n])
    over the unit's slots, of which only those from :meth:`Growth.first_slot` are computed.

    A unit of new slots only goes to its own keys (no reader of the old store reads them); a
    mixed unit goes to the staging prefix, its kept slots' stored values copied unchanged."""
    ids, values, valid = arrays
    if not growth.mixed(unit):
        return write_unit(address, unit, ids, values, valid, bad, stats, attrs=growth.attrs)
    loc = Location.at(address)
    ids, values = rank_to_stored(ids, values, growth.attrs)
    kept = growth.kept.get(unit.name)
    if kept is not None:
        k = growth.from_views - unit.slot_start
        old_unit = ShardUnit(
            unit.group, unit.index, unit.slot_start, growth.from_views, unit.start, unit.stop
        )
        old = read_stored_unit(loc, growth.old, old_unit, kept["files"])
        ids, values, valid = (
            np.concatenate([o, a[k:]]) for o, a in zip(old, (ids, values, valid), strict=True)
        )
        merged = {b["sample"]: b for b in [*kept.get("bad", []), *bad]}
        bad = list(merged.values())
        before = kept.get("stats") or {}
        stats = {key: stats.get(key, 0) + before.get(key, 0) for key in {*stats, *before}}
    extra = {"slots": [unit.slot_start, unit.slot_stop]}
    return write_stored_unit(
        loc, unit, growth.attrs, (ids, values, valid), bad, stats, staging=_NEW, extra=extra
    )


def finish_store(
    address: str | os.PathLike[str], attrs: StoreAttrs, units: list[ShardUnit]
) -> dict[str, Any]:
    """Finalize the store once every unit is committed: a growth's last steps (staged shards
    into place, the arrays' metadata, root and manifest with the lineage, the plan removed),
    else :func:`~teacher_store.store.arrays.finalize`."""
    growth = pending_growth(address)
    if growth is None:
        return finalize(address, units)
    loc = Location.at(address)
    for unit in units:
        if growth.mixed(unit):
            _unstage(loc, unit)
    write_metadata(loc, attrs, root=False)
    manifest = finalize(address, units, growth.grown_from, attrs)
    with contextlib.suppress(FileNotFoundError):  # staged files, kept records, their folders
        loc.fs.rm(loc.path(_STAGE.rstrip("/")), recursive=True)
    loc.remove(GROWTH)  # last: a kill before it finishes again, to the same bytes
    return manifest


def _unstage(loc: Location, unit: ShardUnit) -> None:
    """Move a mixed unit's staged shard files to their zarr keys, then its record with them."""
    rec = layout.read_unit_record(loc, unit.name)
    assert rec is not None  # every unit is committed before the growth finishes
    files = {}
    for key, want in rec["files"].items():
        real = key[len(_NEW) :] if key.startswith(_NEW) else key
        if key != real:
            if want["size"]:
                data = loc.read(key)
                if layout.FileRecord.of(data) != layout.FileRecord.from_dict(want):
                    raise StoreDamaged(key, "is not the file its unit record lists")
                layout.write_file(loc, real, data)
            else:
                loc.remove(real)
        files[real] = want
    if files != rec["files"]:
        layout.write_unit_record(loc, unit.name, {**rec, "files": files})


def appended(identity: str, now: str, grown_from: list[dict[str, Any]] | None) -> bool:
    """Whether a store that had ``identity`` when a reader opened it, and now has identity
    ``now`` with the lineage ``grown_from`` (its manifest's), is that store with slots
    appended: every slot the reader could read holds the same stored values. (A reader that
    opened the store while a growth was finishing may have seen the new slots already: they
    are final by then, since a growth finishes only once every unit is committed.)"""
    if now == identity:
        return True
    return any(isinstance(e, dict) and e.get("identity") == identity for e in grown_from or [])


def append_compatible(old: StoreAttrs, new: StoreAttrs) -> bool:
    """Whether ``new`` are the attrs of ``old``'s store with slots appended (they differ only
    in the number of slots and the span the store was created with)."""
    diff = set(attrs_differences(old.to_dict(), new.to_dict()))
    return new.views >= old.views and diff <= _GROWABLE


def manifest_lineage(raw: bytes) -> list[dict[str, Any]]:
    """The ``grown_from`` list of a manifest's bytes (empty when it has none or is not JSON)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return []
    out = doc.get("grown_from") if isinstance(doc, dict) else None
    return list(out) if isinstance(out, list) else []


__all__ = [
    "GROWTH",
    "Growth",
    "GrowthRefused",
    "append_compatible",
    "appended",
    "base_views_for",
    "begin_growth",
    "finish_store",
    "manifest_lineage",
    "pending_growth",
    "write_growing_unit",
]
