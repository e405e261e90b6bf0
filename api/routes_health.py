"""``/healthz`` (process alive), ``/readyz`` (stores scanned), ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from api.models import Health

router = APIRouter()


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Always ok while the process serves requests."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Stores not scanned yet"}},
)
async def readyz(request: Request) -> Response | Health:
    """Ok once the stores under the root have been scanned."""
    svc = getattr(request.app.state, "service", None)
    if svc is None or not svc.registry.ready:
        body = Health(status="starting")
        return JSONResponse(body.model_dump(), status_code=503, headers={"retry-after": "1"})
    return Health(status="ok", stores=len(svc.registry.list()))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, bytes, latency, cache hits/misses."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
