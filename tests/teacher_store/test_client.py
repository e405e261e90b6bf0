"""StoreClient over a local path, zarr-over-fsspec, and the live service: same answers."""

from __future__ import annotations

import http.server
import pickle
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from teacher_store.client import StoreClient, StoreClientError
from teacher_store.errors import StoreDamaged
from teacher_store.images.digests import SampleDigests
from tests.store_fixtures import LiveServer, build_store, make_attrs


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client") / "root"
    build_store(root / "demo", make_attrs(900, views=3, topk=4))
    build_store(root / "unfinished", make_attrs(600), units=2)
    attrs = make_attrs(300, views=2, topk=4)
    dataset = {**attrs.dataset, "content": DIGESTS.record()}
    build_store(root / "digests", attrs.model_copy(update={"dataset": dataset}), digests=DIGESTS)
    return root


# Per-sample content digests of a 300-sample dataset (values only matter as a record).
DIGESTS = SampleDigests(np.random.default_rng(0).integers(1, 2**63, 300, dtype=np.uint64))


@pytest.fixture(scope="module")
def live(root: Path) -> Iterator[LiveServer]:
    from api.main import create_app
    from api.settings import Settings

    with LiveServer(create_app(Settings(root=root, max_block=300))) as server:
        yield server


def _same(a: Any, b: Any) -> None:
    assert (a.slot, a.start, a.encoding) == (b.slot, b.start, b.encoding)
    for f in ("ids", "values", "valid"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert getattr(a, f).dtype == getattr(b, f).dtype


def test_local_fsspec_and_service_agree(root: Path, live: LiveServer) -> None:
    local = StoreClient(root / "demo")
    service = StoreClient(f"{live.url}/v1/stores/demo")
    fsspec = StoreClient(f"{live.url}/v1/stores/demo/zarr/")
    assert (local.kind, fsspec.kind, service.kind) == ("local", "fsspec", "service")
    assert local.attrs == service.attrs == fsspec.attrs
    for slot, start, stop in [(0, 0, 900), (2, 17, 333), (1, 899, 900), (2, 250, 700)]:
        want = local.read_block(slot, start, stop)
        _same(service.read_block(slot, start, stop), want)  # 900 > max_block 300: split
        _same(fsspec.read_block(slot, start, stop), want)
    block = service.read_block(0, 0, 10)
    assert not block.ids.flags.writeable and not local.read_block(0, 0, 10).ids.flags.writeable
    assert np.isfinite(block.logprobs()[block.valid]).all()
    with pytest.raises(ValueError, match="view slot 3"):
        service.read_block(3, 0, 1)
    with pytest.raises(ValueError, match="outside"):
        service.read_block(0, 5, 901)


def test_sample_digests_read_alike_from_every_backend(root: Path, live: LiveServer) -> None:
    """The student's per-image checks get the same record from a folder, fsspec or the service;
    a store without one answers None; a record that is not the attrs' is refused."""
    for address in (
        root / "digests",
        f"{live.url}/v1/stores/digests",
        f"{live.url}/v1/stores/digests/zarr/",
    ):
        got = StoreClient(address).sample_digests()
        assert got is not None and np.array_equal(got.values, DIGESTS.values), address
    assert StoreClient(f"{live.url}/v1/stores/demo").sample_digests() is None
    assert StoreClient(root / "demo").sample_digests() is None
    bad = shutil.copytree(root / "digests", root.parent / "bad-digests")
    key = bad / "_distill" / "sample_digests.u64"
    key.write_bytes(key.read_bytes()[::-1])  # same size: the attrs' sha256 tells
    with pytest.raises(StoreDamaged, match="not the record of this store's images"):
        StoreClient(bad).sample_digests()


def test_prefetch_order_content_and_bound(root: Path, live: LiveServer) -> None:
    client = StoreClient(f"{live.url}/v1/stores/demo", prefetch=3, max_cache_blocks=0)
    local = StoreClient(root / "demo")
    ranges = [(i, min(900, i + 64)) for i in range(0, 900, 64)][::-1]  # any order is kept
    backend = client._open()
    inner, lock, state = backend.read_block, threading.Lock(), {"now": 0, "max": 0}

    def counting(slot: int, start: int, stop: int) -> Any:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            time.sleep(0.01)
            return inner(slot, start, stop)
        finally:
            with lock:
                state["now"] -= 1

    backend.read_block = counting  # type: ignore[method-assign]
    got = list(client.iter_blocks(1, ranges))
    assert [b.start for b in got] == [a for a, _ in ranges]
    for block, (a, b) in zip(got, ranges, strict=True):
        _same(block, local.read_block(1, a, b))
    assert 1 < state["max"] <= 3
    it = client.iter_blocks(2, ranges)
    next(it)
    it.close()  # stopping early cancels what is still queued
    client.close()


def test_pickle_round_trip(root: Path, live: LiveServer) -> None:
    client = StoreClient(f"{live.url}/v1/stores/demo", prefetch=2)
    list(client.iter_blocks(0, [(0, 100), (100, 200)]))  # sessions, threads, cache in use
    raw = pickle.dumps(client)
    assert b"Session" not in raw and b"ThreadPool" not in raw
    twin = pickle.loads(raw)
    assert twin.attrs == client.attrs and twin._backend is None
    _same(twin.read_block(2, 5, 55), client.read_block(2, 5, 55))
    assert len(list(twin.iter_blocks(1, [(0, 10), (10, 20)]))) == 2
    local = pickle.loads(pickle.dumps(StoreClient(root / "demo")))
    _same(local.read_block(2, 5, 55), client.read_block(2, 5, 55))


def test_identity_check(root: Path, live: LiveServer) -> None:
    fp = make_attrs(900, views=3, topk=4).dataset
    for url in (str(root / "demo"), f"{live.url}/v1/stores/demo"):
        StoreClient(url, expected_fingerprint=fp)
        with pytest.raises(ValueError, match=r"different dataset.*num_samples is 900.*1000"):
            StoreClient(url, expected_fingerprint={**fp, "num_samples": 1000})
        with pytest.raises(ValueError, match="sha256"):
            StoreClient(url, expected_fingerprint={**fp, "sha256": "0" * 64})


def test_unfinished_and_unknown_stores_refused(root: Path, live: LiveServer) -> None:
    with pytest.raises(ValueError, match="unfinished"):
        StoreClient(root / "unfinished")
    with pytest.raises(ValueError, match=r"unfinished: 2/\d+ shard units"):
        StoreClient(f"{live.url}/v1/stores/unfinished")
    with pytest.raises(Exception, match=r"409|unfinished"):  # raised through zarr/fsspec
        StoreClient(f"{live.url}/v1/stores/unfinished/zarr/")
    with pytest.raises(StoreClientError) as err:
        StoreClient(f"{live.url}/v1/stores/nothing-here")
    assert err.value.status == 404 and "nothing-here" in str(err.value)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 + Retry-After to the first ``fail`` block requests, then proxies."""

    target = ""
    fail = 0
    retry_after = "0"
    hits: list[float] = []  # noqa: RUF012 - set per test

    def do_GET(self) -> None:
        if "/blocks/" in self.path:
            type(self).hits.append(time.monotonic())
            if len(self.hits) <= self.fail:
                body = b'{"status":503,"error":"overloaded","detail":"busy"}'
                self.send_response(503)
                self.send_header("retry-after", self.retry_after)  # lower case, like starlette
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
        r = requests.get(self.target + self.path, timeout=10)
        self.send_response(r.status_code)
        for k in ("Content-Type", "Content-Length"):
            self.send_header(k, r.headers[k])
        self.end_headers()
        self.wfile.write(r.content)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def flaky(live: LiveServer) -> Iterator[type[_Flaky]]:
    handler = type("Flaky", (_Flaky,), {"target": live.url, "hits": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()


def test_retries_503_honouring_retry_after(root: Path, flaky: Any) -> None:
    flaky.fail, flaky.retry_after = 2, "1"
    client = StoreClient(f"{flaky.url}/v1/stores/demo", retries=4, backoff_s=0.01)
    t0 = time.monotonic()
    block = client.read_block(1, 10, 90)
    assert time.monotonic() - t0 >= 2.0  # two waits of Retry-After: 1 s
    assert len(flaky.hits) == 3 and flaky.hits[1] - flaky.hits[0] >= 1.0
    _same(block, StoreClient(root / "demo").read_block(1, 10, 90))


def test_gives_up_with_a_clear_error(flaky: Any) -> None:
    flaky.fail, flaky.retry_after = 99, "0"
    client = StoreClient(f"{flaky.url}/v1/stores/demo", retries=3, backoff_s=0.01)
    with pytest.raises(StoreClientError, match=r"blocks/0\?start=0&stop=5 failed after 3 .*503"):
        client.read_block(0, 0, 5)
    assert len(flaky.hits) == 3
    with StoreClient(f"{flaky.url}/v1/stores/demo") as ok:
        assert ok.attrs.num_samples == 900
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/stores/demo"
    with pytest.raises(StoreClientError, match=r"127\.0\.0\.1.*failed after 2 attempts"):
        StoreClient(dead, retries=2, backoff_s=0.01)


def test_client_rides_out_the_servers_overload_guard(root: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from api.main import create_app
    from api.settings import Settings

    settings = Settings(root=root, max_inflight=1, retry_after_s=0)
    local = StoreClient(root / "demo")
    with LiveServer(create_app(settings)) as live:
        client = StoreClient(f"{live.url}/v1/stores/demo", retries=50, backoff_s=0.001)
        jobs = [(s % 3, (s * 97) % 800, (s * 97) % 800 + 100) for s in range(48)]
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda j: client.read_block(*j), jobs))
        for block, job in zip(got, jobs, strict=True):
            _same(block, local.read_block(*job))
        metrics = requests.get(f"{live.url}/metrics", timeout=10).text
    rejected = [ln for ln in metrics.splitlines() if 'status="503"' in ln and "_total" in ln]
    assert rejected and sum(float(ln.split()[-1]) for ln in rejected) >= 1


def test_fork_inherited_client_reopens(root: Path, live: LiveServer) -> None:
    import multiprocessing as mp

    client = StoreClient(f"{live.url}/v1/stores/demo", prefetch=2)
    list(client.iter_blocks(0, [(0, 50), (50, 100)]))  # parent's session and threads in use
    want = StoreClient(root / "demo").read_block(2, 0, 200)
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:  # like DataLoader workers started by fork
        sums = pool.map(_sum_ids, [client] * 2)  # pickled: a fresh client per task
    assert sums == [int(want.ids.astype(np.int64).sum())] * 2
    q: Any = ctx.Queue()
    proc = ctx.Process(target=_forked_read, args=(client, q))  # inherited, not pickled
    proc.start()
    assert q.get(timeout=30) == int(want.ids.astype(np.int64).sum())
    proc.join(timeout=30)
    assert proc.exitcode == 0


def _sum_ids(client: StoreClient) -> int:
    return int(client.read_block(2, 0, 200).ids.astype(np.int64).sum())


def _forked_read(client: StoreClient, q: Any) -> None:
    blocks = list(client.iter_blocks(2, [(0, 100), (100, 200)]))
    q.put(int(sum(b.ids.astype(np.int64).sum() for b in blocks)))
