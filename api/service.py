"""The service's heavy objects, created once in the app's lifespan and shared by all routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam

from api.blocks import BlockReader
from api.cache import ByteLRU, FileCache
from api.dashboard import Dashboard
from api.errors import ApiError, StoreDamaged
from api.metrics import Metrics
from api.registry import NAME_PATTERN, NAME_RE, Registry, StoreEntry, check_root
from api.renders import RenderPool
from api.settings import Settings, read_token


@dataclass
class Service:
    settings: Settings
    registry: Registry
    files: FileCache
    chunks: ByteLRU
    blocks: BlockReader
    token: str | None
    dashboard: Dashboard
    renders: RenderPool

    @classmethod
    def create(cls, settings: Settings, metrics: Metrics) -> Service:
        check_root(settings.root)
        token = read_token(settings.token_file)
        half = settings.cache_bytes // 2
        files = FileCache(half)
        chunks = ByteLRU("chunks", settings.cache_bytes - half)
        renders = RenderPool(
            settings.render_workers,
            settings.render_queue,
            settings.render_cache_bytes,
            settings.render_nice,
            settings.retry_after_s,
        )
        metrics.watch_caches([files.lru, chunks, renders.cache])
        registry = Registry(settings.root, settings.rescan_interval_s)
        dashboard = Dashboard(settings.data_dirs())
        blocks = BlockReader(files, chunks)
        return cls(settings, registry, files, chunks, blocks, token, dashboard, renders)


async def service(request: Request) -> Service:
    """The running service, its store view refreshed (off the event loop) when it is stale."""
    svc: Service | None = getattr(request.app.state, "service", None)
    if svc is None:
        raise ApiError(
            503, "starting", "the service is starting; retry shortly", {"retry-after": "1"}
        )
    await svc.registry.refresh()
    return svc


ServiceDep = Annotated[Service, Depends(service)]
StoreName = Annotated[
    str,
    PathParam(pattern=NAME_PATTERN, max_length=128, description="store folder name under the root"),
]


def find_store(svc: Service, name: str) -> StoreEntry:
    """The store called ``name`` (404 when there is none)."""
    entry = svc.registry.get(name) if NAME_RE.match(name) else None
    if entry is None:
        raise ApiError(404, "unknown_store", f"no store named {name!r} under the served root")
    return entry


def data_store(svc: Service, name: str) -> StoreEntry:
    """A store whose data may be served (409 for unfinished or unreadable stores)."""
    entry = find_store(svc, name)
    if entry.state == "incomplete":
        raise ApiError(
            409,
            "store_incomplete",
            f"store {name!r} is unfinished ({entry.committed_units}/{entry.total_units} shard "
            "units committed); finish it with the same `distill generate` before reading it",
        )
    if entry.state == "invalid":
        raise ApiError(409, entry.code, entry.error or f"store {name!r} cannot be served")
    return entry


@contextmanager
def refusing_damaged(svc: Service, entry: StoreEntry) -> Iterator[None]:
    """Around the reads of one store: a damaged file makes the whole store list itself as
    damaged and refuse its data (the service never mixes good and bad shards of one store)."""
    try:
        yield
    except StoreDamaged as e:
        svc.registry.mark_damaged(entry, e.key, str(e))
        raise
