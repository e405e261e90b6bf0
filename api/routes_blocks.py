"""``GET /v1/stores/{name}/blocks/{view}?start=a&stop=b``: targets of one view slot, binary.

The body is the block wire format of :mod:`teacher_store.store.blockfmt` (ids, values in the store's
encoding, valid flags, the store's identity; little-endian; crc32c). The identity is also sent
as the ``X-Distill-Store-Identity`` response header.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.errors import DATA_ERRORS, ApiError, StoreDamaged
from api.registry import StoreEntry
from api.service import Service, ServiceDep, StoreName, data_store, refusing_damaged
from teacher_store.store.blockfmt import IDENTITY_HEADER, MEDIA_TYPE

router = APIRouter(prefix="/v1")
_DOC = {
    200: {
        "description": "One block in the distill block format (see teacher_store.store.blockfmt)",
        "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    **DATA_ERRORS,
}


def check_bounds(
    views: int, samples: int, max_block: int, view: int, start: int, stop: int
) -> None:
    """400 naming the bad value and its limit. An empty range (``stop == start``, at most the
    sample count) is valid: its answer is a block of 0 samples, as the schema admits."""
    if view >= views:
        raise ApiError(
            400,
            "bad_view",
            f"view {view} out of range: this store has {views} view slots [0, {views})",
        )
    if stop < start:
        raise ApiError(400, "bad_range", f"inverted range: stop {stop} is less than start {start}")
    if start > samples or (start == samples and stop > start):
        raise ApiError(
            400,
            "bad_range",
            f"start {start} out of range: this store has {samples} samples [0, {samples})",
        )
    if stop > samples:
        raise ApiError(400, "bad_range", f"stop {stop} exceeds the store's {samples} samples")
    if stop - start > max_block:
        raise ApiError(
            400,
            "block_too_large",
            f"range of {stop - start} samples exceeds the maximum block of {max_block} samples "
            "(DISTILL_MAX_BLOCK); split it into smaller requests",
        )


@router.get("/stores/{name}/blocks/{view}", responses=_DOC, response_class=Response)
async def get_block(
    name: StoreName,
    view: Annotated[int, Path(ge=0, description="view slot")],
    start: Annotated[int, Query(ge=0, description="first sample")],
    stop: Annotated[
        int, Query(ge=0, description="one past the last sample (stop == start: an empty block)")
    ],
    svc: ServiceDep,
) -> Response:
    """Ids, values (stored encoding) and valid flags of view slot ``view`` for ``[start, stop)``."""
    entry = data_store(svc, name)
    try:
        body = await _read(svc, entry, view, start, stop)
    except StoreDamaged:
        # Files that disagree with the manifest last scanned may be a store replaced since that
        # scan: rescan now, and answer from the new store (its blocks carry its identity, so
        # the client sees the change) rather than calling a healthy new store damaged.
        await run_in_threadpool(svc.registry.scan)
        fresh = data_store(svc, name)
        with refusing_damaged(svc, fresh):
            if fresh.uid == entry.uid:
                raise
            entry, body = fresh, await _read(svc, fresh, view, start, stop)
    return Response(body, media_type=MEDIA_TYPE, headers={IDENTITY_HEADER: entry.identity})


async def _read(svc: Service, entry: StoreEntry, view: int, start: int, stop: int) -> memoryview:
    attrs = entry.attrs
    assert attrs is not None
    check_bounds(attrs.views, attrs.num_samples, svc.settings.max_block, view, start, stop)
    body: memoryview = await run_in_threadpool(svc.blocks.read, entry, view, start, stop)
    return body
