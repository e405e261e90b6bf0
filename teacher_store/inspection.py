"""`distill info`, `distill verify` and `distill show`: look into a store and check it.

``verify_store`` re-runs the teacher on a deterministic subset of the store's teacher batches,
rebuilt exactly as ``distill generate`` cut them: within each shard unit the valid views in
sample-major order (sample, then slot), cut every ``batch_size`` views; batches never span
units. A network's float results can depend on the batch it runs in, so re-running the same
batches on the same device type reproduces the stored outputs up to the storage encoding.

Tolerances of the teacher spot check
------------------------------------
*Strict test*, always applied first, and the only one accepted when the store's attrs.config
records a ``device`` of the same type verify runs on: top-K class ids must be equal rank by
rank (a swap is accepted only between two classes whose fresh probabilities are within
``TIE_DP``, i.e. a float tie), and every stored value must be within the encoding's rounding
error of the fresh one plus a small compute slack (thread count / instruction set; measured
~4e-5 in log-prob on CPU):

* ``logprob-f16``: ``|Δlogp| <= 2**-11 |logp| + 2**-24 + 1e-4 max(1, |logp|)`` (half an f16 ulp
  is at most ``2**-11`` relative; subnormals ``2**-25`` absolute);
* ``prob-u8``: ``|Δp| <= 1/510 + 1e-5`` (the quantization step is 1/255).

*Cross-device test*, used when the strict test fails and the store's device is another type or
not recorded (``distill generate`` keeps ``--device`` out of the attrs as a runtime field, so
this is the usual case): CUDA autocast (bf16) and TF32 move the teacher's outputs far more than
the encoding error (on Lite0, bf16 vs fp32 gives a median per-view max ``|Δp|`` of 0.01-0.02,
99th percentile 0.04 at 224 px and 0.24 at 64 px, and flips ~3% of top-1 ids), so entries cannot
be compared one by one. Each stored probability is compared with the fresh probability *of the
same class id* (an id flip at a near-tie costs nothing); the check passes when the median over
the checked views of the per-view max ``|Δp|`` is at most ``CROSS_DEVICE_MEDIAN_DP`` = 0.05 and
at most ``CROSS_DEVICE_OUTLIERS`` = 10% of the views exceed ``CROSS_DEVICE_VIEW_DP`` = 0.25.
Targets of another view of the same image (the hardest case) give medians of 0.18 (224 px) to
0.87 (64 px) and 37-97% of views over 0.25 (bf16 noise: 0-1%), so codec / replay /
preprocessing drift, and targets filed under the wrong views, are still caught; small damage
to the values is not, which is what the crc32c checksums are for.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from teacher_store import layout
from teacher_store.errors import DatasetMismatch, StoreDamaged, StoreIncomplete, StoreNotFound
from teacher_store.layout import ARRAYS, Location, ShardUnit, shard_units
from teacher_store.schema import decode_values

# Compute slack on top of the encoding error when the device type is the same.
SAME_DEVICE_LOGP_SLACK = 1e-4  # relative to max(1, |logp|)
SAME_DEVICE_P_SLACK = 1e-5
TIE_DP = 1e-5  # two fresh probabilities this close are a float tie: their ranks may swap
CROSS_DEVICE_MEDIAN_DP = 0.05  # median over checked views of the per-view max |Δp|
CROSS_DEVICE_VIEW_DP = 0.25  # a view whose max |Δp| exceeds this is an outlier ...
CROSS_DEVICE_OUTLIERS = 0.1  # ... and at most this share of the checked views may be outliers
F16_HALF_ULP_REL = 2.0**-11
F16_SUBNORMAL_ABS = 2.0**-24
U8_HALF_STEP = 1.0 / 510.0

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


# --------------------------------------------------------------------------------------------
# info


def _dir_bytes(root: Path) -> tuple[int, int]:
    total = files = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                total += (Path(dirpath) / name).stat().st_size
                files += 1
            except OSError:
                pass
    return total, files


def _schedule(recipe_dict: dict[str, Any], views: int) -> tuple[str, list[dict[str, Any]]]:
    """(recipe name, per-stage summary of the knobs in force over view slots)."""
    from teacher_store.recipe import Recipe

    name = str(recipe_dict.get("name", "?"))
    try:
        recipe = Recipe.from_dict(recipe_dict)
    except ValueError as e:
        return name, [{"error": f"recipe not readable by this distill: {e}".splitlines()[0]}]
    stages: list[dict[str, Any]] = []
    for slot in range(views):
        r = recipe.at_slot(slot, views)
        knobs = {k: (r.scale[0] if k == "scale_min" else getattr(r, k)) for k in _KNOBS}
        knobs = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in knobs.items()}
        if stages and stages[-1]["knobs"] == knobs:
            stages[-1]["slots"][1] = slot
        else:
            stages.append({"slots": [slot, slot], "knobs": knobs})
    return name, stages


def store_info(path: str) -> dict[str, Any]:
    """A JSON-safe summary of the store at ``path``; works on unfinished stores too.

    Reads attrs (refusing versions this code does not understand), the manifest or the unit
    records, and file sizes; it checks nothing else (that is :func:`verify_store`'s job), so it
    also describes a damaged store.
    """
    from teacher_store.schema import check_readable

    root = Path(path)
    loc = Location.local(root)
    raw = layout.read_root_attrs(loc)
    if raw is None:
        raise StoreNotFound(f"{root} is not a store (no zarr.json); check the path")
    a = check_readable(raw, str(root))
    units = shard_units(a)
    manifest = layout.read_manifest(loc)
    if manifest is not None:
        recorded = {u.name for u in units}
        files = dict(manifest["files"])
        bad = list(manifest.get("bad_samples", []))
    else:
        recs = layout.read_unit_records(loc, units)
        recorded = set(recs)
        files = {}
        bad_by: dict[int, dict[str, Any]] = {}
        for rec in recs.values():
            files.update(rec.get("files", {}))
            for b in rec.get("bad", []):
                bad_by.setdefault(b["sample"], b)
        bad = [bad_by[i] for i in sorted(bad_by)]
    per_array = {name: 0 for name in ARRAYS}
    for key, rec in files.items():
        per_array[key.split("/", 1)[0]] = per_array.get(key.split("/", 1)[0], 0) + rec["size"]
    data_bytes = sum(per_array.values())
    views_done = sum(
        (u.slot_stop - u.slot_start) * (u.stop - u.start) for u in units if u.name in recorded
    )
    disk, nfiles = _dir_bytes(root)
    recipe_name, schedule = _schedule(a.recipe, a.views)
    t = a.teacher
    return {
        "path": str(root),
        "complete": manifest is not None,
        "units_committed": len(recorded),
        "units_total": len(units),
        "bytes_on_disk": disk,
        "files_on_disk": nfiles,
        "data_bytes": data_bytes,
        "data_bytes_per_array": per_array,
        "views_written": views_done,
        "bytes_per_view": data_bytes / views_done if views_done else None,
        "bytes_per_view_per_array": {
            k: (v / views_done if views_done else None) for k, v in per_array.items()
        },
        "views": a.views,
        "samples": a.num_samples,
        "topk": a.topk,
        "num_classes": a.num_classes,
        "value_encoding": a.value_encoding,
        "temperature": a.temperature,
        "store_seed": a.store_seed,
        "layout": {
            "chunk_samples": a.chunk_samples,
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
        "bad_samples": bad,
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


def format_info(info: dict[str, Any]) -> str:
    """A readable multi-line summary of :func:`store_info`'s dict."""
    done, total = info["units_committed"], info["units_total"]
    if info["complete"]:
        head = f"store {info['path']}: complete ({total} shard units)"
    else:
        head = (
            f"store {info['path']}: UNFINISHED ({done}/{total} shard units committed); "
            "re-run the same `distill generate` to finish it"
        )
    bpv = info["bytes_per_view"]
    if bpv is None:
        size = f"{_human(info['bytes_on_disk'])} on disk; no views written yet"
    else:
        parts = ", ".join(
            f"{k} {v:.1f}" for k, v in info["bytes_per_view_per_array"].items() if v is not None
        )
        size = (
            f"{_human(info['bytes_on_disk'])} on disk ({info['files_on_disk']} files); "
            f"{bpv:.1f} B per view ({parts}) over {info['views_written']} views"
        )
    lay = info["layout"]
    t = info["teacher"]
    sha = (t["weights_sha256"] or "unknown")[:16]
    insize = "x".join(str(x) for x in t["input_size"])
    lines = [
        head,
        f"  size      {size}",
        f"  shape     R={info['views']} views x N={info['samples']} samples, top-{info['topk']} "
        f"of {info['num_classes']} classes, values {info['value_encoding']} "
        f"(T={info['temperature']:g}), ids {lay['ids_dtype']}",
        f"  layout    chunks of {lay['chunk_samples']} samples, shards of {lay['shard_views']} "
        f"view(s) x {lay['shard_samples']} samples; store seed {info['store_seed']}",
        f"  teacher   {t['name']} ({t['architecture']}), input {insize}, "
        f"{t['class_names']} class names, weights sha256 {sha}...",
        f"  recipe    {info['recipe']['name']}",
    ]
    for stage in info["recipe"]["schedule"]:
        if "error" in stage:
            lines.append(f"            {stage['error']}")
            continue
        a, b = stage["slots"]
        slots = f"slot {a}" if a == b else f"slots {a}-{b}"
        lines.append(f"            {slots}: {_knob_text(stage['knobs'])}")
    d = info["dataset"]
    lines.append(
        f"  dataset   {d['num_samples']} samples in {d['classes']} classes, sha256 {d['sha256']}"
    )
    bad = info["bad_samples"]
    lines.append(f"  bad       {len(bad)} unreadable image(s)" if bad else "  bad       none")
    for b in bad[:10]:
        lines.append(f"            sample {b['sample']}: {b['path']}")
    if len(bad) > 10:
        lines.append(f"            ... and {len(bad) - 10} more (see --json)")
    g = info["generate"]
    dev = f", device {g['device']}" if g.get("device") else ""
    lines.append(f"  generate  batch size {g['batch_size']}, amp {g['amp']}{dev}")
    libs = ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
    lines.append(
        f"  versions  schema {info['schema_version']}, codec {info['codec_version']}; {libs}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# verify


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :func:`verify_store`: ``reason`` is one line naming the problem and the fix."""

    ok: bool
    reason: str
    summary: str


def _fail(reason: str) -> VerifyReport:
    return VerifyReport(False, " ".join(reason.split()), "")  # always one line


def unit_batches(
    unit: ShardUnit, valid: np.ndarray, batch_size: int
) -> list[list[tuple[int, int]]]:
    """The teacher batches ``distill generate`` ran for ``unit``: lists of (slot, sample).

    ``valid`` is the unit's [slots, samples] valid array. Views are taken sample-major (sample,
    then slot), only valid ones, and cut every ``batch_size`` views.
    """
    rs, n = unit.slot_stop - unit.slot_start, unit.stop - unit.start
    if valid.shape != (rs, n):
        raise ValueError(f"valid block {valid.shape} does not fit unit {unit.name} ({rs}, {n})")
    samples, slots = np.nonzero(np.asarray(valid).T)  # row-major over [sample, slot]
    views = [
        (unit.slot_start + int(j), unit.start + int(s)) for s, j in zip(samples, slots, strict=True)
    ]
    return [views[i : i + batch_size] for i in range(0, len(views), batch_size)]


def _unit_valid(group: Any, unit: ShardUnit) -> np.ndarray:
    block = group["valid"][unit.slot_start : unit.slot_stop, unit.start : unit.stop]
    return np.asarray(block).astype(bool)


def _pick(total: int, fraction: float) -> list[int]:
    """Evenly spaced, deterministic indices: about ``fraction`` of ``total``, at least one."""
    if total == 0 or fraction <= 0:
        return []
    n = min(total, max(1, round(fraction * total)))
    return sorted({(2 * i + 1) * total // (2 * n) for i in range(n)})


@dataclass
class _Compare:
    strict_ok: bool
    max_dp: float
    detail: str  # why the strict test failed ("" when it passed)


def _compare_view(
    stored_ids: np.ndarray,
    stored_vals: np.ndarray,
    fresh_ids: np.ndarray,
    fresh_logp: np.ndarray,
    encoding: str,
) -> _Compare:
    """Compare one view's stored top-K with the fresh full ranking (ids/logp over all classes)."""
    k = len(stored_ids)
    full = np.empty(len(fresh_ids), np.float64)
    full[fresh_ids] = fresh_logp
    s_logp = decode_values(stored_vals, encoding).astype(np.float64)
    s_p = np.exp(s_logp)
    f_p_same = np.exp(full[stored_ids.astype(np.int64)])  # fresh prob of the stored classes
    max_dp = float(np.max(np.abs(s_p - f_p_same)))
    top_ids = fresh_ids[:k].astype(np.int64)
    for rank in np.nonzero(top_ids != stored_ids.astype(np.int64))[0].tolist():
        a, b = int(stored_ids[rank]), int(top_ids[rank])
        if abs(math.exp(full[a]) - math.exp(full[b])) > TIE_DP:
            return _Compare(False, max_dp, f"class id at rank {rank} is {a}, fresh run says {b}")
    ref = full[stored_ids.astype(np.int64)]
    if encoding == "logprob-f16":
        mag = np.abs(ref)
        bound = (
            F16_HALF_ULP_REL * mag
            + F16_SUBNORMAL_ABS
            + SAME_DEVICE_LOGP_SLACK * np.maximum(1.0, mag)
        )
        # log-probs below f16's range are clipped at encode time: zero probability either way.
        err = np.where(ref < -60000.0, 0.0, np.abs(s_logp - ref))
        bad = np.nonzero(err > bound)[0]
        if len(bad):
            r = int(bad[0])
            return _Compare(
                False,
                max_dp,
                f"log-prob at rank {r} is {s_logp[r]:.6g}, fresh {ref[r]:.6g} "
                f"(bound {bound[r]:.2g})",
            )
    else:
        bound_p = U8_HALF_STEP + SAME_DEVICE_P_SLACK
        err = np.abs(s_p - np.exp(ref))
        bad = np.nonzero(err > bound_p)[0]
        if len(bad):
            r = int(bad[0])
            return _Compare(
                False,
                max_dp,
                f"probability at rank {r} is {s_p[r]:.6g}, fresh {math.exp(ref[r]):.6g} "
                f"(bound {bound_p:.2g})",
            )
    return _Compare(True, max_dp, "")


def verify_store(
    path: str,
    data: str,
    fraction: float = 0.05,
    device: str = "auto",
    checkpoint: str | None = None,
) -> VerifyReport:
    """Check a store: readable, complete, checksums, dataset, and a teacher spot check.

    Stops at the first failure; see the module docstring for the spot check's tolerances.
    ``fraction`` is the share of teacher batches re-run (evenly spaced, at least one when > 0;
    0 skips the spot check).
    """
    from teacher_store.dataset import DatasetFingerprint, ImageFolder
    from teacher_store.store import LocalStore, committed_units

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--fraction must be in [0, 1], got {fraction}")
    root = Path(path)
    try:
        store = LocalStore(root, require_complete=False)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    a = store.attrs
    units = shard_units(a)
    if store.manifest is None:
        done = len(committed_units(root, units))
        return _fail(
            f"incomplete: {done}/{len(units)} shard units committed; "
            "re-run the same distill generate"
        )
    try:
        layout.check_files(Location.local(root), store.manifest["files"])
    except StoreDamaged as e:
        return _fail(str(e))
    nfiles = sum(1 for v in store.manifest["files"].values() if v["size"])
    try:
        folder = ImageFolder.scan(data, a.config.get("max_image_pixels"))
    except (ValueError, OSError) as e:
        return _fail(f"dataset: {e}")
    if folder.skipped:
        print(folder.skipped_summary(), file=sys.stderr)
    diff = DatasetFingerprint.from_dict(a.dataset).mismatch(folder.fingerprint())
    if diff:
        return _fail(
            f"dataset {data} does not match the store ({diff}); pass the --data the store "
            "was built from"
        )
    head = (
        f"{len(units)} shard units complete, {nfiles} shard files match their crc32c, "
        "dataset matches"
    )
    if fraction == 0:
        return VerifyReport(True, "", head + "; teacher spot check skipped (--fraction 0)")
    try:
        spot = _spot_check(store, folder, fraction, device, checkpoint)
    except (ValueError, OSError) as e:
        return _fail(f"spot check: {e}".splitlines()[0])
    if spot.ok:
        return VerifyReport(True, "", f"{head}; {spot.summary}")
    return spot


def _spot_check(
    store: Any, folder: Any, fraction: float, device: str, checkpoint: str | None
) -> VerifyReport:
    import torch

    from models import create_teacher
    from models.runtime import resolve_device
    from teacher_store.dataset import printable_path
    from teacher_store.generate import GenerateConfig
    from teacher_store.replay import Replayer
    from teacher_store.teacher import Teacher

    a = store.attrs
    units = shard_units(a)
    batch_size = int(a.config["batch_size"])
    counts = []
    for u in units:
        nv = int(_unit_valid(store.group, u).sum())
        counts.append(-(-nv // batch_size))
    total = sum(counts)
    chosen = _pick(total, fraction)
    if not chosen:
        return VerifyReport(True, "", "no valid views to re-run the teacher on")

    dev = resolve_device(device)
    if a.config.get("threads"):  # the store's thread count: CPU float results depend on it
        torch.set_num_threads(int(a.config["threads"]))
    gen_dev = a.device_type
    replay = Replayer(folder, a, device=dev)  # nvJPEG where the store used it and dev is CUDA
    # Another device, or another image decoder than the store's: compare with tolerances.
    same_device = gen_dev == dev.type and replay.exact
    try:
        model, info = create_teacher(a.config["teacher"], checkpoint)
    except (ValueError, OSError) as e:
        raise ValueError(
            f"cannot rebuild the store's teacher {a.config['teacher']!r}: {e}"
        ) from None
    if info.weights_sha256 != a.teacher.get("weights_sha256"):
        return _fail(
            f"teacher {a.config['teacher']!r} now has weights sha256 {info.weights_sha256}, the "
            f"store was made with {a.teacher.get('weights_sha256')}; use the same weights"
        )
    # attrs.config omits runtime fields (paths, workers, device); fill the required ones.
    base = {"data": str(folder.root), "out": str(store.path), **a.config}
    cfg = GenerateConfig.from_dict(base)
    teacher = Teacher(model, info, dev, a.num_classes, cfg.amp)  # all classes: see _compare_view

    # Map global batch indices to (unit, batch within unit).
    wanted: dict[int, list[int]] = {}
    start = 0
    for ui, c in enumerate(counts):
        for g in chosen:
            if start <= g < start + c:
                wanted.setdefault(ui, []).append(g - start)
        start += c

    results: list[tuple[int, int, _Compare]] = []
    for ui, local in wanted.items():
        u = units[ui]
        batches = unit_batches(u, _unit_valid(store.group, u), batch_size)
        ids = np.asarray(store.group["ids"][u.slot_start : u.slot_stop, u.start : u.stop])
        vals = np.asarray(store.group["values"][u.slot_start : u.slot_stop, u.start : u.stop])
        for b in local:
            views = [replay.render(slot, sample).pixels for slot, sample in batches[b]]
            fresh_ids, fresh_logp = teacher(torch.stack(views))
            for v, (slot, sample) in enumerate(batches[b]):
                j, s = slot - u.slot_start, sample - u.start
                cmp = _compare_view(
                    ids[j, s], vals[j, s], fresh_ids[v], fresh_logp[v], a.value_encoding
                )
                results.append((slot, sample, cmp))

    nviews = len(results)
    max_dp = max(res.max_dp for _, _, res in results)
    where = f"{len(chosen)} of {total} teacher batches ({nviews} views) re-run on {dev.type}"
    failed = [res for res in results if not res[2].strict_ok]
    if not failed:
        return VerifyReport(
            True,
            "",
            f"{where}: top-K ids equal, values within the {a.value_encoding} error "
            f"(max |Δp| {max_dp:.1e})",
        )
    slot, sample, first = failed[0]
    what = f"view {slot} of sample {sample} ({printable_path(folder.paths[sample])})"
    if same_device:
        return _fail(
            f"spot check: {what} differs from a fresh teacher run on the same device type: "
            f"{first.detail}; max |Δp| {max_dp:.2e} over {nviews} views; the store does not match "
            "this teacher/replay code: regenerate it"
        )
    dps = np.array([res.max_dp for _, _, res in results])
    median = float(np.median(dps))
    outliers = int(np.sum(dps > CROSS_DEVICE_VIEW_DP))
    if median <= CROSS_DEVICE_MEDIAN_DP and outliers <= CROSS_DEVICE_OUTLIERS * nviews:
        return VerifyReport(
            True,
            "",
            f"{where}: store's device {gen_dev}, so compared with the cross-device tolerance: "
            f"median per-view max |Δp| {median:.1e} <= {CROSS_DEVICE_MEDIAN_DP}, {outliers} "
            f"view(s) over {CROSS_DEVICE_VIEW_DP} (max {max_dp:.1e}); {len(failed)} of {nviews} "
            "views outside the same-device bound",
        )
    slot, sample, worst = results[int(np.argmax(dps))]
    what = f"view {slot} of sample {sample} ({printable_path(folder.paths[sample])})"
    return _fail(
        f"spot check: {what} differs from a fresh teacher run (max |Δp| {worst.max_dp:.2e}; "
        f"{worst.detail or 'ids agree'}); {outliers} of {nviews} views over the cross-device "
        f"tolerance {CROSS_DEVICE_VIEW_DP}, median per-view max |Δp| {median:.2e} (store device "
        f"{gen_dev}, verify device {dev.type}); the store does not match this teacher/replay "
        "code: regenerate it"
    )


# --------------------------------------------------------------------------------------------
# show


def _class_name(names: list[str], i: int) -> str:
    return str(names[i]) if 0 <= i < len(names) else f"class {i}"


def show_view(
    path: str, data: str, sample: int, view: int, out: str, size: int | None = None
) -> list[tuple[str, float]]:
    """Replay view ``view`` of ``sample`` and write a PNG with the teacher's top-5 beside it.

    Returns the top-5 (class name, probability) pairs as stored. The view is drawn at ``size``
    (default: the teacher's input size), enlarged by an integer nearest-neighbour factor to at
    least 224 px for legibility.
    """
    from PIL import Image, ImageDraw, ImageFont

    from teacher_store.dataset import DatasetFingerprint, ImageFolder, printable_path
    from teacher_store.replay import Replayer
    from teacher_store.store import LocalStore

    store = LocalStore(path, require_complete=False)
    a = store.attrs
    if not 0 <= sample < a.num_samples:
        raise ValueError(
            f"--sample {sample} out of range: the store has samples 0..{a.num_samples - 1}"
        )
    if not 0 <= view < a.views:
        raise ValueError(f"--view {view} out of range: the store has view slots 0..{a.views - 1}")
    if size is not None and size < 8:
        raise ValueError(f"--size {size} too small (at least 8)")
    folder = ImageFolder.scan(data, a.config.get("max_image_pixels"))
    diff = DatasetFingerprint.from_dict(a.dataset).mismatch(folder.fingerprint())
    if diff:
        raise DatasetMismatch(
            f"dataset {data} does not match the store ({diff}); pass the --data it was built from"
        )
    block = store.read_block(view, sample, sample + 1)
    if not block.valid[0]:
        unit = next(
            u
            for u in shard_units(a)
            if u.slot_start <= view < u.slot_stop and u.start <= sample < u.stop
        )
        if not store.complete and not layout.has_unit_record(Location.local(path), unit.name):
            raise StoreIncomplete(
                f"view {view} of sample {sample} is not generated yet: the store is unfinished; "
                "re-run the same `distill generate`"
            )
        raise ValueError(
            f"view {view} of sample {sample} has no targets: its image "
            f"{printable_path(folder.paths[sample])} (or its mixing partner) was unreadable "
            "when the store was made"
        )
    replayed = Replayer(folder, a, cache_size=0).render(view, sample, size)
    params = replayed.params
    img = Image.fromarray(replayed.pixels.permute(1, 2, 0).numpy(), "RGB")
    factor = max(1, -(-224 // max(img.size)))
    if factor > 1:
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)

    names = list(a.teacher.get("class_names", []) or [])
    logp = block.logprobs()[0]
    top = [
        (_class_name(names, int(i)), float(np.exp(lp)))
        for i, lp in zip(block.ids[0][:5], logp[:5], strict=True)
    ]
    lines = [
        f"sample {sample}: {printable_path(folder.paths[sample])}",
        f"view slot {view} (slots 0..{a.views - 1})",
    ]
    if params.mix is not None:
        lines.append(
            f"mixed with sample {params.mix.partner} ({params.mix.mode}, λ={params.mix.lam:.2f})"
        )
    lines += ["", f"teacher {a.teacher.get('name')} top-{len(top)}:"]
    lines += [f"{p:6.3f}  {name[:44]}" for name, p in top]
    try:
        font: Any = ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    line_h, pad, panel_w = 20, 12, 420
    height = max(img.height, 2 * pad + line_h * len(lines))
    canvas = Image.new("RGB", (img.width + panel_w, height), "white")
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for n, text in enumerate(lines):
        draw.text((img.width + pad, pad + n * line_h), text, fill="black", font=font)
    out_path = Path(out)
    if out_path.parent and not out_path.parent.exists():
        raise ValueError(f"output folder {out_path.parent} does not exist")
    canvas.save(out_path, format="PNG")
    return top


__all__ = [
    "VerifyReport",
    "format_info",
    "show_view",
    "store_info",
    "unit_batches",
    "verify_store",
]
