"""Store size and KD fidelity: schema v1, schema v2 and TinyViT's layout side by side.

On the bundled demo photos with the real EfficientNet-Lite0 teacher at its 224 px input:

1. ``run_generate`` builds a K=100 store with the defaults (schema v2, R views per photo).
2. The same views are replayed (codec + render) and the teacher re-run on the *same* batches
   (``verify.unit_batches``) to get the full 1000-class softmax; re-encoding its top-100
   reproduces the generated store byte for byte, which is checked. From those outputs the
   other stores (K=10/100 x v1 logprob-f16/prob-u8; v2 prob-u8/prob-u8x3 in the first v2 id
   layout, ``head-sorted``, and in the default, ``head-sorted-pad`` with the teacher's class
   order) are written with the store's own writer (``create_store`` / ``write_unit`` /
   ``finalize``), each version at its own default chunking (v1: one view slot x up to 1,024
   samples per chunk; v2: at least 1,024 views per chunk, 64 slots x 17 photos at R=64), so
   every byte count is a real store.
3. TinyViT's layout is written too, raw: per view an int32 seed, K int16 ids, K float16
   probabilities (4 + 4K bytes).
4. Fidelity, per store, read back through its reader: max |Δp| of the decoded top-K against
   the teacher's float32 probabilities of the same classes, the mean KL(full teacher softmax ||
   reconstructed sparse target) (the decoded top-K on their classes, the residual mass
   1 - sum spread uniformly over the other classes), and whether the top-1 id is exact. The
   float32 top-K row is the truncation-only reference.
5. The sizes extrapolated to ImageNet-1k (1,281,167 images) and ImageNet-22k (14,197,122) at
   50 views each.

Usage: ``python bench/store_size.py [--views 64] [--threads 1] [--keep DIR]``.
Goals (issue 12): <= 12 B/view at K=10 and <= 80 B/view at K=100 with every |Δp| <= 2e-3 and
the KL within 0.01 nats of float32 top-K.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, set_threads, table, timed


def _full_outputs(store_path: Path, data: Path) -> dict[str, Any]:
    """Re-run the teacher on the store's own batches; full sorted log-probs [R, N, C]."""
    import numpy as np
    import torch

    from models import create_teacher
    from teacher_store.generate import GenerateConfig
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.store.arrays import LocalStore
    from teacher_store.store.layout import shard_units
    from teacher_store.teacher import Teacher
    from teacher_store.verify import unit_batches
    from teacher_store.views.codec import decode
    from teacher_store.views.recipe import Recipe
    from teacher_store.views.replay import render_view

    store = LocalStore(store_path)
    a = store.attrs
    folder = ImageFolder.scan(data)
    images = [folder.load(i) for i in range(len(folder))]
    model, info = create_teacher(a.config["teacher"])
    cfg = GenerateConfig.from_dict({**a.config, "data": str(data), "out": str(store_path)})
    teacher = Teacher(model, info, torch.device("cpu"), a.num_classes, cfg.amp)
    recipe = Recipe.from_dict(a.recipe)
    size = int(a.teacher["input_size"][1])
    r, n, c = a.views, a.num_samples, a.num_classes
    ids = np.zeros((r, n, c), np.int64)
    logp = np.zeros((r, n, c), np.float32)
    valid = np.zeros((r, n), bool)
    for u in shard_units(a):
        v = np.asarray(store.group["valid"][u.slot_start : u.slot_stop, u.start : u.stop]) != 0
        for batch in unit_batches(u, v, a):
            views = []
            for slot, sample in batch:
                p = decode(a.store_seed, slot, sample, n, recipe, r)
                partner = images[p.mix.partner] if p.mix is not None else None
                views.append(render_view(images[sample], p, size, partner=partner))
            bi, bl = teacher(torch.stack(views))
            for j, (slot, sample) in enumerate(batch):
                ids[slot, sample], logp[slot, sample] = bi[j], bl[j]
                valid[slot, sample] = True
    return {"attrs": a, "ids": ids, "logp": logp, "valid": valid}


# Schema version 1's layout: rank order, one view slot per chunk (1,024 samples), 4 per shard.
V1_LAYOUT = {
    "schema_version": 1, "id_order": "rank", "class_order": None, "chunk_views": 1,
    "shard_views": 4,
}  # fmt: skip
# Version 2's first id layout (head-sorted gaps in class-id order, no padding), for comparison.
V2_HEAD_SORTED = {"id_order": "head-sorted", "class_order": None}


def _write_store(
    out: Path, base: Any, ids: Any, logp: Any, valid: Any, k: int, enc: str, **layout: Any
) -> None:
    """Write a store from teacher outputs with the store's own writer (as generate does);
    ``layout`` overrides attrs (the generated store's layout, i.e. version 2, by default)."""
    import numpy as np

    from teacher_store.store.layout import ShardUnit
    from teacher_store.store.schema import StoreAttrs, encode_values
    from teacher_store.testing import write_store

    r, n = valid.shape
    d = base.to_dict()
    d.update(topk=k, value_encoding=enc, config={**base.config, "topk": k, "value_encoding": enc})
    d.update(layout)
    # The content digests' record stays with the generated store: a rewrite keeps no digests file.
    d["dataset"] = {key: v for key, v in d["dataset"].items() if key != "content"}
    if d["schema_version"] == 1:
        d.update(chunk_samples=min(1024, n), shard_samples=min(4096, n), shard_views=min(4, r))
    attrs = StoreAttrs.from_dict(d)

    def targets(u: ShardUnit) -> tuple[Any, ...]:
        sl = (slice(u.slot_start, u.slot_stop), slice(u.start, u.stop))
        v = valid[sl]
        ids_k = np.where(v[..., None], ids[sl][..., :k], 0).astype(attrs.ids_dtype)
        values = encode_values(logp[sl][..., :k], enc)
        values = np.where(v[..., None], values, 0).astype(attrs.values_dtype)
        return ids_k, values, v.astype(np.uint8)

    write_store(out, attrs, targets, overwrite=False)


def _tree_digest(root: Path) -> dict[str, bytes]:
    """The array shard files' bytes (metadata and bookkeeping, e.g. generation stats, aside)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.name != "zarr.json"
        and not p.relative_to(root).as_posix().startswith("_distill/")
    }


def _read_back(path: Path, valid: Any) -> tuple[Any, Any]:
    """Every valid view of a store read back through its reader: rank-order ids and p [V, K]."""
    import numpy as np

    from teacher_store.store.arrays import LocalStore

    store = LocalStore(path)
    blocks = [store.read_block(r, 0, store.attrs.num_samples) for r in range(store.attrs.views)]
    ids = np.stack([b.ids for b in blocks])[valid].astype(np.int64)
    p = np.exp(np.stack([b.logprobs() for b in blocks])[valid].astype(np.float64))
    return ids, p


def _fidelity_of(ids: Any, p_hat: Any, p_full: Any) -> tuple[float, float]:
    """(max |Δp|, mean KL) of decoded (ids, p_hat) [V, K] against the teacher's p_full [V, C]."""
    import numpy as np

    p32 = np.take_along_axis(p_full, ids, 1)
    return float(np.abs(p_hat - p32).max()), _fidelity(p_hat, ids, p_full, p_hat)[1]


def _fidelity(p_hat: Any, ids: Any, p_full: Any, p32: Any) -> tuple[float, float]:
    """(max |p_hat - p32|, mean KL(p_full || reconstruction of (ids, p_hat)))."""
    import numpy as np

    v, c = p_full.shape
    max_dp = float(np.abs(p_hat - p32).max())
    q = np.zeros((v, c), np.float64)
    np.put_along_axis(q, ids, p_hat, axis=1)
    kept = q > 0
    rest = np.clip(1.0 - q.sum(1), 1e-12, None)
    others = c - kept.sum(1)
    q = np.where(kept, q, (rest / np.maximum(others, 1))[:, None])
    q /= q.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sum(np.where(p_full > 0, p_full * (np.log(p_full) - np.log(q)), 0.0), axis=1)
    return max_dp, float(kl.mean())


GB_IN1K = 1_281_167 * 50 / 1e9  # ImageNet-1k train x 50 views: bytes per (B/view) in GB
GB_IN22K = 14_197_122 * 50 / 1e9


def _size_row(name: str, k: int, bpv: float, dp: float, kl: float) -> list[Any]:
    return [
        name, k, f"{bpv:.1f}", f"{dp:.2e}", f"{kl:.4f}", f"{bpv * GB_IN1K:.1f}",
        f"{bpv * GB_IN22K:.0f}",
    ]  # fmt: skip


def _tinyvit_row(work: Path, a: Any, valid: Any, top_ids: Any, p32: Any, p_full: Any) -> Any:
    """TinyViT's layout, raw: int32 seed + K int16 ids + K float16 probabilities per view."""
    import numpy as np

    from teacher_store.views.codec import view_seed

    k, nviews = top_ids.shape[1], int(valid.sum())
    rec = np.dtype([("seed", "<i4"), ("ids", "<i2", (k,)), ("probs", "<f2", (k,))])
    arr = np.zeros(nviews, rec)
    slots, samples = np.nonzero(valid)
    arr["seed"] = [
        view_seed(a.store_seed, int(s), int(i)) & 0x7FFFFFFF
        for s, i in zip(slots, samples, strict=True)
    ]
    arr["ids"], arr["probs"] = top_ids, p32.astype(np.float16)
    tv = work / f"tinyvit-k{k}.bin"
    arr.tofile(tv)
    dp, kl = _fidelity(arr["probs"].astype(np.float64), top_ids, p_full, p32)
    return _size_row("TinyViT raw (4 + 4K B)", k, tv.stat().st_size / nviews, dp, kl)


def _store_rows(work: Path, full: dict[str, Any], p_full: Any, k: int) -> list[list[Any]]:
    """v1 (logprob-f16, prob-u8) and v2 (prob-u8, prob-u8x3) stores of the same outputs."""
    from teacher_store.info import store_info

    a, ids, logp, valid = full["attrs"], full["ids"], full["logp"], full["valid"]
    rows = []
    layouts: list[tuple[int, str, dict[str, Any]]] = [
        (1, "logprob-f16", V1_LAYOUT), (1, "prob-u8", V1_LAYOUT),
        (2, "prob-u8", V2_HEAD_SORTED), (2, "prob-u8x3", V2_HEAD_SORTED),
        (2, "prob-u8", {}), (2, "prob-u8x3", {}),
    ]  # fmt: skip
    for version, enc, layout in layouts:
        out = work / f"v{version}-k{k}-{enc}-{layout.get('id_order', 'default')}"
        _write_store(out, a, ids, logp, valid, k, enc, **layout)
        info = store_info(str(out))
        dec_ids, p_hat = _read_back(out, valid)
        dp, kl = _fidelity_of(dec_ids, p_hat, p_full)
        top1 = bool((dec_ids[:, 0] == ids[valid][:, 0]).all())
        per = info["bytes_per_view_per_array"]
        views_per_chunk = info["layout"]["chunk_samples"] * info["layout"]["chunk_views"]
        name = (
            f"v{version} {info['layout']['id_order']} {enc} ({views_per_chunk} views/chunk; "
            f"ids {per['ids']:.1f} + values "
            f"{per['values']:.1f} + valid {per['valid']:.1f}; top-1 exact: {top1})"
        )
        rows.append(_size_row(name, k, info["bytes_per_view"], dp, kl))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--views", type=int, default=64, help="view slots R per photo (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--keep", help="keep the stores in this directory")
    args = ap.parse_args()
    set_threads(args.threads)

    import numpy as np

    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.images.demo_data import write_demo_data

    print(machine())
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="store_size_"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    try:
        data = work / "images"
        write_demo_data(data)
        gen = work / "k100-default"
        cfg = GenerateConfig(
            data=str(data), out=str(gen), views=args.views, topk=100,
            batch_size=args.batch_size, workers=0, progress=False, overwrite=True,
        )  # fmt: skip
        with timed("run_generate K=100 (defaults: schema v2)", times):
            run_generate(cfg)
        with timed("teacher re-run for the full softmax", times):
            full = _full_outputs(gen, data)
        a, ids, logp, valid = full["attrs"], full["ids"], full["logp"], full["valid"]
        r, n, c = ids.shape
        nviews = int(valid.sum())
        print(
            f"demo photos: N={n}, R={r} views at {a.teacher['input_size'][1]} px "
            f"-> {nviews} valid views, teacher {a.teacher['name']} ({c} classes)"
        )
        check = work / "check-k100"
        _write_store(check, a, ids, logp, valid, 100, a.value_encoding)
        same = _tree_digest(check) == _tree_digest(gen)
        print(f"store writer on the re-run outputs == run_generate's shard files: {same}")

        order_ids = ids[valid]  # [V, C] class ids in rank order
        p_full = np.zeros(order_ids.shape, np.float64)  # [V, C] in class-id order
        np.put_along_axis(p_full, order_ids, np.exp(logp[valid].astype(np.float64)), axis=1)
        rows = []
        for k in (10, 100):
            top_ids = order_ids[:, :k]
            p32 = np.exp(logp[valid][:, :k].astype(np.float32)).astype(np.float64)
            dp, kl = _fidelity(p32, top_ids, p_full, p32)
            rows.append(["float32 top-K (reference, not a format)", k, "-", f"{dp:.2e}",
                         f"{kl:.4f}", "-", "-"])  # fmt: skip
            rows.append(_tinyvit_row(work, a, valid, top_ids, p32, p_full))
            rows += _store_rows(work, full, p_full, k)
        print()
        print(
            table(
                ["layout", "K", "B/view", "max |Δp| vs f32", "mean KL(full || sparse)",
                 "IN-1k x 50 views, GB", "IN-22k x 50 views, GB"],
                rows,
            )
        )  # fmt: skip
        print(
            "timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
            file=sys.stderr,
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
