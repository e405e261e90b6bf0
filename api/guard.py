"""Overload guard and bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_response

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
bearer = HTTPBearer(auto_error=False, description="the token from --token-file")


_PIECE = 256 << 10  # bodies go out in pieces this big, each after the transport drained


def _body_refusal(scope: Scope, limit: int) -> str | None:
    """Why the request's body is refused (this service reads none), or None."""
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding":
            return "request bodies are not accepted (Transfer-Encoding given)"
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return f"request body of {value.decode('latin-1')} bytes exceeds {limit} bytes"
    return None


class OverloadGuard:
    """Admission and memory bounds for HTTP requests.

    - A request body beyond ``max_body_bytes`` (or chunked) is answered 413: every route is GET.
    - Beyond ``max_inflight`` requests, or ``max_inflight_bytes`` of response bodies not yet
      sent, a request is answered 503 + ``Retry-After`` (health, readiness, metrics exempt).
    - Large bodies are sent in 256 KiB pieces of one shared memoryview, so uvicorn's flow
      control waits for a slow reader between pieces instead of copying the whole body into
      the connection's buffer (and the protocol's send timeout can drop a stalled reader).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inflight = 0
        self.inflight_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = scope["app"].state.service if "app" in scope else None
        if scope["type"] != "http" or svc is None:
            await self.app(scope, receive, send)
            return
        cfg = svc.settings
        why = _body_refusal(scope, cfg.max_body_bytes)
        if why is not None:
            await error_response(413, "body_too_large", why, {"connection": "close"})(
                scope, receive, send
            )
            return
        if scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        busy = self._busy(cfg.max_inflight, cfg.max_inflight_bytes, cfg.retry_after_s)
        if busy is not None:
            await busy(scope, receive, send)
            return
        self.inflight += 1
        held = 0

        async def send_in_pieces(message: Message) -> None:
            nonlocal held
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= _PIECE:
                await send(message)
                return
            held += len(body)
            self.inflight_bytes += len(body)
            view, more = memoryview(body), message.get("more_body", False)
            for i in range(0, len(view), _PIECE):
                last = i + _PIECE >= len(view)
                piece = {"type": "http.response.body", "body": view[i : i + _PIECE]}
                await send({**piece, "more_body": more or not last})

        try:
            await self.app(scope, receive, send_in_pieces)
        finally:
            self.inflight -= 1
            self.inflight_bytes -= held

    def _busy(self, limit: int, limit_bytes: int, retry_s: int) -> Response | None:
        retry = str(retry_s)
        if self.inflight >= limit:
            what = f"{self.inflight} requests in flight, limit {limit}"
        elif self.inflight_bytes >= limit_bytes:
            what = f"{self.inflight_bytes} response bytes unsent, limit {limit_bytes}"
        else:
            return None
        detail = f"server busy ({what}); retry after {retry} s"
        return error_response(503, "overloaded", detail, {"retry-after": retry})


async def check_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """401 unless the request carries the configured bearer token (constant-time compare)."""
    token: str | None = request.app.state.token
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if credentials is None or not hmac.compare_digest(given.encode(), token.encode()):
        what = "missing" if credentials is None else "wrong"
        raise ApiError(
            401,
            "unauthorized",
            f"{what} bearer token: send 'Authorization: Bearer <token>'",
            {"www-authenticate": "Bearer"},
        )
