"""The overload guard: beyond max_inflight requests, 503 JSON with Retry-After; health exempt."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from api.guard import OverloadGuard


def test_overload_guard_503_with_retry_after() -> None:
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    settings = SimpleNamespace(
        max_inflight=1, retry_after_s=3, max_inflight_bytes=1 << 30, max_body_bytes=0
    )
    app = SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(settings=settings)))
    guard = OverloadGuard(slow_app)

    async def call(path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": path, "method": "GET", "headers": [], "app": app}
        await guard(scope, receive, send)
        return sent

    async def scenario() -> None:
        first = asyncio.create_task(call("/v1/stores"))
        await asyncio.sleep(0.01)
        rejected = await call("/v1/stores/demo")
        start = rejected[0]
        assert start["status"] == 503
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        assert headers["retry-after"] == "3" and headers["content-type"] == "application/json"
        body = json.loads(rejected[1]["body"])
        assert body["error"] == "overloaded" and "limit 1" in body["detail"]
        health = asyncio.create_task(call("/healthz"))  # exempt: waits like a normal request
        await asyncio.sleep(0.01)
        assert not health.done()
        release.set()
        assert (await first)[0]["status"] == 200 and (await health)[0]["status"] == 200
        assert guard.inflight == 0

    asyncio.run(scenario())
