"""A whole store copied through `distill serve` (`distill copy URL DST`) vs `cp -r` of its files
on the same disk, side by side in one run.

The store is written by the real writer (``create_store``, ``write_unit`` per shard unit,
``finalize``) at the `distill generate` default layout (chunks of 16 slots x 64 samples, shard
units of 16 slots x 4,096 samples, K=10, ``prob-u8``), with synthetic top-10 targets whose ids
follow a Zipf law (real teachers' ids are far from uniform). `distill serve` runs in its own
process on 127.0.0.1 (one worker). Each round: ``cp -r STORE A`` (a fresh target), then
``run_copy`` of the service URL into a fresh folder B (in this process, so Python's start-up,
~1-2 s, is not counted; the CLI's wall time is printed once as well), then a folder-to-folder
``run_copy`` for reference. Every copy's shard files are compared with the source's. The ratio
reported is cp's time over the copy's (throughput of the copy / throughput of cp; goal >= 0.5).
The machine is shared with other jobs: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from _common import free_port, load, table  # noqa: E402

from teacher_store.store.arrays import create_store, finalize, write_unit  # noqa: E402
from teacher_store.store.layout import shard_units  # noqa: E402
from teacher_store.store.schema import StoreAttrs, encode_values  # noqa: E402
from teacher_store.store_copy import CopyConfig, run_copy  # noqa: E402


def _attrs(views: int, samples: int, topk: int) -> StoreAttrs:
    from teacher_store.views.codec import CODEC_VERSION
    from teacher_store.views.recipe import get_recipe

    teacher = {
        "name": "synthetic",
        "architecture": "none",
        "num_classes": 1000,
        "input_size": [3, 224, 224],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "weights_sha256": "ab" * 32,
        "class_names": [],
        "version": 1,
    }
    return StoreAttrs(
        codec_version=CODEC_VERSION,
        num_samples=samples,
        views=views,
        topk=topk,
        num_classes=1000,
        value_encoding="prob-u8",
        store_seed=0,
        chunk_samples=64,
        chunk_views=min(16, views),
        shard_samples=4096,
        shard_views=min(16, views),
        id_order="head-sorted-pad",
        teacher=teacher,
        dataset={"num_samples": samples, "sha256": "0" * 64, "classes": [], "version": 1},
        recipe=get_recipe("default").to_dict(),
        config={"teacher": "synthetic", "views": views, "topk": topk, "batch_size": 32},
        libraries={},
    )


def build(path: Path, views: int, samples: int, topk: int) -> None:
    """The store at ``path`` through the real writer."""
    a = _attrs(views, samples, topk)
    create_store(path, a, overwrite=True)
    units = shard_units(a)
    for u in units:
        rng = np.random.default_rng(u.start * 31 + u.group)
        rs, n = u.slot_stop - u.slot_start, u.stop - u.start
        # Distinct classes per view: a Zipf-drawn top-1 (popular classes more often), the rest
        # at random gaps of 1..99 after it (about the entropy of a real teacher's tail ids).
        top1 = (rng.zipf(1.3, (rs, n, 1)) - 1) % 1000
        gaps = np.cumsum(rng.integers(1, 100, (rs, n, topk - 1)), -1)
        ids = np.concatenate([top1, (top1 + gaps) % 1000], -1)
        logits = np.sort(rng.normal(0.0, 3.0, (rs, n, topk)), axis=-1)[..., ::-1]
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True) + 50.0)
        valid = np.ones((rs, n), np.uint8)
        write_unit(
            path, u, ids.astype(a.ids_dtype), encode_values(logp, a.value_encoding), valid, []
        )
    finalize(path, units)


def _shards(root: Path) -> dict[str, str]:
    out = {}
    for p in root.rglob("*"):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and "/c/" in f"/{rel}":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def serve(root: Path, port: int) -> subprocess.Popen[bytes]:
    import requests

    cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root", str(root),
           "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
    for _ in range(600):
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).ok:
                return proc
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            raise SystemExit("distill serve exited")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("distill serve did not become ready")


def _timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def _cfg(src: str, dst: Path, workers: int) -> CopyConfig:
    return CopyConfig(src=src, dst=str(dst), workers=workers, progress=False)


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` and its children (the server)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(k) for k in kids]
    return total


def _cpu_of(fn: object, server: int | None) -> tuple[float, float]:
    """(wall s, CPU s) of ``fn``: this process's CPU, its finished children's (``cp``) and the
    server's (``server``: its pid), so the figure does not depend on what else runs."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = time.process_time() + kids.ru_utime + kids.ru_stime
    s0 = _tree_cpu(server) if server else 0.0
    wall = _timed(fn)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = time.process_time() + kids.ru_utime + kids.ru_stime
    s1 = _tree_cpu(server) if server else 0.0
    return wall, (c1 - c0) + (s1 - s0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--views", type=int, default=16)
    p.add_argument("--samples", type=int, default=131072)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=4, help="copy threads (distill copy --workers)")
    p.add_argument("--dir", help="work folder (default: a temporary folder)")
    args = p.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="bench-copy-"))
    store = base / "root" / "store"
    t = _timed(lambda: build(store, args.views, args.samples, args.topk))
    files = [f for f in store.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    print(f"store: R={args.views} x N={args.samples} x K={args.topk}, {size / 2**20:.1f} MiB in "
          f"{len(files)} files, written in {t:.1f} s; {load()}")  # fmt: skip
    want = _shards(store)
    port = free_port()
    proc = serve(base / "root", port)
    url = f"http://127.0.0.1:{port}/v1/stores/store"
    rows: list[list[object]] = []
    runs: dict[str, list[tuple[float, float]]] = {"cp": [], "svc": [], "dir": []}
    try:
        for r in range(args.rounds):
            for d in runs:
                shutil.rmtree(base / d, ignore_errors=True)
            a = _cpu_of(
                partial(subprocess.run, ["cp", "-r", str(store), str(base / "cp")], check=True),
                None,
            )
            b = _cpu_of(partial(run_copy, _cfg(url, base / "svc", args.workers)), proc.pid)
            c = _cpu_of(partial(run_copy, _cfg(str(store), base / "dir", args.workers)), None)
            assert _shards(base / "svc") == want and _shards(base / "dir") == want
            for d, x in zip(runs, (a, b, c), strict=True):
                runs[d].append(x)
            rows.append([r, a[0], b[0], c[0], a[0] / b[0], a[1] / b[1], a[0] / c[0], load()])
        shutil.rmtree(base / "svc", ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        cli = [sys.executable, "-m", "teacher_store.cli", "copy", url, str(base / "svc"), "--quiet"]
        t_cli = _timed(lambda: subprocess.run(cli, check=True, env=env, stdout=subprocess.DEVNULL))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    heads = ["round", "cp -r s", "service copy s", "folder copy s", "cp/service wall",
             "cp/service CPU", "cp/folder wall", "load"]  # fmt: skip
    print(table(heads, rows))
    mib = size / 2**20
    wall = {d: statistics.median(w for w, _ in x) for d, x in runs.items()}
    cpu = {d: statistics.median(c for _, c in x) for d, x in runs.items()}
    print(f"median wall: cp -r {wall['cp']:.3f} s ({mib / wall['cp']:.0f} MiB/s), through the "
          f"service {wall['svc']:.3f} s ({mib / wall['svc']:.0f} MiB/s), folder to folder "
          f"{wall['dir']:.3f} s; service copy / cp throughput = {wall['cp'] / wall['svc']:.2f} "
          f"by wall time, {cpu['cp'] / cpu['svc']:.2f} by CPU time (cp {cpu['cp']:.3f} s, "
          f"service copy client + server {cpu['svc']:.3f} s; goal >= 0.5); folder copy "
          f"{wall['cp'] / wall['dir']:.2f} by wall; the CLI through the service, Python "
          f"start-up included: {t_cli:.2f} s; shard files byte-identical to the source's"
    )  # fmt: skip
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
