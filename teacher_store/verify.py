"""`distill verify`: check a store: readable, complete, checksums, dataset, teacher spot check.

``verify_store`` re-runs the teacher on a deterministic subset of the store's teacher batches,
rebuilt exactly as ``distill generate`` cut them: within each shard unit the valid views in
the store's view order (``pairing.unit_view_order``: "pairs", or "sample" for stores made
before it), cut every ``batch_size`` views; batches never span units. A network's float
results can depend on the batch it runs in, so re-running the same batches on the same device
type reproduces the stored outputs up to the storage encoding.

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
import sys
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from teacher_store.errors import StoreDamaged
from teacher_store.images.dataset import printable_path
from teacher_store.store import layout
from teacher_store.store.content import dataset_difference, size_only_note
from teacher_store.store.id_order import stored_to_rank
from teacher_store.store.integrity import legacy_note
from teacher_store.store.layout import ShardUnit, shard_units
from teacher_store.store.schema import StoreAttrs, decode_values, quant_step
from teacher_store.store.value_encodings import F16_HALF_ULP_REL as F16_HALF_ULP_REL
from teacher_store.store.value_encodings import F16_SUBNORMAL_ABS as F16_SUBNORMAL_ABS
from teacher_store.store.value_encodings import encoding as value_encoding
from teacher_store.views.pairing import recorded_view_order, unit_view_order

# Compute slack on top of the encoding error when the device type is the same.
SAME_DEVICE_LOGP_SLACK = 1e-4  # relative to max(1, |logp|)
SAME_DEVICE_P_SLACK = 1e-5
TIE_DP = 1e-5  # two fresh probabilities this close are a float tie: their ranks may swap
CROSS_DEVICE_MEDIAN_DP = 0.05  # median over checked views of the per-view max |Δp|
CROSS_DEVICE_VIEW_DP = 0.25  # a view whose max |Δp| exceeds this is an outlier ...
CROSS_DEVICE_OUTLIERS = 0.1  # ... and at most this share of the checked views may be outliers
U8_HALF_STEP = 1.0 / 510.0


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :func:`verify_store`: ``reason`` is one line naming the problem and the fix;
    ``measured``: what a teacher spot check measured (None when none ran), the fields of a
    fidelity record (:mod:`teacher_store.fidelity`)."""

    ok: bool
    reason: str
    summary: str
    measured: dict[str, Any] | None = None


def _fail(reason: str) -> VerifyReport:
    return VerifyReport(False, " ".join(reason.split()), "")  # always one line


def unit_batches(
    unit: ShardUnit, valid: np.ndarray, attrs: StoreAttrs
) -> list[list[tuple[int, int]]]:
    """The teacher batches ``distill generate`` ran for ``unit``: lists of (slot, sample).

    ``valid`` is the unit's [slots, samples] valid array. Views are taken in the store's view
    order (recorded in its config), only valid ones, and cut every ``batch_size`` views.
    """
    rs, n = unit.slot_stop - unit.slot_start, unit.stop - unit.start
    if valid.shape != (rs, n):
        raise ValueError(f"valid block {valid.shape} does not fit unit {unit.name} ({rs}, {n})")
    ok = np.asarray(valid).astype(bool)
    first = attrs.first_slot  # a copy of slots A:B pairs its slot r as the views' slot A + r
    steps = unit_view_order(
        attrs.store_seed,
        attrs.num_samples,
        range(first + unit.slot_start, first + unit.slot_stop),
        range(unit.start, unit.stop),
        recorded_view_order(attrs.config),
    )
    views = [
        (r - first, i)
        for step in steps
        for r, i in step
        if ok[r - first - unit.slot_start, i - unit.start]
    ]
    batch_size = int(attrs.config["batch_size"])
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


# --------------------------------------------------------------------------------------------
# comparing one view


@dataclass
class _Compare:
    strict_ok: bool
    max_dp: float
    detail: str  # why the strict test failed ("" when it passed)
    kl: float = 0.0  # KL(fresh full distribution || stored sparse target), nats
    ids_agree: float = 1.0  # share of the stored non-zero entries among the fresh top-K ids
    top1: bool = True  # stored top-1 is the fresh top-1 (or a float tie with it)


def _value_error(s_logp: np.ndarray, s_p: np.ndarray, ref: np.ndarray, encoding: str) -> str:
    """Why the stored values are outside the encoding's error of the fresh log-probs ``ref``
    ("" when they are within it): compared in the encoding's own space (log-prob or p) with
    its rounding bound (the value-encoding table's ``bound``) plus the compute slack."""
    enc = value_encoding(encoding)
    if enc.tolerance_space == "logp":
        stored, fresh, what = s_logp, ref, "log-prob"
        slack = SAME_DEVICE_LOGP_SLACK * np.maximum(1.0, np.abs(ref))
    else:
        stored, fresh, what = s_p, np.exp(ref), "probability"
        slack = np.full(len(ref), SAME_DEVICE_P_SLACK)
    bound = enc.bound(ref) + slack
    bad = np.nonzero(np.abs(stored - fresh) > bound)[0]
    if len(bad):
        r = int(bad[0])
        return f"{what} at rank {r} is {stored[r]:.6g}, fresh {fresh[r]:.6g} (bound {bound[r]:.2g})"
    return ""


def _p_bound(name: str, ref: np.ndarray) -> np.ndarray:
    """Encoding ``name``'s rounding error at fresh log-probs ``ref`` [K], in p: a log-prob
    error b moves p by at most p (e^b - 1)."""
    e = value_encoding(name)
    b = np.asarray(e.bound(ref), np.float64)
    if e.tolerance_space == "p":
        return b
    return np.exp(ref) * np.expm1(np.minimum(b, 50.0))


def _copy_value_error(s_p: np.ndarray, ref: np.ndarray, encodings: tuple[str, str]) -> str:
    """Why a re-encoded copy's probabilities are outside both encodings' rounding of the fresh
    log-probs ``ref`` ("" when within): its values were rounded twice."""
    bound_p = _p_bound(encodings[0], ref) + _p_bound(encodings[1], ref) + SAME_DEVICE_P_SLACK
    err = np.abs(s_p - np.exp(ref))
    bad = np.nonzero(err > bound_p)[0]
    if len(bad):
        r = int(bad[0])
        return (
            f"probability at rank {r} is {s_p[r]:.6g}, fresh {math.exp(ref[r]):.6g} "
            f"(bound {bound_p[r]:.2g}, {encodings[0]} re-encoded as {encodings[1]})"
        )
    return ""


def _sparse_kl(full: np.ndarray, ids: np.ndarray, s_p: np.ndarray) -> float:
    """KL(fresh full distribution ``exp(full)`` [C] || the stored sparse target): its entries
    with p > 0 on their classes, the rest mass spread over the other classes (the loss's)."""
    kept = s_p > 0
    rest = max(1.0 - float(s_p[kept].sum()), 1e-12) / max(len(full) - int(kept.sum()), 1)
    log_q = np.full(len(full), math.log(rest))
    log_q[ids[kept]] = np.log(s_p[kept])
    p = np.exp(full)
    return float(max(np.sum(np.where(p > 0, p * (full - log_q), 0.0)), 0.0))


def _compare_view(
    stored_ids: np.ndarray,
    stored_vals: np.ndarray,
    fresh_ids: np.ndarray,
    fresh_logp: np.ndarray,
    encoding: str,
    source_encoding: str | None = None,
) -> _Compare:
    """Compare one view's stored top-K with the fresh full ranking (ids/logp over all classes).

    ``source_encoding``: a copy's source encoding when the copy re-encoded its values (both
    roundings then bound the error, and the coarser one decides ties)."""
    k = len(stored_ids)
    ids = stored_ids.astype(np.int64)
    full = np.empty(len(fresh_ids), np.float64)
    full[fresh_ids] = fresh_logp
    s_logp = decode_values(stored_vals, encoding).astype(np.float64)
    s_p = np.exp(s_logp)
    f_p_same = np.exp(full[ids])  # fresh prob of the stored classes
    max_dp = float(np.max(np.abs(s_p - f_p_same)))
    top_ids = fresh_ids[:k].astype(np.int64)
    kl = _sparse_kl(full, ids, s_p)
    # Entries the encoding stores as equal values may come back in id order: a tie too.
    tie = TIE_DP + quant_step(encoding, k)
    recoded = source_encoding is not None and source_encoding != encoding
    if recoded:
        tie = tie + quant_step(str(source_encoding), k)
    # ids agreement: stored entries with p > 0 whose class is in the fresh top-K, or ties
    # with its K-th (the encoding cannot order those).
    nonzero = s_p > 0
    p_kth = math.exp(full[top_ids[-1]])
    inside = np.isin(ids, top_ids) | (np.exp(full[ids]) >= p_kth - tie[-1])
    agree = float(inside[nonzero].mean()) if nonzero.any() else 0.0
    swapped = [
        r
        for r in np.nonzero(top_ids != ids)[0].tolist()
        if abs(math.exp(full[ids[r]]) - math.exp(full[top_ids[r]])) > tie[r]
    ]
    top1 = not swapped or swapped[0] != 0
    if swapped:
        r = swapped[0]
        why = f"class id at rank {r} is {ids[r]}, fresh run says {top_ids[r]}"
        return _Compare(False, max_dp, why, kl, agree, top1)
    if recoded:
        detail = _copy_value_error(s_p, full[ids], (str(source_encoding), encoding))
    else:
        detail = _value_error(s_logp, s_p, full[ids], encoding)
    return _Compare(not detail, max_dp, detail, kl, agree, top1)


# --------------------------------------------------------------------------------------------
# verify


def _check_shards(store: Any) -> VerifyReport:
    """The store is complete and every shard file matches its record; the summary counts them."""
    from teacher_store.store.arrays import committed_units

    units = shard_units(store.attrs)
    if store.manifest is None:
        done = len(committed_units(store.address, units))
        return _fail(
            f"incomplete: {done}/{len(units)} shard units committed; "
            "re-run the same distill generate"
        )
    try:
        layout.check_files(store.location, store.manifest["files"])
        _check_class_ids(store, units)
    except StoreDamaged as e:
        return _fail(str(e))
    files = store.manifest["files"]
    nfiles = sum(1 for k, v in files.items() if v["size"] and k != layout.SAMPLE_DIGESTS)
    also = " (and the samples' content digests)" if layout.SAMPLE_DIGESTS in files else ""
    summary = f"{len(units)} shard units complete, {nfiles} shard files match their crc32c{also}"
    if not store.checked.meta_recorded:
        summary += f" ({legacy_note(store.address).removeprefix('note: ')})"
    return VerifyReport(True, "", summary)


def _check_class_ids(store: Any, units: list[ShardUnit]) -> None:
    """Every stored class id is one of the store's classes (decoded unit by unit, as every
    reader decodes them: :class:`~teacher_store.store.id_order.ClassIdError` otherwise)."""
    for u in units:
        sl = (slice(u.slot_start, u.slot_stop), slice(u.start, u.stop))
        ids = np.asarray(store.group["ids"][sl])
        stored_to_rank(
            ids, np.asarray(store.group["values"][sl]), store.attrs, (u.slot_start, u.start)
        )


def _scan_dataset(store: Any, data: str) -> tuple[Any, VerifyReport]:
    """(the images at ``data`` (a folder, URL or shard pattern) or None, whether they are the
    ones the store was built from: count, classes and labels, then names and sizes or, when
    both sides know it, content; and every image's content digest when the store records them)."""
    from teacher_store.images.source import open_images

    a = store.attrs
    try:
        folder = open_images(data, a.config.get("max_image_pixels"))
    except (ValueError, OSError) as e:
        return None, _fail(f"dataset: {e}")
    warning = folder.skipped_summary()
    if warning:
        print(warning, file=sys.stderr)
    diff = dataset_difference(a.dataset, folder, store.sample_digests)
    if diff:
        return folder, _fail(
            f"dataset {data} does not match the store ({diff}); pass the --data the store "
            "was built from"
        )
    try:
        digests = store.sample_digests()
    except StoreDamaged as e:
        return folder, _fail(str(e))
    if digests is None:
        return folder, VerifyReport(True, "", size_only_note(store.address).removeprefix("note: "))
    changed = digests.differences(folder.sample_digests())  # reads every image once
    if len(changed):
        first = int(changed[0])
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        return folder, _fail(
            f"dataset {data}: image {folder.where(first)} (sample "
            f"{first}){more} is not the image the store was built from (its content digest "
            "differs, same name and size); restore it, or regenerate the store"
        )
    checked = folder.with_content(digests)  # the spot check's reads are checked too
    return checked, VerifyReport(True, "", f"dataset matches ({len(folder)} images' content)")


def verify_store(
    path: str,
    data: str | None,
    fraction: float = 0.05,
    device: str = "auto",
    checkpoint: str | None = None,
) -> VerifyReport:
    """Check a store: readable, complete, checksums, dataset, and a teacher spot check.

    Stops at the first failure; see the module docstring for the spot check's tolerances.
    ``fraction`` is the share of teacher batches re-run (evenly spaced, at least one when > 0;
    0 skips the spot check). ``data=None`` checks the files alone (``--checksums-only``).
    """
    from teacher_store.store.arrays import LocalStore

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--fraction must be in [0, 1], got {fraction}")
    try:
        store = LocalStore(path, require_complete=False)
    except (ValueError, OSError) as e:
        return _fail(str(e))
    identity = _identity(store)  # what a fidelity record names (checked again at the end)
    shards = _check_shards(store)
    if not shards.ok:
        return shards
    if data is None:
        return VerifyReport(
            True, "", shards.summary + "; dataset and teacher spot check skipped (--checksums-only)"
        )
    folder, dataset = _scan_dataset(store, data)
    if not dataset.ok:
        return dataset
    head = f"{shards.summary}, {dataset.summary}"
    if fraction == 0:
        return VerifyReport(True, "", head + "; teacher spot check skipped (--fraction 0)")
    try:
        spot = _spot_check(store, folder, fraction, device, checkpoint)
    except (ValueError, OSError) as e:
        return _fail(f"spot check: {e}".splitlines()[0])
    now = _identity(store)
    if now != identity:  # the spot check compared another store than the files checked
        return _fail(
            f"store {store.address} changed while it was verified (identity {identity} → "
            f"{now or 'no manifest'}); verify it again"
        )
    measured = {
        "identity": identity,
        "fraction": fraction,
        "dataset_sha256": str(store.attrs.dataset.get("sha256", "")),
        **(spot.measured or {}),
    }
    if spot.ok:
        return VerifyReport(True, "", f"{head}; {spot.summary}", measured)
    return replace(spot, measured=measured)


def _identity(store: Any) -> str:
    """The store's identity now (the sha256 of its manifest; "" without one)."""
    from teacher_store.store.blockfmt import store_identity

    try:
        return store_identity(layout.manifest_bytes(store.location))
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------------------------
# teacher spot check


def _valid_counts(store: Any, units: list[ShardUnit]) -> list[int]:
    """Valid views per unit."""
    return [int(_unit_valid(store.group, u).sum()) for u in units]


def _locate(counts: list[int], chosen: list[int]) -> dict[int, list[int]]:
    """Map global batch indices to {unit index: [batch within the unit]}."""
    wanted: dict[int, list[int]] = {}
    start = 0
    for ui, c in enumerate(counts):
        for g in chosen:
            if start <= g < start + c:
                wanted.setdefault(ui, []).append(g - start)
        start += c
    return wanted


def _rebuild_teacher(store: Any, folder: Any, dev: Any, checkpoint: str | None) -> Any:
    """(the store's teacher on ``dev``, its weights' sha256), or a failed report when its
    weights changed."""
    from models import create_teacher
    from teacher_store.generate import GenerateConfig
    from teacher_store.teacher import Teacher

    a = store.attrs
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
    base = {"data": folder.location, "out": store.address, **a.config}
    cfg = GenerateConfig.from_dict(base)
    # All classes (see _compare_view), and the digest of the weights actually loaded.
    return Teacher(model, info, dev, a.num_classes, cfg.amp), info.weights_sha256


def _rerun_unit(
    store: Any, unit: ShardUnit, local: list[int], replay: Any, teacher: Any
) -> list[tuple[int, int, _Compare]]:
    """Re-run the teacher on batches ``local`` of ``unit``; compare each view with the store."""
    import torch

    a = store.attrs
    u = unit
    batches = unit_batches(u, _unit_valid(store.group, u), a)
    ids, vals = stored_to_rank(
        np.asarray(store.group["ids"][u.slot_start : u.slot_stop, u.start : u.stop]),
        np.asarray(store.group["values"][u.slot_start : u.slot_stop, u.start : u.stop]),
        a,
        at=(u.slot_start, u.start),
    )
    source = (a.copied_from or {}).get("value_encoding")  # a copy's values: rounded twice?
    results = []
    for b in local:
        views = [replay.render(slot, sample).pixels for slot, sample in batches[b]]
        fresh_ids, fresh_logp = teacher(torch.stack(views))
        for v, (slot, sample) in enumerate(batches[b]):
            j, s = slot - u.slot_start, sample - u.start
            cmp = _compare_view(
                ids[j, s], vals[j, s], fresh_ids[v], fresh_logp[v], a.value_encoding, source
            )
            results.append((slot, sample, cmp))
    return results


@dataclass(frozen=True)
class _SpotRun:
    """What the judgement of a spot check needs besides the comparisons."""

    where: str  # "N of M teacher batches (V views) re-run on DEV"
    encoding: str
    same_device: bool  # the strict test decides (same device type, decoder and batches)
    gen_dev: str | None
    dev_type: str
    folder: Any
    why_tolerant: str = ""  # why the cross-device tolerance applies ("": another device)


def _view_name(run: _SpotRun, slot: int, sample: int) -> str:
    return f"view {slot} of sample {sample} ({printable_path(run.folder.key(sample))})"


def _judge(results: list[tuple[int, int, _Compare]], run: _SpotRun) -> VerifyReport:
    """The strict test, then (on another device type or decoder) the cross-device test."""
    nviews = len(results)
    max_dp = max(res.max_dp for _, _, res in results)
    failed = [res for res in results if not res[2].strict_ok]
    if not failed:
        return VerifyReport(
            True,
            "",
            f"{run.where}: top-K ids equal, values within the {run.encoding} error "
            f"(max |Δp| {max_dp:.1e})",
        )
    if run.same_device:
        slot, sample, first = failed[0]
        return _fail(
            f"spot check: {_view_name(run, slot, sample)} differs from a fresh teacher run on "
            f"the same device type: {first.detail}; max |Δp| {max_dp:.2e} over {nviews} views; "
            "the store does not match this teacher/replay code: regenerate it"
        )
    return _judge_cross_device(results, run, len(failed))


def _judge_cross_device(
    results: list[tuple[int, int, _Compare]], run: _SpotRun, nfailed: int
) -> VerifyReport:
    nviews = len(results)
    dps = np.array([res.max_dp for _, _, res in results])
    max_dp = float(dps.max())
    median = float(np.median(dps))
    outliers = int(np.sum(dps > CROSS_DEVICE_VIEW_DP))
    if median <= CROSS_DEVICE_MEDIAN_DP and outliers <= CROSS_DEVICE_OUTLIERS * nviews:
        return VerifyReport(
            True,
            "",
            f"{run.where}: {run.why_tolerant or f'store device {run.gen_dev}'}, so compared "
            "with the cross-device "
            f"tolerance: median per-view max |Δp| {median:.1e} <= {CROSS_DEVICE_MEDIAN_DP}, "
            f"{outliers} view(s) over {CROSS_DEVICE_VIEW_DP} (max {max_dp:.1e}); {nfailed} of "
            f"{nviews} views outside the same-device bound",
        )
    slot, sample, worst = results[int(np.argmax(dps))]
    return _fail(
        f"spot check: {_view_name(run, slot, sample)} differs from a fresh teacher run (max "
        f"|Δp| {worst.max_dp:.2e}; {worst.detail or 'ids agree'}); {outliers} of {nviews} views "
        f"over the cross-device tolerance {CROSS_DEVICE_VIEW_DP}, median per-view max |Δp| "
        f"{median:.2e} (store device {run.gen_dev}, verify device {run.dev_type}); the store "
        "does not match this teacher/replay code: regenerate it"
    )


def _spot_check(
    store: Any, folder: Any, fraction: float, device: str, checkpoint: str | None
) -> VerifyReport:
    """Re-run the teacher on about ``fraction`` of the store's batches and judge the results."""
    import torch

    from models.runtime import resolve_device
    from teacher_store.views.replay import Replayer

    a = store.attrs
    units = shard_units(a)
    batch_size = int(a.config["batch_size"])
    valid = _valid_counts(store, units)
    counts = [-(-v // batch_size) for v in valid]  # teacher batches per unit
    total = sum(counts)
    chosen = _pick(total, fraction)
    if not chosen:
        return VerifyReport(True, "", "no valid views to re-run the teacher on")
    dev = resolve_device(device)
    if a.config.get("threads"):  # the store's thread count: CPU float results depend on it
        torch.set_num_threads(int(a.config["threads"]))
    replay = Replayer(folder, a, device=dev)  # nvJPEG where the store used it and dev is CUDA
    # Another device, another image decoder than the store's, or (a copy) other teacher
    # batches than the generation's: compare with tolerances.
    kept = bool((a.copied_from or {}).get("batches_kept", True))
    same_device = a.device_type == dev.type and replay.exact and kept
    why = "" if kept else "a copy whose shard units are not its generation's (other batches)"
    rebuilt = _rebuild_teacher(store, folder, dev, checkpoint)
    if isinstance(rebuilt, VerifyReport):
        return rebuilt
    teacher, weights = rebuilt
    results: list[tuple[int, int, _Compare]] = []
    for ui, local in _locate(counts, chosen).items():
        results += _rerun_unit(store, units[ui], local, replay, teacher)
    where = f"{len(chosen)} of {total} teacher batches ({len(results)} views) re-run on {dev.type}"
    source = (a.copied_from or {}).get("value_encoding", a.value_encoding)
    encoding = a.value_encoding if source == a.value_encoding else f"{source} + {a.value_encoding}"
    run = _SpotRun(where, encoding, same_device, a.device_type, dev.type, folder, why)
    report = _judge(results, run)
    measured = _measured(results, sum(valid), (len(chosen), total), weights, run)
    return replace(report, measured=measured)


def _measured(
    results: list[tuple[int, int, _Compare]],
    views: int,
    batches: tuple[int, int],
    weights: str | None,
    run: _SpotRun,
) -> dict[str, Any]:
    """What a spot check measured, as a fidelity record keeps it."""
    cmp = [c for _, _, c in results]
    dps = np.array([c.max_dp for c in cmp])
    return {
        "views_rerun": len(cmp),
        "views_total": views,
        "fraction_rerun": len(cmp) / views if views else 0.0,
        "batches_rerun": batches[0],
        "batches_total": batches[1],
        "ids_agreement": float(np.mean([c.ids_agree for c in cmp])),
        "top1_agreement": float(np.mean([c.top1 for c in cmp])),
        "max_dp": float(dps.max()),
        "median_max_dp": float(np.median(dps)),
        "kl": float(np.mean([c.kl for c in cmp])),
        "teacher_weights_sha256": weights,
        "device": run.dev_type,
        "tolerance": "same-device" if run.same_device else "cross-device",
    }


__all__ = [
    "CROSS_DEVICE_MEDIAN_DP",
    "CROSS_DEVICE_OUTLIERS",
    "CROSS_DEVICE_VIEW_DP",
    "F16_HALF_ULP_REL",
    "F16_SUBNORMAL_ABS",
    "SAME_DEVICE_LOGP_SLACK",
    "SAME_DEVICE_P_SLACK",
    "TIE_DP",
    "U8_HALF_STEP",
    "VerifyReport",
    "unit_batches",
    "verify_store",
]
