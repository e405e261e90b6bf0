"""`distill info`: describe a store (attrs, progress, sizes, recipe schedule, bad images).

It checks the metadata every reader checks (:func:`~teacher_store.store.integrity.check_store`:
attrs, arrays, metadata digests) and nothing more (the shard files are
:mod:`teacher_store.verify`'s job), so it also describes unfinished stores and stores with
damaged shards.
"""

from __future__ import annotations

import json
from typing import Any

from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.integrity import check_store, legacy_note
from teacher_store.store.layout import ARRAYS, ShardUnit, shard_units

_KNOBS = (
    "randaug_n",
    "randaug_m",
    "mixup_alpha",
    "cutmix_alpha",
    "mix_prob",
    "color_jitter",
    "erase_prob",
    "scale_min",
)


def _schedule(
    recipe_dict: dict[str, Any], views: int, first_slot: int = 0, span: int | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(recipe name, per-stage summary of the knobs in force over the store's view slots);
    slot r draws its knobs at the views' slot ``first_slot + r`` of a ``span``-slot schedule
    (a copy of slots A:B: A and its source's span; else 0 and ``views``)."""
    from teacher_store.views.recipe import Recipe

    name = str(recipe_dict.get("name", "?"))
    try:
        recipe = Recipe.from_dict(recipe_dict)
    except ValueError as e:
        return name, [{"error": f"recipe not readable by this distill: {e}".splitlines()[0]}]
    stages: list[dict[str, Any]] = []
    span = span or views
    for slot in range(views):
        r = recipe.at_slot(min(first_slot + slot, span - 1), span)
        knobs = {k: (r.scale[0] if k == "scale_min" else getattr(r, k)) for k in _KNOBS}
        knobs = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in knobs.items()}
        if stages and stages[-1]["knobs"] == knobs:
            stages[-1]["slots"][1] = slot
        else:
            stages.append({"slots": [slot, slot], "knobs": knobs})
    return name, stages


def recipe_schedule(
    recipe_dict: dict[str, Any], views: int, first_slot: int = 0, span: int | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """(recipe name, stages ``{"slots": [first, last], "knobs": {...}}``) as ``info`` shows;
    ``first_slot`` and ``span``: a copy's (``attrs.first_slot``, ``attrs.schedule_views``)."""
    return _schedule(recipe_dict, views, first_slot, span)


def _recorded(
    loc: Location, units: list[ShardUnit], manifest: dict[str, Any] | None
) -> tuple[set[str], dict[str, Any], list[dict[str, Any]]]:
    """(names of the committed units, file records, bad samples) from the manifest or, for an
    unfinished store, from the unit records."""
    if manifest is not None:
        return (
            {u.name for u in units},
            dict(manifest["files"]),
            list(manifest.get("bad_samples", [])),
        )
    recs = layout.read_unit_records(loc, units)
    files: dict[str, Any] = {}
    bad_by: dict[int, dict[str, Any]] = {}
    for rec in recs.values():
        files.update(rec.get("files", {}))
        for b in rec.get("bad", []):
            bad_by.setdefault(b["sample"], b)
    return set(recs), files, [bad_by[i] for i in sorted(bad_by)]


def _sizes(
    loc: Location, units: list[ShardUnit], recorded: set[str], files: dict[str, Any]
) -> dict[str, Any]:
    """The size part of :func:`store_info`'s dict: bytes on disk, data bytes, bytes per view."""
    per_array = {name: 0 for name in ARRAYS}
    for key, rec in files.items():
        if key.startswith(f"{layout.BOOK}/"):  # bookkeeping (the samples' content digests)
            continue
        per_array[key.split("/", 1)[0]] = per_array.get(key.split("/", 1)[0], 0) + rec["size"]
    data_bytes = sum(per_array.values())
    views_done = sum(
        (u.slot_stop - u.slot_start) * (u.stop - u.start) for u in units if u.name in recorded
    )
    disk, nfiles = loc.sizes()
    return {
        "bytes_on_disk": disk,
        "files_on_disk": nfiles,
        "data_bytes": data_bytes,
        "data_bytes_per_array": per_array,
        "views_written": views_done,
        "bytes_per_view": data_bytes / views_done if views_done else None,
        "bytes_per_view_per_array": {
            k: (v / views_done if views_done else None) for k, v in per_array.items()
        },
    }


def _describe(a: Any) -> dict[str, Any]:
    """The attrs part of :func:`store_info`'s dict: shape, layout, teacher, recipe, dataset."""
    recipe_name, schedule = _schedule(a.recipe, a.views, a.first_slot, a.schedule_views)
    t = a.teacher
    return {
        "views": a.views,
        "samples": a.num_samples,
        "topk": a.topk,
        "num_classes": a.num_classes,
        "value_encoding": a.value_encoding,
        "temperature": a.temperature,
        "store_seed": a.store_seed,
        "layout": {
            "chunk_samples": a.chunk_samples,
            "chunk_views": a.chunk_views,
            "id_order": a.id_order,
            "class_order": "teacher" if a.class_order is not None else "class ids",
            "shard_samples": a.shard_samples,
            "shard_views": a.shard_views,
            "ids_dtype": str(a.ids_dtype),
            "values_dtype": str(a.values_dtype),
        },
        "teacher": {
            "name": t.get("name"),
            "architecture": t.get("architecture"),
            "weights_sha256": t.get("weights_sha256"),
            "input_size": list(t.get("input_size", [])),
            "num_classes": t.get("num_classes"),
            "class_names": len(t.get("class_names", []) or []),
        },
        "recipe": {"name": recipe_name, "schedule": schedule},
        "dataset": {
            "num_samples": a.dataset.get("num_samples"),
            "sha256": str(a.dataset.get("sha256", ""))[:16],
            "classes": len(a.dataset.get("classes", [])),
        },
    }


def _encoding_kl(manifest: dict[str, Any] | None) -> float | None:
    """Mean nats the value encoding adds to float32 top-K's KL, as recorded at generation."""
    stats = (manifest or {}).get("stats") or {}
    views, total = stats.get("views"), stats.get("encoding_kl_sum")
    if not isinstance(views, int | float) or not isinstance(total, int | float) or views <= 0:
        return None
    return float(total) / float(views)


def _views_of(a: Any, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """Where the store's views come from: their identity, the slots the store was created
    with (a grown store), what it grew from, and the store whose views it took (--like)."""
    from teacher_store.store.schema import view_identity

    return {
        "view_identity": view_identity(a),
        "base_views": a.base_views,
        "grown_from": list((manifest or {}).get("grown_from") or []),
        "like": a.like,
    }


def _growing_to(loc: Location) -> int | None:
    """The slots a growth under way will give the store (None: no growth under way)."""
    from teacher_store.store.grow import pending_growth

    growth = pending_growth(loc.url or loc.root)
    return growth.attrs.views if growth is not None else None


def _views_line(v: dict[str, Any]) -> str:
    parts = [f"identity {v['view_identity']}"]
    if v["base_views"]:
        grown = " -> ".join(str(g["views"]) for g in v["grown_from"]) or "?"
        parts.append(f"grown from {grown} slots (schedule and layout over {v['base_views']})")
    if v["like"]:
        parts.append(f"the views of a store of teacher {v['like'].get('teacher')} (--like)")
    return "  views     " + "; ".join(parts)


def _copy(a: Any, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """A copy's origin and what its smaller K and re-encoding cost (mean nats per view)."""
    if a.copied_from is None:
        return None
    from teacher_store.store_copy import carried_kl

    stats = (manifest or {}).get("stats") or {}
    views = stats.get("views")
    total = float(views) if isinstance(views, int | float) and views > 0 else 0.0

    def mean(key: str) -> float | None:
        return float(stats.get(key) or 0.0) / total if total else None

    return {
        **a.copied_from,
        "topk_kl": mean("copy_topk_kl_sum"),
        "encoding_kl_added": mean("copy_encoding_kl_sum"),
        "kl_vs_float_topk": carried_kl(a, stats),
    }


def _fidelity(loc: Location) -> dict[str, Any] | None:
    from teacher_store.fidelity import fidelity_status

    status = fidelity_status(loc.url or loc.root)
    return None if status is None else status.to_dict()


def store_info(path: str) -> dict[str, Any]:
    """A JSON-safe summary of the store at ``path`` (a folder or an object-store URL); works on
    unfinished stores too.

    Reads attrs (refusing versions this code does not understand), the manifest or the unit
    records, and file sizes; it checks nothing else (that is
    :func:`teacher_store.verify.verify_store`'s job), so it also describes a damaged store.
    """
    loc = Location.at(path)
    loc.probe()
    checked = check_store(loc, note=False)  # format_info shows the note itself
    a = checked.attrs
    units = shard_units(a)
    manifest = json.loads(checked.manifest_bytes) if checked.manifest is not None else None
    recorded, files, bad = _recorded(loc, units, manifest)
    return {
        "path": loc.display,
        "complete": manifest is not None,
        # Whether the manifest holds the metadata files' digests (False: finished before
        # distill recorded them, or unfinished): edits of the attrs are then not detectable.
        "metadata_digests": checked.meta_recorded,
        "units_committed": len(recorded),
        "units_total": len(units),
        **_sizes(loc, units, recorded, files),
        **_describe(a),
        # TinyViT's layout: an int32 seed + K int16 ids + K float16 probabilities per view.
        "tinyvit_bytes_per_view": 4 + 4 * a.topk,
        "encoding_kl": _encoding_kl(manifest),
        "copied_from": _copy(a, manifest),
        "fidelity": _fidelity(loc),
        "bad_samples": bad,
        "views_of": _views_of(a, manifest),
        "growing_to": _growing_to(loc),
        "schema_version": a.schema_version,
        "codec_version": a.codec_version,
        "generate": {
            k: a.config.get(k) for k in ("batch_size", "amp", "img_size", "seed", "device")
        },
        "libraries": dict(a.libraries),
    }


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _knob_text(knobs: dict[str, Any]) -> str:
    return (
        f"RandAugment n={knobs['randaug_n']} m={knobs['randaug_m']}, "
        f"mixup {knobs['mixup_alpha']} / cutmix {knobs['cutmix_alpha']} (p={knobs['mix_prob']}), "
        f"crop scale>={knobs['scale_min']}, jitter {knobs['color_jitter']}, "
        f"erase {knobs['erase_prob']}"
    )


def _head_line(info: dict[str, Any]) -> str:
    done, total = info["units_committed"], info["units_total"]
    growing = info.get("growing_to")
    if info["complete"] and growing:
        return (
            f"store {info['path']}: complete ({total} shard units), growing to {growing} view "
            "slots: re-run the same `distill generate --views "
            f"{growing}` to finish the growth"
        )
    if info["complete"]:
        return f"store {info['path']}: complete ({total} shard units)"
    return (
        f"store {info['path']}: UNFINISHED ({done}/{total} shard units committed); "
        "re-run the same `distill generate` to finish it"
    )


def _size_text(info: dict[str, Any]) -> str:
    bpv = info["bytes_per_view"]
    if bpv is None:
        return f"{_human(info['bytes_on_disk'])} on disk; no views written yet"
    parts = ", ".join(
        f"{k} {v:.1f}" for k, v in info["bytes_per_view_per_array"].items() if v is not None
    )
    tv, kl = info["tinyvit_bytes_per_view"], info.get("encoding_kl")
    known = "" if kl is None else f"; KL vs float32 top-K +{kl:.4f} nats/view (the encoding's)"
    return (
        f"{_human(info['bytes_on_disk'])} on disk ({info['files_on_disk']} files); "
        f"{bpv:.1f} B per view ({parts}) over {info['views_written']} views; "
        f"TinyViT's layout: {tv} B per view (4 + 4K){known}"
    )


def _schedule_lines(schedule: list[dict[str, Any]]) -> list[str]:
    lines = []
    for stage in schedule:
        if "error" in stage:
            lines.append(f"            {stage['error']}")
            continue
        a, b = stage["slots"]
        slots = f"slot {a}" if a == b else f"slots {a}-{b}"
        lines.append(f"            {slots}: {_knob_text(stage['knobs'])}")
    return lines


def _bad_lines(bad: list[dict[str, Any]]) -> list[str]:
    lines = [f"  bad       {len(bad)} unreadable image(s)" if bad else "  bad       none"]
    for b in bad[:10]:
        lines.append(f"            sample {b['sample']}: {b['path']}")
    if len(bad) > 10:
        lines.append(f"            ... and {len(bad) - 10} more (see --json)")
    return lines


def _copy_text(c: dict[str, Any], info: dict[str, Any]) -> str:
    a, b = c["slots"]
    cost = ", ".join(
        f"{what} +{v:.4f}"
        for what, v in (
            (f"top-{info['topk']} of top-{c['topk']}", c.get("topk_kl")),
            (f"{c['value_encoding']} -> {info['value_encoding']}", c.get("encoding_kl_added")),
        )
        if v is not None
    )
    total = c.get("kl_vs_float_topk")
    known = "" if total is None else f"; KL vs the generation's float32 top-K +{total:.4f}"
    return (
        f"of {c['address']} (identity {c['identity']}): slots {a}:{b} of {c['views']}, "
        f"top-{c['topk']} {c['value_encoding']}; the copy added {cost or 'nothing'} "
        f"nats/view{known}"
    )


def _fidelity_text(status: dict[str, Any] | None) -> str:
    from teacher_store.fidelity import FidelityRecord, FidelityStatus, format_status

    if status is None:
        return format_status(None)
    rec = status.get("record")
    record = None if rec is None else FidelityRecord.from_dict(rec)
    return format_status(
        FidelityStatus(status["state"], record, status["identity"], status["reason"])
    )


def format_info(info: dict[str, Any]) -> str:
    """A readable multi-line summary of :func:`store_info`'s dict."""
    lay = info["layout"]
    t = info["teacher"]
    sha = (t["weights_sha256"] or "unknown")[:16]
    insize = "x".join(str(x) for x in t["input_size"])
    lines = [
        _head_line(info),
        f"  size      {_size_text(info)}",
        f"  shape     R={info['views']} views x N={info['samples']} samples, top-{info['topk']} "
        f"of {info['num_classes']} classes, values {info['value_encoding']} "
        f"(T={info['temperature']:g}), ids {lay['ids_dtype']}",
        f"  layout    chunks of {lay['chunk_views']} view(s) x {lay['chunk_samples']} samples, "
        f"entries in {lay['id_order']} order ({lay['class_order']}), shards of "
        f"{lay['shard_views']} "
        f"view(s) x {lay['shard_samples']} samples; store seed {info['store_seed']}",
        f"  teacher   {t['name']} ({t['architecture']}), input {insize}, "
        f"{t['class_names']} class names, weights sha256 {sha}...",
        f"  recipe    {info['recipe']['name']}",
        *_schedule_lines(info["recipe"]["schedule"]),
    ]
    d = info["dataset"]
    lines.append(
        f"  dataset   {d['num_samples']} samples in {d['classes']} classes, sha256 {d['sha256']}"
    )
    lines.append(_views_line(info["views_of"]))
    lines += _bad_lines(info["bad_samples"])
    if info["complete"] and not info["metadata_digests"]:
        lines.append(f"  {legacy_note(info['path'])}")
    if info.get("copied_from"):
        lines.append(f"  copy      {_copy_text(info['copied_from'], info)}")
    lines.append(f"  fidelity  {_fidelity_text(info.get('fidelity'))}")
    g = info["generate"]
    dev = f", device {g['device']}" if g.get("device") else ""
    lines.append(f"  generate  batch size {g['batch_size']}, amp {g['amp']}{dev}")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    lines.append(
        f"  versions  schema {info['schema_version']}, codec {info['codec_version']}; {libs}"
    )
    return "\n".join(lines)


__all__ = ["format_info", "recipe_schedule", "store_info"]
