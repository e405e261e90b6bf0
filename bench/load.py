"""Load on `distill serve`: N concurrent async clients (httpx) for S seconds on loopback.

Each client loops over a mix of requests against a synthetic store: zarr keys, whole (25%) and
ranged (25%, including suffix ranges), blocks (35%) and metadata (15%: the list and one store).
Every answer is checked against the store's files (zarr keys) or a local decode (blocks): a
mismatch is data lost. Errors are any status other than 200/206 except deliberate 503s
(overload, with Retry-After). The server's RSS is sampled from /proc every 0.25 s: growth per
worker process (peak minus the level after one warm-up request of each kind) must stay within
the configured cache plus 10%. By default the store (268 MiB) outgrows the service's default
cache (256 MiB); ``--cache-mib 32 --views 4`` is the small-cache case (see docs/reliability.md).

Usage: ``.venv/bin/python bench/load.py [--clients 64] [--seconds 60] [--workers 1 2]``
(``--json PATH`` also writes the figures; bench/reliability.py runs it).

``--scenario render-flood`` (issue 24): view PNG renders must not starve block reads. One
server holds a block store (``load``) and a real store of the 17 demo photos (Lite0, 8 views;
``--data demo=...``). A few block clients (``--block-clients``, a read every
``--block-interval-ms``, each block checked against a local decode) run alone for
``--seconds`` (unloaded), then beside ``--render-clients`` clients (default 32, 60, 80)
that each loop over random views at 384-512 px (so the render cache rarely helps; a 503 is
followed by a wait of up to Retry-After). Reported: block p50/p99 per phase and its p99 against
the unloaded one (goal at 60 render clients: at most 2x), renders answered and refused.
``--server-repo PATH`` serves from another checkout (e.g. main, to compare side by side).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, load, table

MiB = 1 << 20
MIX = (("zarr full", 25), ("zarr range", 25), ("block", 35), ("metadata", 15))


@dataclass
class Result:
    workers: int
    clients: int
    seconds: float
    cache_bytes: int
    requests: int = 0
    errors: int = 0
    busy_503: int = 0
    data_lost: int = 0
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> [p50, p99]
    rss_growth_mib: list[float] = field(default_factory=list)  # per worker process
    error_samples: list[str] = field(default_factory=list)

    @property
    def rss_bound_mib(self) -> float:
        return self.cache_bytes * 1.1 / MiB

    @property
    def ok(self) -> bool:
        within = max(self.rss_growth_mib, default=0.0) <= self.rss_bound_mib
        return self.errors == 0 and self.data_lost == 0 and within


def build_store(path: Path, views: int, samples: int) -> None:
    """A finished store of random teacher-like targets (K=10, logprob-f16)."""
    from teacher_store.testing import random_targets, synthetic_attrs, write_store

    attrs = synthetic_attrs(samples, views, 10)
    rng = np.random.default_rng(0)
    write_store(
        path,
        attrs,
        lambda u: random_targets(
            rng, attrs, u.slot_stop - u.slot_start, u.stop - u.start, 2.5, 400.0, invalid=0.0
        ),
    )


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _workers(pid: int) -> list[int]:
    """The uvicorn processes serving requests: the children of ``pid``, else ``pid`` itself."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                kids.append(int(entry))
    # multiprocessing's resource tracker is a child too; it holds no cache and barely grows
    return kids or [pid]


def serve(
    root: Path, workers: int, cache_bytes: int, options: dict[str, Any] | None = None,
    repo: Path = REPO,
) -> Any:  # fmt: skip
    """``distill serve`` over ``root`` from ``repo``'s code (a subprocess on a free loopback
    port), ready; ``options``: more flags (``{"data": "demo=DIR"}``)."""
    from teacher_store.testing import ServiceProcess

    return ServiceProcess.serve(
        root, workers=workers, options={"cache_bytes": cache_bytes, **(options or {})},
        env={"PYTHONPATH": str(repo)}, cwd=repo,
    )  # fmt: skip


class Expected:
    """What each request must return: the store's files and locally decoded blocks."""

    def __init__(self, store: Path, block: int) -> None:
        from teacher_store.store.arrays import LocalStore

        self.files = {
            str(p.relative_to(store)): p.read_bytes()
            for p in store.rglob("*")
            if p.is_file() and "_distill/shards" not in str(p)
        }
        self.shards = sorted(k for k in self.files if "/c/" in k)
        self.local = LocalStore(store)
        self.block = block
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def block_arrays(self, slot: int, start: int) -> tuple[np.ndarray, ...]:
        if (slot, start) not in self._blocks:
            b = self.local.read_block(slot, start, start + self.block)
            self._blocks[slot, start] = (b.ids, b.values, b.valid)
        return self._blocks[slot, start]


def _request(rng: random.Random, exp: Expected, views: int, samples: int) -> tuple[str, str, dict]:
    kind = rng.choices([k for k, _ in MIX], [w for _, w in MIX])[0]
    base = "/v1/stores/load"
    if kind == "metadata":
        return kind, rng.choice(["/v1/stores", base]), {}
    if kind == "block":
        slot, start = rng.randrange(views), rng.randrange(samples // exp.block) * exp.block
        return kind, f"{base}/blocks/{slot}?start={start}&stop={start + exp.block}", {}
    key = rng.choice(exp.shards)
    if kind == "zarr full":
        return kind, f"{base}/zarr/{key}", {}
    size = len(exp.files[key])
    a = rng.randrange(size)
    spec = rng.choice([f"bytes={a}-{min(size - 1, a + 4095)}", f"bytes=-{min(size, 4096)}"])
    return kind, f"{base}/zarr/{key}", {"Range": spec}


def _lost(kind: str, path: str, hdrs: dict, body: bytes, exp: Expected) -> bool:
    """True when a 200/206 body is not exactly what the store holds."""
    if kind == "metadata":
        return b'"load"' not in body
    if kind == "block":
        from teacher_store.store.blockfmt import decode_block

        slot = int(path.split("/blocks/")[1].split("?")[0])
        start = int(path.split("start=")[1].split("&")[0])
        got = decode_block(body)
        want = exp.block_arrays(slot, start)
        return not all(np.array_equal(g, w) for g, w in zip(
            (got.ids, got.values, got.valid), want, strict=True))  # fmt: skip
    data = exp.files[path.split("/zarr/")[1]]
    if "Range" not in hdrs:
        return body != data
    spec = hdrs["Range"].split("=")[1]
    a, b = spec.split("-")
    want = data[-int(b) :] if not a else data[int(a) : int(b) + 1]
    return body != want


async def _client(
    url: str, exp: Expected, deadline: float, seed: int, res: Result, lat: dict[str, list[float]]
) -> None:
    import httpx

    rng = random.Random(seed)
    views, samples = exp.local.attrs.views, exp.local.attrs.num_samples
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while time.monotonic() < deadline:
            kind, path, hdrs = _request(rng, exp, views, samples)
            t0 = time.perf_counter()
            try:
                r = await client.get(path, headers=hdrs)
            except httpx.HTTPError as e:
                res.errors += 1
                res.error_samples.append(f"{kind} {path}: {type(e).__name__}")
                continue
            lat.setdefault(kind, []).append((time.perf_counter() - t0) * 1e3)
            res.requests += 1
            if r.status_code == 503 and "retry-after" in r.headers:
                res.busy_503 += 1
                await asyncio.sleep(float(r.headers["retry-after"]) * rng.random())
            elif r.status_code not in (200, 206):
                res.errors += 1
                res.error_samples.append(f"{kind} {path}: {r.status_code} {r.text[:100]}")
            elif _lost(kind, path, hdrs, r.content, exp):
                res.data_lost += 1


async def _sample_rss(pids: list[int], peaks: dict[int, int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for pid in pids:
            peaks[pid] = max(peaks.get(pid, 0), _rss_kib(pid))
        await asyncio.sleep(0.25)


async def _drive(url: str, exp: Expected, res: Result, pids: list[int]) -> None:
    lat: dict[str, list[float]] = {}
    peaks: dict[int, int] = {}
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(pids, peaks, stop))
    base = {pid: _rss_kib(pid) for pid in pids}
    deadline = time.monotonic() + res.seconds
    await asyncio.gather(*(_client(url, exp, deadline, i, res, lat) for i in range(res.clients)))
    stop.set()
    await sampler
    res.rss_growth_mib = [round((peaks[p] - base[p]) / 1024, 1) for p in pids]
    for kind, xs in sorted(lat.items()):
        q = statistics.quantiles(xs, n=100) if len(xs) > 1 else [xs[0]] * 99
        res.latency_ms[kind] = [round(q[49], 1), round(q[98], 1)]
    res.error_samples = res.error_samples[:5]


def _warm_up(url: str, exp: Expected) -> None:
    """One request of each kind per worker, so lazy imports are not counted as growth."""
    import requests

    for _ in range(8):
        for path in ("/v1/stores", "/v1/stores/load", f"/v1/stores/load/zarr/{exp.shards[0]}",
                     f"/v1/stores/load/blocks/0?start=0&stop={exp.block}"):  # fmt: skip
            requests.get(url + path, headers={"Range": "bytes=0-9"}, timeout=30)


def run_one(root: Path, exp: Expected, workers: int, clients: int, seconds: float,
            cache_bytes: int) -> Result:  # fmt: skip
    with serve(root, workers, cache_bytes) as service:
        time.sleep(1.0 if workers > 1 else 0.0)  # let every worker finish its start-up
        _warm_up(service.url, exp)
        res = Result(workers, clients, seconds, cache_bytes)
        asyncio.run(_drive(service.url, exp, res, _workers(service.pid)))
        return res


def report(results: list[Result]) -> str:
    rows = []
    for r in results:
        lat = "; ".join(f"{k} {v[0]:.0f}/{v[1]:.0f}" for k, v in r.latency_ms.items())
        rows.append([r.workers, r.clients, f"{r.seconds:g}", r.requests,
                     f"{r.requests / r.seconds:.0f}", r.errors, r.busy_503, r.data_lost, lat,
                     f"{max(r.rss_growth_mib, default=0):.1f} / {r.rss_bound_mib:.1f}",
                     "ok" if r.ok else "FAILED"])  # fmt: skip
    head = ["workers", "clients", "s", "requests", "req/s", "errors", "503s", "data lost",
            "p50/p99 ms by endpoint", "RSS growth / bound MiB", "verdict"]  # fmt: skip
    return table(head, rows)


# ---- render flood (issue 24): renders must not starve block reads ----------------------------


@dataclass
class FloodPhase:
    render_clients: int
    seconds: float
    block_reads: int = 0
    block_busy_503: int = 0
    block_ms: list[float] = field(default_factory=list)  # p50, p99
    renders_ok: int = 0
    renders_busy_503: int = 0
    render_ms: list[float] = field(default_factory=list)  # p50, p99 of the 200s
    errors: int = 0
    data_lost: int = 0
    error_samples: list[str] = field(default_factory=list)
    server_cpu_s: float = 0.0  # the uvicorn process
    render_cpu_s: float = 0.0  # its children: the render worker processes
    flood_cpu_s: float = 0.0  # the render clients' own process (on the same cores)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantiles(xs: list[float]) -> list[float]:
    if not xs:
        return []
    q = statistics.quantiles(xs, n=100) if len(xs) > 1 else [xs[0]] * 99
    return [round(q[49], 1), round(q[98], 1)]


async def _flood_blocks(client: Any, exp: Expected, deadline: float, seed: int,
                        ph: FloodPhase, lat: list[float], interval: float) -> None:  # fmt: skip
    import httpx

    rng = random.Random(seed)
    views, samples = exp.local.attrs.views, exp.local.attrs.num_samples
    while time.time() < deadline:
        _, path, _ = _request_block(rng, exp, views, samples)
        t0 = time.perf_counter()
        try:
            r = await client.get(path)
        except httpx.HTTPError as e:
            ph.errors += 1
            ph.error_samples.append(f"block {path}: {type(e).__name__}")
            continue
        ms = (time.perf_counter() - t0) * 1e3
        if r.status_code == 503 and "retry-after" in r.headers:
            ph.block_busy_503 += 1
        elif r.status_code != 200:
            ph.errors += 1
            ph.error_samples.append(f"block {path}: {r.status_code} {r.text[:100]}")
        else:
            lat.append(ms)
            ph.block_reads += 1
            ph.data_lost += _lost("block", path, {}, r.content, exp)
        await asyncio.sleep(interval)


async def _flood_renders(client: Any, views: int, samples: int, deadline: float, seed: int,
                         ph: FloodPhase, lat: list[float]) -> None:  # fmt: skip
    import httpx

    rng = random.Random(seed)
    while time.time() < deadline:
        slot, sample, size = rng.randrange(views), rng.randrange(samples), rng.randrange(384, 513)
        path = f"/v1/stores/demo/views/{slot}/{sample}.png?size={size}"
        t0 = time.perf_counter()
        try:
            r = await client.get(path)
        except httpx.HTTPError as e:  # counted; the flood goes on
            ph.errors += 1
            ph.error_samples.append(f"render {path}: {type(e).__name__}")
            continue
        if r.status_code == 503 and "retry-after" in r.headers:
            ph.renders_busy_503 += 1
            await asyncio.sleep(float(r.headers["retry-after"]) * rng.random())
        elif r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n":
            ph.renders_ok += 1
            lat.append((time.perf_counter() - t0) * 1e3)
            ph.data_lost += not r.content.endswith(b"IEND\xaeB`\x82")  # a cut PNG
        else:
            ph.errors += 1
            ph.error_samples.append(f"render {path}: {r.status_code} {r.text[:100]}")


def _request_block(rng: random.Random, exp: Expected, views: int, samples: int) -> tuple:
    slot, start = rng.randrange(views), rng.randrange(samples // exp.block) * exp.block
    return "block", f"/v1/stores/load/blocks/{slot}?start={start}&stop={start + exp.block}", {}


def _httpx_client(url: str) -> Any:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(base_url=url, timeout=300, limits=limits)


def _render_flood(url: str, clients: int, demo: tuple[int, int], pipe: Any) -> None:
    """(A separate process: the flood's own client work must not delay the block readers'
    event loop, as it would not delay a trainer's.) Waits for the deadline, floods, reports."""
    ph = FloodPhase(clients, 0.0)
    lat: list[float] = []
    pipe.send("ready")
    deadline = pipe.recv()

    async def flood() -> None:
        async with _httpx_client(url) as client:
            await asyncio.gather(*(_flood_renders(client, *demo, deadline, 1000 + i, ph, lat)
                                   for i in range(clients)))  # fmt: skip

    asyncio.run(flood())
    ph.render_ms, ph.error_samples = _quantiles(lat), ph.error_samples[:5]
    ph.flood_cpu_s = round(_cpu_s(os.getpid()), 1)
    pipe.send(asdict(ph))


def _flood_phase(url: str, pid: int, exp: Expected, ph: FloodPhase, block_clients: int,
                 interval: float, demo: tuple[int, int]) -> None:  # fmt: skip
    import multiprocessing

    ours, theirs = multiprocessing.Pipe()
    flood = multiprocessing.get_context("spawn").Process(
        target=_render_flood, args=(url, ph.render_clients, demo, theirs)
    )
    if ph.render_clients:
        flood.start()
        assert ours.recv() == "ready"
    deadline = time.time() + ph.seconds
    if ph.render_clients:
        ours.send(deadline)
    blat: list[float] = []

    async def blocks() -> None:
        async with _httpx_client(url) as client:
            await asyncio.gather(*(_flood_blocks(client, exp, deadline, i, ph, blat, interval)
                                   for i in range(block_clients)))  # fmt: skip

    server = _cpu_s(pid), sum(_cpu_s(k) for k in _workers(pid) if k != pid)
    asyncio.run(blocks())
    ph.server_cpu_s = round(_cpu_s(pid) - server[0], 1)
    ph.render_cpu_s = round(sum(_cpu_s(k) for k in _workers(pid) if k != pid) - server[1], 1)
    ph.block_ms = _quantiles(blat)
    if ph.render_clients:
        got = ours.recv()
        flood.join()
        for key in ("renders_ok", "renders_busy_503", "errors", "data_lost"):
            setattr(ph, key, getattr(ph, key) + got[key])
        ph.render_ms, ph.flood_cpu_s = got["render_ms"], got["flood_cpu_s"]
        ph.error_samples += got["error_samples"]
    ph.error_samples = ph.error_samples[:5]


def _flood_stores(root: Path, data: Path, views: int, samples: int) -> tuple[int, int]:
    """The block store and the demo photo store under ``root``; (views, samples) of the demo."""
    from teacher_store.images.demo_data import write_demo_data
    from teacher_store.testing import generate_small

    build_store(root / "load", views, samples)
    write_demo_data(data)
    generate_small(data, root / "demo", views=8)
    from teacher_store.store.arrays import LocalStore

    a = LocalStore(root / "demo").attrs
    return a.views, a.num_samples


def run_flood(args: argparse.Namespace) -> int:
    """The render-flood scenario; exit status 0 when block p99 at 60 renders is within 2x."""
    import requests

    with tempfile.TemporaryDirectory() as tmp:
        root, data = Path(tmp) / "root", Path(tmp) / "images"
        root.mkdir()
        demo = _flood_stores(root, data, args.views or 4, args.samples or 65536)
        exp = Expected(root / "load", args.block)
        repo = Path(args.server_repo).resolve() if args.server_repo else REPO
        phases = []
        with serve(root, 1, 256 * MiB, {"data": f"demo={data}"}, repo) as service:
            url = service.url
            _warm_up(url, exp)
            requests.get(f"{url}/v1/stores/demo/views/0/0.png", timeout=300)  # workers started
            print(f"server from {repo}; {load()}", flush=True)
            for n in (0, *args.render_clients):
                ph = FloodPhase(n, args.seconds)
                _flood_phase(url, service.pid, exp, ph, args.block_clients,
                             args.block_interval_ms / 1e3, demo)  # fmt: skip
                phases.append(ph)
                print(f"  {n} render clients: block p50/p99 {ph.block_ms} ms; {load()}", flush=True)
    base = phases[0].block_ms[1] if phases[0].block_ms else float("nan")
    rows, ok = [], True
    for ph in phases:
        ratio = ph.block_ms[1] / base if ph.block_ms else float("inf")
        verdict = "-" if ph.render_clients != 60 else ("ok" if ratio <= 2.0 else "FAILED")
        ok &= verdict != "FAILED" and ph.errors == 0 and ph.data_lost == 0
        rows.append([ph.render_clients, ph.block_reads, ph.block_busy_503,
                     "/".join(f"{v:.1f}" for v in ph.block_ms), f"{ratio:.2f}",
                     ph.renders_ok, ph.renders_busy_503,
                     "/".join(f"{v:.0f}" for v in ph.render_ms) or "-",
                     f"{ph.server_cpu_s:.1f} / {ph.render_cpu_s:.1f} / {ph.flood_cpu_s:.1f}",
                     ph.errors, ph.data_lost, verdict])  # fmt: skip
    head = ["render clients", "block reads", "block 503s", "block p50/p99 ms", "p99 / unloaded",
            "renders 200", "renders 503", "render p50/p99 ms",
            "CPU s: server / renders / flood clients",
            "errors", "data lost", "verdict (60: <= 2x)"]  # fmt: skip
    print(table(head, rows))
    for ph in phases:
        for line in ph.error_samples:
            print(f"  {ph.render_clients} render clients: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(ph) for ph in phases], indent=1))
    return 0 if ok else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--cache-mib", type=int, default=256,
                   help="the service's --cache-bytes (256: its default)")  # fmt: skip
    p.add_argument("--views", type=int, help="view slots of the block store (40; flood: 4)")
    p.add_argument("--samples", type=int,
                   help="samples of the block store (262144, 268 MiB: more than the cache; "
                   "flood: 65536)")  # fmt: skip
    p.add_argument("--block", type=int, default=1024, help="samples per block request")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--scenario", choices=("mixed", "render-flood"), default="mixed")
    p.add_argument("--render-clients", type=int, nargs="+", default=[32, 60, 80],
                   help="render-flood: render clients per loaded phase")  # fmt: skip
    p.add_argument("--block-clients", type=int, default=2, help="render-flood: block readers")
    p.add_argument("--block-interval-ms", type=float, default=20.0,
                   help="render-flood: pause after each block read")  # fmt: skip
    p.add_argument("--server-repo", help="render-flood: serve from this checkout")
    args = p.parse_args()
    if args.scenario == "render-flood":
        sys.exit(run_flood(args))
    args.views, args.samples = args.views or 40, args.samples or 262144
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_store(root / "load", args.views, args.samples)
        exp = Expected(root / "load", args.block)
        size = sum(len(v) for v in exp.files.values())
        print(f"store: R={args.views} N={args.samples} K=10, {size / MiB:.1f} MiB; "
              f"cache {args.cache_mib} MiB per worker; {load()}", flush=True)  # fmt: skip
        results = [run_one(root, exp, w, args.clients, args.seconds, args.cache_mib * MiB)
                   for w in args.workers]  # fmt: skip
    print(report(results))
    for r in results:
        for line in r.error_samples:
            print(f"  workers={r.workers}: {line}")
    if args.json:
        out = [{**asdict(r), "rss_bound_mib": r.rss_bound_mib, "ok": r.ok} for r in results]
        Path(args.json).write_text(json.dumps(out, indent=1))
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
