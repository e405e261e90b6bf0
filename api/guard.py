"""Overload guard and bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import ApiError, error_response

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
bearer = HTTPBearer(auto_error=False, description="the token from --token-file")


class OverloadGuard:
    """At most ``max_inflight`` requests in flight, beyond that 503 + ``Retry-After``.

    Health, readiness and metrics are exempt. Limits come from the running service's settings.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        svc = scope["app"].state.service if "app" in scope else None
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or svc is None:
            await self.app(scope, receive, send)
            return
        limit, retry = svc.settings.max_inflight, str(svc.settings.retry_after_s)
        if self.inflight >= limit:
            response = error_response(
                503,
                "overloaded",
                f"server busy ({self.inflight} requests in flight, limit {limit}); "
                f"retry after {retry} s",
                {"retry-after": retry},
            )
            await response(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


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
