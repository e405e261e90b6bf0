"""``GET /v1/stores/{name}/views/{slot}/{sample}.png``: a stored view, replayed from its images.

The same pixels as ``distill show`` (the view enlarged to at least 224 px). Needs the store's
image folder (``distill serve --data NAME=DIR``); a folder whose fingerprint differs from the
store's, or that holds no class folders, is refused (409, remembered). A slot or sample the
store does not have is 404. The ETag names the store's identity and the request, so a browser
revalidates with ``If-None-Match`` and gets 304. Renders run in worker processes behind a
bounded queue (503 + ``Retry-After`` when it is full) and recent PNGs are cached
(:mod:`api.renders`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from api.dashboard import MAX_VIEW_SIZE, check_view
from api.errors import DATA_ERRORS, ApiError, ErrorBody
from api.renders import RENDER_CACHE_HEADER
from api.service import ServiceDep, StoreName, data_store

router = APIRouter(prefix="/v1")
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "the replayed view (PNG)"},
    404: {"model": ErrorBody, "description": "No such store, view slot or sample"},
    409: {
        "model": ErrorBody,
        "description": "Store unfinished or damaged, or no usable image folder for it",
    },
    503: {"model": ErrorBody, "description": "Renders busy or server overloaded: Retry-After"},
}


@router.get(
    "/stores/{name}/views/{slot}/{sample}.png",
    response_class=Response,
    responses={**DATA_ERRORS, **_PNG, 304: {"description": "not modified (If-None-Match)"}},
)
async def view_png(
    name: StoreName,
    slot: Annotated[int, PathParam(ge=0, le=2**31, description="view slot")],
    sample: Annotated[int, PathParam(ge=0, le=2**40, description="sample id")],
    request: Request,
    svc: ServiceDep,
    size: Annotated[
        int | None, Query(ge=8, le=MAX_VIEW_SIZE, description="view size (px) before enlarging")
    ] = None,
) -> Response:
    """The view ``slot`` of ``sample`` as a PNG (409 when the service has no dataset for it)."""
    entry = data_store(svc, name)
    assert entry.attrs is not None  # complete stores have attrs
    check_view(entry.attrs, slot, sample)
    etag = f'"{entry.identity}-{slot}-{sample}-{size or 0}"'
    headers = {"etag": etag, "cache-control": "private, no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    known, problem = svc.dashboard.remembered(entry)
    if not known:  # the first view of this store (or of a changed folder): walk it once
        problem = await run_in_threadpool(svc.dashboard.problem, entry)
    if problem is not None:
        raise ApiError(*problem)
    png, hit = await svc.renders.png(svc.dashboard.job(entry, slot, sample, size))
    headers[RENDER_CACHE_HEADER] = "hit" if hit else "miss"
    return Response(png, media_type="image/png", headers=headers)
