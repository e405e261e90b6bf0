"""Connection limits: idle and partial-header connections are closed, a stalled reader is
dropped after the send timeout, unsent response bytes are bounded (503), bodies refused (413)."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from api.protocol import GuardedH11Protocol
from api.settings import ConnectionLimits
from teacher_store.store.arrays import LocalStore
from tests.reliability import record
from tests.store_fixtures import LiveServer, build_store, make_attrs

LIMITS = ConnectionLimits(
    header_timeout_s=1.5, send_timeout_s=1.5, timeout_keep_alive_s=1.0, limit_concurrency=512,
    max_header_bytes=16384,
)  # fmt: skip
SAMPLES = 65536  # one block of them is 65536 * (32 * 4 + 1) bytes = 8.5 MB: beyond socket buffers


class _ShortTimeouts(GuardedH11Protocol):
    limits = LIMITS


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from api.main import create_app
    from api.settings import Settings

    root = tmp_path_factory.mktemp("conn-root")
    attrs = make_attrs(SAMPLES, views=1, topk=32, chunk=16384, shard=SAMPLES, shard_views=1)
    build_store(root / "big", attrs, seed=3)
    settings = Settings(root=root, max_inflight_bytes=1 << 20)
    options = {**LIMITS.uvicorn_options(), "http": _ShortTimeouts}
    with LiveServer(create_app(settings), **options) as server:
        server.root = root  # type: ignore[attr-defined]
        yield server


def _connect(live: LiveServer, data: bytes = b"", rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket()
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", live.port))
    if data:
        s.sendall(data)
    return s


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """True when the server closes ``s`` (EOF or reset) within ``seconds``; data is skipped."""
    s.settimeout(seconds)
    try:
        while s.recv(1 << 16):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def test_idle_and_partial_header_connections_are_closed(live: LiveServer) -> None:
    idle = _connect(live)
    partial = _connect(live, b"GET /v1/stores HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    answered = _connect(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert not _closed_within(idle, 0.5)  # not before the timeout ...
        assert not _closed_within(partial, 0.1)
        for s in (idle, partial, answered):  # ... but soon after it (1.5 s; keep-alive 1 s)
            assert _closed_within(s, 10.0)
    finally:
        for s in (idle, partial, answered):
            s.close()


def test_request_answered_while_50_connections_idle(live: LiveServer) -> None:
    idle = [_connect(live) for _ in range(50)]
    try:
        r = requests.get(f"{live.url}/v1/stores/big", timeout=5)
        assert r.status_code == 200 and r.json()["complete"]
    finally:
        for s in idle:
            s.close()


def test_stalled_reader_bounded_then_dropped(live: LiveServer) -> None:
    """A client that reads nothing holds one block's bytes; beyond 1 MiB unsent, new block
    requests get 503; after the send timeout the stalled connection is aborted and reads work."""
    url = f"{live.url}/v1/stores/big/blocks/0?start=0&stop={SAMPLES}"
    stalled = _connect(live, b"GET " + url.split(str(live.port))[1].encode() + b" HTTP/1.1\r\n"
                       b"Host: x\r\n\r\n", rcvbuf=4096)  # fmt: skip
    try:
        time.sleep(0.3)  # the server has built the block and is stuck sending it
        busy = requests.get(url, timeout=10)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert "response bytes unsent" in busy.json()["detail"]
        deadline = time.monotonic() + 15  # aborted after 1.5 s without progress
        while (r := requests.get(url, timeout=10)).status_code == 503:
            assert time.monotonic() < deadline, "the stalled response's bytes were never freed"
            time.sleep(0.2)
        assert r.status_code == 200 and len(r.content) > 8 * 10**6
        got_bytes = 0
        stalled.settimeout(5)
        try:
            while chunk := stalled.recv(1 << 16):
                got_bytes += len(chunk)
        except ConnectionResetError:
            pass
        assert got_bytes < len(r.content)  # the server gave up on it: never sent it all
        from teacher_store.client import StoreClient

        root: Path = live.root  # type: ignore[attr-defined]
        got = StoreClient(f"{live.url}/v1/stores/big").read_block(0, 100, 200)
        assert (got.ids == LocalStore(root / "big").read_block(0, 100, 200).ids).all()
    finally:
        stalled.close()


def test_request_bodies_refused(live: LiveServer) -> None:
    r = requests.get(f"{live.url}/v1/stores", data=b"x" * 5000, timeout=5)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    r = requests.post(f"{live.url}/v1/stores", data=iter([b"chunked"]), timeout=5)
    assert r.status_code == 413
    assert requests.get(f"{live.url}/v1/stores", data=b"tiny", timeout=5).status_code == 200


def test_growing_header_refused(live: LiveServer) -> None:
    """A request head that keeps growing past max_header_bytes without ending is refused (h11
    holds at most that much of an incomplete head), not buffered for ever."""
    s = _connect(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    try:
        for _ in range(5):
            s.sendall(b"a" * 4096)
            time.sleep(0.05)
        s.settimeout(5)
        assert s.recv(100).startswith(b"HTTP/1.1 400")
        assert _closed_within(s, 5.0)
    finally:
        s.close()


@pytest.mark.reliability
def test_idle_keep_alive_and_slow_reader_do_not_block_a_request(live: LiveServer) -> None:
    """With the default connection limit (512), a 30 s keep-alive and a 60 s header timeout
    (opening 200 connections on a loaded machine must outlast none of them): 200 idle keep-alive
    connections and a slow reader of an 8.5 MB block are held while a normal request is
    answered; the time it took goes to the Reliability table (goal: within 1 s)."""
    from api.main import create_app
    from api.settings import Settings

    root: Path = live.root  # type: ignore[attr-defined]
    limits = ConnectionLimits(timeout_keep_alive_s=30, header_timeout_s=60)
    assert limits.limit_concurrency >= 256

    class _Patient(GuardedH11Protocol):
        pass

    _Patient.limits = limits
    options = {**limits.uvicorn_options(), "http": _Patient}
    with LiveServer(create_app(Settings(root=root)), **options) as server:
        idle = []
        try:
            for _ in range(200):  # each answers one request, then idles on keep-alive
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/healthz")
                assert conn.getresponse().read() and conn.sock is not None
                idle.append((conn, conn.sock))
            path = f"/v1/stores/big/blocks/0?start=0&stop={SAMPLES}"
            slow = _connect(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 4096)
            slow.settimeout(10)
            assert slow.recv(1024).startswith(b"HTTP/1.1 200")  # its body is on its way
            read = 0
            t0 = time.perf_counter()
            r = requests.get(f"{server.url}/v1/stores/big/blocks/0?start=7&stop=99", timeout=10)
            took = time.perf_counter() - t0
            read += len(slow.recv(16384))  # the slow reader still progresses
            from teacher_store.client import StoreClient

            got = StoreClient(f"{server.url}/v1/stores/big").read_block(0, 7, 99)
            want = LocalStore(root / "big").read_block(0, 7, 99)
            lost = int(r.status_code != 200) + int(not (got.ids == want.ids).all())
            for conn, sock in idle[::20]:  # the idle connections were held, not dropped
                conn.request("GET", "/healthz")
                ok = conn.getresponse().status == 200
                lost += not ok or conn.sock is not sock  # http.client reconnects if closed
            record(
                "slow and idle clients",
                load_held="200 idle keep-alive + 1 slow reader (8.5 MB block)",
                faults_survived=201,
                inputs_tried=1,
                data_lost=lost,
                note=f"a normal request answered in {took * 1e3:.0f} ms (goal < 1000 ms)",
            )
            assert lost == 0 and read > 0
        finally:
            for conn, _ in idle:
                conn.close()
