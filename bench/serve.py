"""Targets through the service's block endpoint vs reading the same store from disk.

Builds a synthetic teacher-like store (R view slots x N samples x top-K) in a temp dir, starts
ONE uvicorn worker on loopback (a subprocess: ``uvicorn api.main:app``), and in one run measures:

- views/s reading every slot in ``--block``-sample blocks with ``StoreClient(path)`` (LocalStore,
  zarr decoding every read) and with ``StoreClient(url)`` (block endpoint), the latter with the
  server cold (first pass: shards read, verified and decoded) and warm (decoded-chunk cache);
- p50/p99 latency of block requests with ``--clients`` concurrent client threads.

Usage: ``.venv/bin/python bench/serve.py [--views 4] [--samples 262144] [--topk 10]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from teacher_store.client import StoreClient  # noqa: E402
from teacher_store.store.layout import ShardUnit  # noqa: E402
from teacher_store.store.schema import StoreAttrs  # noqa: E402
from teacher_store.testing import (  # noqa: E402
    ServiceProcess,
    clustered_targets,
    synthetic_attrs,
    write_store,
)


def _attrs(r: int, n: int, k: int) -> StoreAttrs:
    return synthetic_attrs(n, r, k, shard=16384, shard_views=min(4, r))


def build(path: Path, attrs: StoreAttrs) -> float:
    """Write the store from a pool of teacher-like targets, tiled (building stays fast)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    pool = clustered_targets(rng, attrs.shard_views, 4096, attrs.topk)

    def targets(u: ShardUnit) -> tuple[np.ndarray, ...]:
        rs, n = u.slot_stop - u.slot_start, u.stop - u.start
        reps = -(-n // 4096)
        ids = np.roll(np.tile(pool[0][:rs], (1, reps, 1))[:, :n], u.index * 7, axis=1)
        values = np.tile(pool[1][:rs], (1, reps, 1))[:, :n]
        return ids, values, pool[2][:rs, :1].repeat(n, 1)

    write_store(path, attrs, targets)
    return time.perf_counter() - t0


def start_server(root: Path) -> ServiceProcess:
    """ONE uvicorn worker serving ``root`` on a free loopback port."""
    env = {"DISTILL_MAX_BLOCK": str(1 << 17)}
    return ServiceProcess.uvicorn(root, env=env, cwd=REPO, ready_s=30.0)


def views_per_s(read: Callable[[int, int, int], object], attrs: StoreAttrs, block: int) -> float:
    t0 = time.perf_counter()
    for slot in range(attrs.views):
        for a in range(0, attrs.num_samples, block):
            read(slot, a, min(attrs.num_samples, a + block))
    return attrs.views * attrs.num_samples / (time.perf_counter() - t0)


def latency(
    url: str, attrs: StoreAttrs, block: int, clients: int, per_client: int
) -> tuple[list[float], float]:
    client = StoreClient(url, max_cache_blocks=0, prefetch=0)
    starts = list(range(0, attrs.num_samples - block + 1, block))
    out: list[float] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        mine = []
        for j in range(per_client):
            a = starts[(w + j) % len(starts)]
            t0 = time.perf_counter()
            client.read_block((w + j) % attrs.views, a, a + block)
            mine.append(time.perf_counter() - t0)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--samples", type=int, default=262144)
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--block", type=int, default=65536, help="samples per block request")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients for latency")
    p.add_argument("--requests", type=int, default=256, help="requests in the latency run")
    p.add_argument("--lat-block", type=int, default=4096, help="samples per latency request")
    args = p.parse_args()
    attrs = _attrs(args.views, args.samples, args.topk)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        built = build(root / "bench", attrs)
        size = sum(f.stat().st_size for f in (root / "bench").rglob("*") if f.is_file())
        print(f"store: R={attrs.views} N={attrs.num_samples} K={attrs.topk} logprob-f16, "
              f"{size / 1e6:.1f} MB ({size / attrs.views / attrs.num_samples:.1f} B/view), "
              f"built in {built:.1f} s")  # fmt: skip
        with start_server(root) as server:
            run(root, server.store_url("bench"), attrs, args)


def run(root: Path, url: str, attrs: StoreAttrs, args: argparse.Namespace) -> None:
    local = StoreClient(root / "bench", max_cache_blocks=0)
    remote = StoreClient(url, max_cache_blocks=0, prefetch=0)
    views_per_s(local.read_block, attrs, args.block)  # page cache warm, like the server's
    best_local = max(views_per_s(local.read_block, attrs, args.block) for _ in range(2))
    rows = [
        ("local (LocalStore via zarr), best of 2", best_local),
        ("service, server cold", views_per_s(remote.read_block, attrs, args.block)),
        ("service, server warm", views_per_s(remote.read_block, attrs, args.block)),
    ]
    pre = StoreClient(url, max_cache_blocks=0, prefetch=2)
    t0 = time.perf_counter()
    for slot in range(attrs.views):
        ranges = [(a, min(attrs.num_samples, a + args.block))
                  for a in range(0, attrs.num_samples, args.block)]  # fmt: skip
        for _ in pre.iter_blocks(slot, ranges):
            pass
    rows.append(
        ("service warm, prefetch=2", attrs.views * attrs.num_samples / (time.perf_counter() - t0))
    )
    base = rows[0][1]
    print(f"\n{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"1 uvicorn worker on loopback, {args.block}-sample blocks\n")  # fmt: skip
    print("| reader | views/s | vs local |\n|---|---:|---:|")
    for name, v in rows:
        print(f"| {name} | {v:,.0f} | {v / base:.2f}x |")
    per = max(1, args.requests // args.clients)
    for block in (args.lat_block, args.block):
        lat, wall = latency(url, attrs, block, args.clients, per)
        q = statistics.quantiles(sorted(lat), n=100)
        print(f"\nlatency, {args.clients} concurrent clients, {len(lat)} requests of {block} "
              f"samples: p50 {q[49] * 1e3:.1f} ms, p99 {q[98] * 1e3:.1f} ms, "
              f"{len(lat) * block / wall:,.0f} views/s aggregate")  # fmt: skip


if __name__ == "__main__":
    main()
