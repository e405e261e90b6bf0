"""ImageNet-scale simulation: a store of N = 1,281,167 samples x R = 50 views x K = 10.

The store is written through the real writer (``create_store``, ``write_unit`` per shard
unit with the generation's encoding and KL stats, ``finalize``) from synthetic teacher outputs
whose statistics match the real Lite0 teacher on the demo photos (``bench/scale_teacher.py``:
top-K mass, entropy, top-K overlap across views of one image, id spread; measured with
``--calibrate``, else the constants below, measured by it on this machine). Then, each step in
its own process so that its peak RSS (``VmHWM``) is its own:

- ``write``: views/s and store bytes;
- ``info``: ``distill info``;
- ``verify``: ``distill verify --checksums-only`` (every shard file's size, crc32c, sha256);
- ``serve``: a real uvicorn (``api.main:app``, one worker, loopback) opening the store, and the
  HTTP client (``teacher_store.client``) reading one full view slot as blocks of the server's
  largest size; peak RSS of the server and of the client;
- ``epoch``: one student epoch of target gathering: ``split_samples``, the epoch's pair-aware
  order (``student.loader.epoch_plan``), and ``TargetCache.gather`` per batch with the
  trainer's read-ahead (``open_targets``: the client's block cache and prefetch threads);
  no images, no model; ``epoch_service``: the same through a real uvicorn's block endpoint;
- ``tree``: ``ImageFolder.scan`` + ``fingerprint`` of a real tree of ``--files`` small files
  (tiny PNGs), extrapolated linearly to N files (said so in the output).
- ``index``: the ImageFolder scan's core (listed entries -> the flat ``SampleTable``) on a
  synthetic listing of ``--index-samples`` files (default ImageNet-22k: 14,197,122 in 21,841
  classes, ``n01440764/n01440764_10026.JPEG``), its fingerprint and its ``.npz`` save, at the
  full N (goal: peak RSS <= 1 GiB); ``index_load``: ``np.load`` + ``SampleTable.from_npz``
  of that file; ``index_tuples``: the tuple-based scan it replaced, on the same listing at
  ``--index-tuple-samples``, its RSS extrapolated linearly to the full N (said so).
  ``tar_index``: a tar shard index of that listing (what ``distill images pack`` of such a
  folder writes: the table with content digests, each sample's shard and data offset) built
  from arrays, no tar written, saved beside ``--tar-shards`` sparse shard files of the
  recorded sizes; ``tar_index_load``: ``TarShards.open`` of them (the index load with every
  check, the shards' listing) and its fingerprint, at the full N (goal: peak RSS <= 1 GiB).
  ``--index-samples 3000 --index-classes 7`` is the quick mode (tests/bench/test_scale.py).

``--fraction F`` runs the store steps at N x F samples and extrapolates time linearly (said so).
``--store-root`` is a local folder or ``s3://bucket/prefix`` (with ``AWS_ENDPOINT_URL``;
``--moto`` starts a moto S3 server on loopback and points the steps at it).

Usage: ``PYTHONPATH=. .venv/bin/python bench/scale.py [--fraction 1] [--store-root DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # bench/ is sys.path[0]; it puts the repo first on sys.path

IN1K = 1_281_167
IN22K = 14_197_122
STORE = "in1k"  # the store's folder under --store-root (a name the service serves)
# Lite0 on the 17 demo photos x 16 views, default recipe, 224 px (scale_teacher.measure_real,
# run by --calibrate; last run on this machine):
REAL_STATS = {
    "topk_mass": 0.5765,
    "entropy": 3.9232,
    "overlap": 0.1231,
    "top1_agree": 0.0760,
    "id_spread": 175.5,
}
# scale_teacher.fit(REAL_STATS): refitted only with --calibrate (the fit takes seconds).
FITTED = {
    "zipf": 0.7338,
    "noise": 2.0,
    "background": -4.5,
    "spread": 42.688,
    "near": 0.56,
    "pool": 181,
    "classes": 1000,
}
STEPS = (
    "write",
    "info",
    "verify",
    "serve",
    "epoch",
    "epoch_service",
    "order",
    "tree",
    "index",
    "index_load",
    "index_tuples",
    "tar_index",
    "tar_index_load",
)
INDEX_STEPS = (
    "index",
    "index_load",
    "index_tuples",
    "tar_index",
    "tar_index_load",
)  # at --index-samples, never scaled
IN22K_CLASSES = 21_841
STORE_STEPS = (
    "info",
    "verify",
    "serve",
    "epoch",
    "epoch_service",
)  # they read the store the write step wrote
GIB = 1 << 30
C = 1000


def run_child(step: str, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``step`` in a fresh interpreter; its JSON result (with seconds and peak_rss)."""
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "scale_steps.py"), step]
    r = subprocess.run(
        cmd,
        input=json.dumps(cfg),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cfg.get("workdir"),  # a writer that took s3:// for a folder writes "s3:" there
        env={**os.environ, "PYTHONPATH": str(_common.REPO)},
    )
    sys.stderr.write(r.stderr[-4000:])
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        return {"step": step, "ok": False, "error": why}
    return {"step": step, "ok": True, **json.loads(lines[-1])}


def make_bucket(url: str) -> None:
    import s3fs

    bucket = url.removeprefix("s3://").split("/", 1)[0]
    fs = s3fs.S3FileSystem()
    if not fs.exists(bucket):
        fs.mkdir(bucket)


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Real-teacher statistics (measured now with --calibrate, else REAL_STATS) and the fit."""
    from scale_teacher import SyntheticTeacher, draw, fit, view_stats

    real: dict[str, Any] = dict(REAL_STATS, source="constants measured earlier (--calibrate)")
    teacher = SyntheticTeacher(**FITTED)
    if args.calibrate:
        got = run_child("calibrate", {"views": 16, "topk": args.topk}, 900)
        if not got["ok"]:
            raise SystemExit(f"calibration failed: {got['error']}")
        real = {k: got[k] for k in REAL_STATS} | {"source": "measured now"}
        teacher = fit(real, topk=args.topk)
    ids, logp, ent = draw(teacher, 48, 16, args.topk, seed=11)
    return {"real": real, "synthetic": view_stats(ids, logp, ent), "teacher": teacher.to_dict()}


def _row(step: str, res: dict[str, Any], scale: float) -> list[Any]:
    if not res.get("ok"):
        return [step, "failed", "", "", res.get("error", "")]
    secs = res["seconds"]
    rss = max(res.get("peak_rss", 0), res.get("server_peak_rss", 0))
    est = secs * scale
    if "serve_s" in res:  # starting the server and opening the store do not grow with N
        est = res["open_s"] + res["serve_s"] * scale
    over = "  OVER 2 GiB" if res.get("peak_rss_at_n", rss) > 2 * GIB else ""
    return [step, f"{secs:.1f}", f"{est:.1f}", f"{rss / 2**20:.0f}", res.get("note", "") + over]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store-root", help="folder or s3://bucket/prefix (default: a temp dir)")
    ap.add_argument("--moto", action="store_true", help="start a moto S3 server for s3:// roots")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of N to run (time x 1/F)")
    ap.add_argument("--samples", type=int, default=IN1K, help="N (default ImageNet-1k)")
    ap.add_argument("--views", type=int, default=50)
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--files", type=int, default=100_000, help="files of the real tree step")
    ap.add_argument("--tree", help="folder for the tree (kept; default: a temp dir)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma list of {STEPS}")
    ap.add_argument("--calibrate", action="store_true", help="measure Lite0 now (~30 s)")
    ap.add_argument("--bank", type=int, default=4096, help="synthetic images drawn (relabelled)")
    ap.add_argument("--batch-size", type=int, default=256, help="student batch of the epoch step")
    ap.add_argument("--index-samples", type=int, default=IN22K, help="files of the index steps")
    ap.add_argument("--index-classes", type=int, default=IN22K_CLASSES, help="their classes")
    ap.add_argument(
        "--index-tuple-samples", type=int, default=1_000_000, help="N of the index_tuples step"
    )
    ap.add_argument("--tar-shards", type=int, default=1024, help="shards of the tar_index step")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--timeout-s", type=float, default=3600, help="per step")
    args = ap.parse_args()
    if not 0 < args.fraction <= 1:
        raise SystemExit("--fraction must be in (0, 1]")
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    print(_common.load(), file=sys.stderr)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-"))
        if args.moto:  # a moto S3 server on loopback, the AWS variables pointing at it
            from teacher_store.testing import running_s3_server

            stack.enter_context(running_s3_server(Path(tmp), process=True))
        root = args.store_root or str(Path(tmp) / "stores")
        if root.startswith("s3://"):
            make_bucket(root)
        report = run(args, steps, root, args.tree or str(Path(tmp) / "tree"), tmp)
    print(json.dumps(report, indent=1) if args.json is None else "", end="")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


def run(
    args: argparse.Namespace, steps: list[str], root: str, tree: str, workdir: str
) -> dict[str, Any]:
    n = max(1, round(args.samples * args.fraction))
    scale = args.samples / n
    cal = calibrate(args)
    print("calibration (real Lite0 vs synthetic draws):", file=sys.stderr)
    for k in REAL_STATS:
        print(f"  {k:11s} {cal['real'][k]:9.4f} {cal['synthetic'][k]:9.4f}", file=sys.stderr)
    cfg = {
        "store": f"{root.rstrip('/')}/{STORE}",
        "root": root,
        "samples": n,
        "views": args.views,
        "topk": args.topk,
        "teacher": cal["teacher"],
        "bank": args.bank,
        "batch_size": args.batch_size,
        "files": args.files,
        "tree": tree,
        "full_samples": args.samples,
        "workdir": workdir,
        "index_samples": args.index_samples,
        "index_classes": args.index_classes,
        "index_tuple_samples": args.index_tuple_samples,
        "index_file": str(Path(workdir) / "index.npz"),
        "tar_shards": args.tar_shards,
        "tar_folder": str(Path(workdir) / "tars"),
        "tar_pattern": f"{Path(workdir) / 'tars'}/shard-{{000000..{args.tar_shards - 1:06d}}}.tar",
    }
    results = {}
    for step in steps:
        if step == "order":  # no store: at the full N, and at ImageNet-22k's
            sizes = [("order", args.samples, C)]
            if args.samples >= IN1K:  # the real-scale run also sizes the trainer at 22k
                sizes.append(("order_in22k", IN22K, IN22K_CLASSES))
            for name, size, classes in sizes:
                ocfg = {**cfg, "samples": size, "classes": classes}
                results[name] = run_child("order", ocfg, args.timeout_s)
            continue
        need = {"index_load": "index", "tar_index_load": "tar_index"}.get(step)
        if need and not results.get(need, {"ok": False})["ok"]:
            results[step] = {"step": step, "ok": False, "error": f"skipped: needs the {need} step"}
            continue
        if step in STORE_STEPS and not results.get("write", {"ok": True})["ok"]:
            results[step] = {"step": step, "ok": False, "error": "skipped: the write failed"}
            continue
        t0 = time.perf_counter()
        results[step] = run_child(step, cfg, args.timeout_s)
        print(f"[{step}: {time.perf_counter() - t0:.1f} s] {results[step]}", file=sys.stderr)
    rows = []
    for step, res in results.items():
        at_n = ("index", "index_load", "tar_index", "tar_index_load")
        factor = 1.0 if step.startswith("order") or step in at_n else scale
        if step == "tree":
            factor = args.samples / args.files
        elif step == "index_tuples":
            factor = res.get("scale", 1.0)
        rows.append(_row(step, res, factor))
    head = ["step", "seconds", "seconds at N", "peak RSS MiB", "note"]
    print(f"\nN = {n:,} samples x R = {args.views} x K = {args.topk} ({args.fraction:g} of "
          f"{args.samples:,}); store at {cfg['store']}; {_common.load()}")  # fmt: skip
    if scale != 1:
        print(
            f"store steps ran at {args.fraction:g} of N: their times are extrapolated x{scale:.2f}"
        )
    print(_common.table(head, rows))
    if any(step in results for step in INDEX_STEPS):
        print(f"index steps: N = {args.index_samples:,} files in {args.index_classes:,} classes "
              "(a synthetic listing), at that N; index_tuples extrapolated (its note)")  # fmt: skip
    projection = project(results, n, args.views)
    for line in projection["lines"]:
        print(line)
    return {"config": cfg, "calibration": cal, "results": results, "projection": projection}


def project(results: dict[str, Any], n: int, views: int) -> dict[str, Any]:
    """ImageNet-22k (14.2M x 50) from the measured per-view and per-file rates."""
    out: dict[str, Any] = {"lines": [f"ImageNet-22k projection ({IN22K:,} x {views} views):"]}
    w = results.get("write", {})
    if w.get("ok"):
        v = IN22K * views
        out["store_bytes"] = w["store_bytes"] / (n * views) * v
        out["write_s"] = v / w["views_per_s"]
        out["lines"].append(
            f"  store {out['store_bytes'] / 1e9:.1f} GB, write {out['write_s'] / 3600:.1f} h "
            f"at {w['views_per_s']:,.0f} views/s (one process)"
        )
    for step in ("verify", "serve", "epoch", "epoch_service"):
        r = results.get(step, {})
        if r.get("ok"):
            s = r.get("serve_s", r["seconds"]) * IN22K / n
            out[f"{step}_s"] = s
            out["lines"].append(f"  {step}: {s / 60:.1f} min (linear in N)")
    for step in INDEX_STEPS:
        r = results.get(step, {})
        if r.get("ok") and r.get("samples"):
            out[f"{step}_rss"] = r["peak_rss_at_n"]
            out["lines"].append(
                f"  {step}: peak RSS {r['peak_rss_at_n'] / GIB:.2f} GiB ({r['note']})"
            )
    t = results.get("tree", {})
    if t.get("ok"):
        out["tree_s"] = t["seconds"] * IN22K / t["files"]
        out["tree_rss"] = t["base_rss"] + t["rss_per_file"] * IN22K
        out["lines"].append(
            f"  tree scan + fingerprint: {out['tree_s'] / 60:.1f} min, peak RSS "
            f"{out['tree_rss'] / GIB:.2f} GiB (linear in files)"
        )
    return out


if __name__ == "__main__":
    main()
