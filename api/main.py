"""The FastAPI app: ``uvicorn api.main:app`` with settings from ``DISTILL_*`` environment variables.

Nothing is opened at import: the lifespan reads the settings, opens the caches and scans the
root once; routes are thin and share the :class:`~api.service.Service`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from swagger_ui_bundle import swagger_ui_path

from api import routes_blocks, routes_health, routes_stores, routes_ui, routes_views, routes_zarr
from api.errors import install_error_handlers
from api.guard import OverloadGuard, check_token
from api.metrics import Metrics, MetricsMiddleware
from api.service import Service
from api.settings import Settings

log = logging.getLogger("distill.api")
API_VERSION = "1"


# OpenAPI links (source path, target path, parameters): how a client (or schemathesis's stateful
# tests) goes from the store list to a store, and from a store to its zarr keys and blocks.
_LINKS = (
    ("/v1/stores", "/v1/stores/{name}", {"path.name": "$response.body#/stores/0/name"}),
    ("/v1/stores/{name}", "/v1/stores/{name}/zarr/{key}",
     {"path.name": "$request.path.name", "path.key": "zarr.json"}),
    ("/v1/stores/{name}", "/v1/stores/{name}/blocks/{view}",
     {"path.name": "$request.path.name", "path.view": 0, "query.start": 0, "query.stop": 1}),
)  # fmt: skip


def _add_links(paths: dict[str, Any]) -> None:
    for source, target, params in _LINKS:
        if source in paths and target in paths:
            op_id = paths[target]["get"]["operationId"]
            name = op_id.split("_v1_")[0]
            ok = paths[source]["get"]["responses"]["200"]
            ok.setdefault("links", {})[name] = {"operationId": op_id, "parameters": params}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, minus its 422s (this service answers 400 + ErrorBody), HEAD twins, and
    the bearer security scheme when no token is configured (then nothing needs auth)."""
    if app.openapi_schema is None:
        with warnings.catch_warnings():  # GET and HEAD share one route; HEAD is dropped below
            warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
            schema = FastAPI.openapi(app)
        for path in schema.get("paths", {}).values():
            path.pop("head", None)
            for op in path.values():
                op.get("responses", {}).pop("422", None)
                if app.state.token is None:
                    op.pop("security", None)
        if app.state.token is None:
            schema.get("components", {}).pop("securitySchemes", None)
        _add_links(schema.get("paths", {}))
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _install_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI from the pinned ``swagger-ui-bundle-v2`` package, served here
    under ``/static/swagger-ui/``: nothing is fetched from a CDN (offline machines see docs)."""
    app.mount("/static/swagger-ui", StaticFiles(directory=str(swagger_ui_path)), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        static = f"{base}/static/swagger-ui"
        return get_swagger_ui_html(
            openapi_url=f"{base}{app.openapi_url}",
            title=f"{app.title} - docs",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge from validator.swagger.io
        )


def _limit_malloc_arenas(arenas: int) -> ctypes.CDLL | None:
    """Cap glibc's malloc arenas; return libc for :func:`_trim_after_evictions` (None off glibc
    or when ``arenas`` is 0). Each worker thread (the thread pool that reads and decodes)
    otherwise gets its own arena (up to 8 per core), and freed cache entries leave holes in
    all of them: measured with bench/load.py (64 clients, 32 MiB cache), RSS grew 47.6 MiB by
    default and 32.0 MiB with 2 arenas."""
    if arenas <= 0:
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        # A fixed mmap threshold: buffers of 128 KiB or more (shard files, blocks) are mapped and
        # given back to the system when freed; glibc's sliding threshold would move them into
        # the arenas after the first such free, where cache evictions leave holes.
        libc.mallopt(-3, 128 << 10)  # M_MMAP_THRESHOLD
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        log.info("malloc arenas not capped: no glibc here")
        return None


_TRIM_EVERY_S = 1.0
_TRIM_AFTER_BYTES = 1 << 20


async def _trim_after_evictions(libc: ctypes.CDLL, svc: Service) -> None:
    """Give freed cache memory back to the system: once a second, if the caches evicted 1 MiB
    or more since the last trim, run ``malloc_trim(0)`` (in a thread: it holds the arenas'
    locks for a few ms). Small entries (decoded chunks, shard files under the mmap threshold)
    live in the arenas, and the pages their evictions free stay in RSS until trimmed:
    bench/load.py at a 256 MiB cache measured RSS growth 288 MiB without, 274 MiB with."""
    last = 0
    while True:
        await asyncio.sleep(_TRIM_EVERY_S)
        evicted = svc.files.lru.evicted + svc.chunks.evicted
        if evicted - last >= _TRIM_AFTER_BYTES:
            last = evicted
            await asyncio.to_thread(libc.malloc_trim, 0)


def _settings_from_env() -> Settings:
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as e:
        from teacher_store.options import option_problems

        lines = option_problems(e, Settings, name=lambda field: f"DISTILL_{field.upper()}")
        problems = "; ".join(lines)
        raise ValueError(f"bad service settings ({problems}); e.g. DISTILL_ROOT=/stores") from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; ``settings`` default to the environment, read when the app starts."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings if settings is not None else _settings_from_env()
        libc = _limit_malloc_arenas(cfg.malloc_arenas)
        svc = Service.create(cfg, metrics)
        trimmer = asyncio.ensure_future(_trim_after_evictions(libc, svc)) if libc else None
        app.state.service = svc
        app.state.token = svc.token
        # The first scan runs in a worker thread while the app already answers: /healthz at
        # once, /readyz 503 until it ends, /v1 requests wait for it.
        first = asyncio.ensure_future(svc.registry.refresh())
        yield
        first.cancel()
        svc.renders.close()
        if trimmer is not None:
            trimmer.cancel()
        app.state.service = None

    app = FastAPI(
        title="distill teacher-store service",
        version=API_VERSION,
        summary="Sparse teacher targets over HTTP: metadata, a zarr key space, binary blocks.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's own /docs and /redoc load their assets from CDNs
        redoc_url=None,
        # No 307 to the path with/without a trailing slash: its Location is built from the
        # request's Host header (a spoofed Host became a redirect to another site) and from
        # names no route accepted. Such paths answer 404 JSON.
        redirect_slashes=False,
    )
    app.state.metrics = metrics
    app.state.service = None
    app.state.token = None
    install_error_handlers(app)
    protected = [Depends(check_token)]
    for module in (routes_stores, routes_zarr, routes_blocks, routes_views):
        app.include_router(module.router, dependencies=protected)
    app.include_router(routes_ui.fragments, dependencies=protected)
    app.include_router(routes_ui.pages)  # open shells: the data comes from the fragments
    app.include_router(routes_health.router)
    app.mount("/ui/static", StaticFiles(directory=str(routes_ui.STATIC_DIR)), name="ui-static")
    _install_docs(app)
    app.add_middleware(OverloadGuard)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
