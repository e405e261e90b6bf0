"""Store size and KD fidelity of the value encodings, against the TinyViT layout.

On the bundled demo photos with the real EfficientNet-Lite0 teacher at its 224 px input:

1. ``run_generate`` builds a K=100, logprob-f16 store (R views per photo, default recipe).
2. The same views are replayed (codec + render) and the teacher re-run on the *same* batches
   (``verify.unit_batches``) to get the full 1000-class softmax; re-encoding its top-100
   reproduces the generated store byte for byte, which is checked. From those outputs the other
   stores (K=10/100 x logprob-f16/prob-u8) are written with the store's own writer
   (``create_store`` / ``write_unit`` / ``finalize``), so every byte count is a real store.
3. TinyViT's layout is written too, raw: per view an int32 seed, K int16 ids, K float16
   probabilities (4 + 4K bytes).
4. Fidelity, per encoding: max |Δp| of the decoded top-K against the float32 top-K, and the mean
   KL(full teacher softmax || reconstructed sparse target), where the reconstruction puts the
   decoded top-K probabilities on their classes and spreads the residual mass 1 - sum uniformly
   over the other classes (entries decoded as 0 count as "other"). The float32 top-K row is the
   truncation-only reference.

The demo has N=17 photos, so a chunk (one view slot x N samples) holds only 17 views and the
fixed per-chunk bytes (blosc header, crc32c, shard-index entry: ~40 B per chunk per array) are
a large share. The "1 chunk" column writes the same views as one view slot of R*N samples with a
single chunk, which is what a real dataset's 1024-sample chunks approach.

Usage: ``python bench/store_size.py [--views 16] [--threads 1] [--keep DIR]``.
Goal: <= 16 B/view at K=10 with max |Δp| <= 2e-3.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import machine, set_threads, table, timed

ENCODINGS = ("logprob-f16", "prob-u8")


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
        for batch in unit_batches(u, v, int(a.config["batch_size"])):
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


def _write_store(out: Path, base: Any, ids: Any, logp: Any, valid: Any, k: int, enc: str) -> None:
    """Write a store from teacher outputs with the store's own writer (as generate does)."""
    import numpy as np

    from teacher_store.store.arrays import create_store, finalize, write_unit
    from teacher_store.store.layout import shard_units
    from teacher_store.store.schema import StoreAttrs, encode_values

    r, n = valid.shape
    d = base.to_dict()
    d.update(topk=k, value_encoding=enc, config={**base.config, "topk": k, "value_encoding": enc})
    if (r, n) != (base.views, base.num_samples):  # the one-chunk layout: 1 slot x R*N samples
        d.update(views=r, num_samples=n, chunk_samples=n, shard_samples=n, shard_views=1)
    attrs = StoreAttrs.from_dict(d)
    create_store(out, attrs)
    units = shard_units(attrs)
    for u in units:
        sl = (slice(u.slot_start, u.slot_stop), slice(u.start, u.stop))
        v = valid[sl]
        write_unit(
            out,
            u,
            np.where(v[..., None], ids[sl][..., :k], 0).astype(attrs.ids_dtype),
            np.where(v[..., None], encode_values(logp[sl][..., :k], enc), 0).astype(
                attrs.values_dtype
            ),
            v.astype(np.uint8),
            [],
        )
    finalize(out, units)


def _tree_digest(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "zarr.json"
    }


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


def _variants(order_ids: Any, logp: Any, k: int) -> list[list[Any]]:
    """B/view of id/value codec variants on all views as one chunk (Blosc zstd-7 directly).

    Not store formats: evidence for what a layout change would buy. "id order" sorts each
    view's ids ascending (the rank is then implied by the values, ties broken by id) and stores
    the first id and the gaps.
    """
    import numpy as np
    from numcodecs import Blosc

    v = order_ids.shape[0]
    ids = order_ids[:, :k].astype(np.int64)
    q = np.rint(np.exp(logp[:, :k].astype(np.float32)) * 255.0).astype(np.uint8)
    o = np.argsort(ids, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(ids, o, 1)
    gaps = np.diff(sorted_ids, axis=1, prepend=0).astype(np.uint16)
    q_by_id = np.take_along_axis(q, o, 1)

    def size(a: Any, shuffle: int) -> float:
        return len(Blosc(cname="zstd", clevel=7, shuffle=shuffle).encode(a.copy())) / v

    sh, bit, no = Blosc.SHUFFLE, Blosc.BITSHUFFLE, Blosc.NOSHUFFLE
    rank_ids, rank_ids_bit = size(ids.astype(np.uint16), sh), size(ids.astype(np.uint16), bit)
    gap_ids = size(gaps, sh)
    q_rank_bit, q_rank_no, q_id_no = size(q, bit), size(q, no), size(q_by_id, no)
    return [
        ["ids rank order, u16 byte-shuffle (the store now)", k, f"{rank_ids:.1f}"],
        ["ids rank order, u16 bitshuffle", k, f"{rank_ids_bit:.1f}"],
        ["ids sorted + gaps, u16 byte-shuffle", k, f"{gap_ids:.1f}"],
        ["values prob-u8 rank order, bitshuffle (the store now)", k, f"{q_rank_bit:.1f}"],
        ["values prob-u8 rank order, no shuffle", k, f"{q_rank_no:.1f}"],
        ["values prob-u8 in sorted-id order, no shuffle", k, f"{q_id_no:.1f}"],
        [
            "=> ids sorted + gaps + values u8 (id order), without valid",
            k,
            f"{gap_ids + q_id_no:.1f}",
        ],
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--views", type=int, default=16, help="view slots R per photo (default 16)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--keep", help="keep the stores in this directory")
    args = ap.parse_args()
    set_threads(args.threads)

    import numpy as np

    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.images.demo_data import write_demo_data
    from teacher_store.info import store_info
    from teacher_store.store.schema import decode_values, encode_values
    from teacher_store.views.codec import view_seed

    print(machine())
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="store_size_"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    try:
        data = work / "images"
        write_demo_data(data)
        gen = work / "k100-logprob-f16"
        cfg = GenerateConfig(
            data=str(data),
            out=str(gen),
            views=args.views,
            topk=100,
            value_encoding="logprob-f16",
            batch_size=args.batch_size,
            workers=0,
            progress=False,
            overwrite=True,
        )
        with timed("run_generate K=100", times):
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

        # The writer path reproduces run_generate's bytes.
        check = work / "check-k100-logprob-f16"
        _write_store(check, a, ids, logp, valid, 100, "logprob-f16")
        same = _tree_digest(check) == _tree_digest(gen)
        print(f"store writer on the re-run outputs == run_generate's store: {same}")
        if not same:
            print("  (teacher outputs differ between the two runs; sizes below still hold)")

        order_ids = ids[valid]  # [V, C] class ids in rank order
        p_full = np.zeros(order_ids.shape, np.float64)  # [V, C] in class-id order
        np.put_along_axis(p_full, order_ids, np.exp(logp[valid].astype(np.float64)), axis=1)
        rows = []
        goal = None
        for k in (10, 100):
            top_ids = order_ids[:, :k]
            p32 = np.exp(logp[valid][:, :k].astype(np.float32)).astype(np.float64)
            mass = float(p32.sum(1).mean())
            dp, kl = _fidelity(p32, top_ids, p_full, p32)
            rows.append(
                ["float32 top-K (reference, not a format)", k, "-", "-", f"{dp:.2e}", f"{kl:.4f}"]
            )
            # TinyViT: int32 seed + K int16 ids + K float16 probabilities per view, raw.
            rec = np.dtype([("seed", "<i4"), ("ids", "<i2", (k,)), ("probs", "<f2", (k,))])
            arr = np.zeros(nviews, rec)
            slots, samples = np.nonzero(valid)
            arr["seed"] = [
                view_seed(a.store_seed, int(s), int(i)) & 0x7FFFFFFF
                for s, i in zip(slots, samples, strict=True)
            ]
            arr["ids"] = top_ids
            arr["probs"] = p32.astype(np.float16)
            tv = work / f"tinyvit-k{k}.bin"
            arr.tofile(tv)
            tv_bpv = tv.stat().st_size / nviews
            dp, kl = _fidelity(arr["probs"].astype(np.float64), top_ids, p_full, p32)
            rows.append(
                [
                    "TinyViT raw (4 + 4K B)",
                    k,
                    f"{tv_bpv:.1f}",
                    f"{tv_bpv:.1f}",
                    f"{dp:.2e}",
                    f"{kl:.4f}",
                ]
            )
            for enc in ENCODINGS:
                out = work / f"k{k}-{enc}"
                if (k, enc) != (100, "logprob-f16"):
                    _write_store(out, a, ids, logp, valid, k, enc)
                one = work / f"k{k}-{enc}-1chunk"
                _write_store(
                    one,
                    a,
                    ids.reshape(1, r * n, c),
                    logp.reshape(1, r * n, c),
                    valid.reshape(1, r * n),
                    k,
                    enc,
                )
                info, info1 = store_info(str(out)), store_info(str(one))
                p_hat = np.exp(
                    decode_values(encode_values(logp[valid][:, :k], enc), enc).astype(np.float64)
                )
                dp, kl = _fidelity(p_hat, top_ids, p_full, p32)
                per = info["bytes_per_view_per_array"]
                per1 = info1["bytes_per_view_per_array"]
                rows.append(
                    [
                        f"ours {enc} (ids {per['ids']:.1f} + values {per['values']:.1f} + "
                        f"valid {per['valid']:.1f}; 1 chunk: {per1['ids']:.1f} + "
                        f"{per1['values']:.1f} + {per1['valid']:.1f})",
                        k,
                        f"{info['bytes_per_view']:.1f}",
                        f"{info1['bytes_per_view']:.1f}",
                        f"{dp:.2e}",
                        f"{kl:.4f}",
                    ]
                )
                if k == 10 and enc == "prob-u8":
                    goal = (info["bytes_per_view"], info1["bytes_per_view"], dp)
            print(f"K={k}: mean top-K mass of the float32 teacher {mass:.3f}")
        print()
        print(
            table(
                [
                    "layout",
                    "K",
                    f"B/view as stored (chunk = {n} views)",
                    f"B/view, 1 chunk of {r * n} views",
                    "max |Δp| vs f32 top-K",
                    "mean KL(full || sparse)",
                ],
                rows,
            )
        )
        if goal:
            b, b1, dp = goal
            ok = b1 <= 16 and dp <= 2e-3
            print(
                f"\ngoal <= 16 B/view at K=10 with max |Δp| <= 2e-3: prob-u8 reaches "
                f"{b:.1f} B/view as stored ({b1:.1f} in one chunk), max |Δp| {dp:.2e} -> "
                f"{'met' if ok else 'NOT met'} (judged on the one-chunk size)"
            )
        variants = _variants(order_ids, logp[valid], 10) + _variants(order_ids, logp[valid], 100)
        print(
            f"\ncodec variants, all {nviews} views as one chunk (Blosc zstd-7, not store formats):"
        )
        print(table(["variant", "K", "B/view"], variants))
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
