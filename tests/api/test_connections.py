"""Connection limits: idle and partial-header connections are closed, a stalled reader is
dropped after the send timeout, unsent response bytes are bounded (503), bodies refused (413)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from api.protocol import GuardedH11Protocol
from api.settings import ConnectionLimits
from teacher_store.store.arrays import LocalStore
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
