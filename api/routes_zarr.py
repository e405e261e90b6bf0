"""``/v1/stores/{name}/zarr/{key}``: the store's own zarr key space (GET/HEAD, Range, ETag).

Served keys: the group's and arrays' ``zarr.json`` (consolidated metadata at the root),
``_distill/manifest.json`` (read-only) and every shard file the manifest lists. Every other key
is 404 (zarr reads that as "fill value"), except that a key the manifest lists but whose file is
missing or damaged is a 409 JSON error: never a 404, never wrong bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.cache import FileRecord, FileState
from api.errors import DATA_ERRORS, ApiError, StoreDamaged
from api.registry import StoreEntry
from api.service import Service, ServiceDep, StoreName, data_store, refusing_damaged
from api.zarr_keys import (
    KEY_PATTERN,
    base_headers,
    check_key,
    etag_matches,
    etag_of,
    not_modified,
    parse_range,
    unsatisfiable,
)
from teacher_store.storage.location import Location

router = APIRouter(prefix="/v1")
ZarrKey = Annotated[
    str,
    Path(
        pattern=KEY_PATTERN,
        max_length=1024,
        description="a zarr key, e.g. zarr.json, ids/zarr.json, ids/c/0/0/0",
    ),
]
_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
# zarr.json keys are sent as application/json, every other key as application/octet-stream.
_KEY_BYTES = {**_BINARY, "application/json": {"schema": {"type": "object"}}}
_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "The key's bytes", "content": _KEY_BYTES},
    206: {"description": "The requested byte range", "content": _KEY_BYTES},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    416: {"description": "Range not satisfiable", "model": DATA_ERRORS[400]["model"]},
    **DATA_ERRORS,
}


async def _state(
    svc: Service, store: str, key: str, where: Location, want: FileRecord | None
) -> FileState:
    """Resolve, stat and (first time only, in a worker thread) verify a served key."""
    if where.is_local:
        found = svc.files.resolve(store, where, key)
    else:  # a HEAD request to the object store: never on the event loop
        found = await run_in_threadpool(svc.files.resolve, store, where, key)
    if found is None:
        raise StoreDamaged(store, key, "is missing")
    state = svc.files.known(store, key, *found, want)
    if state is None:
        state = await run_in_threadpool(svc.files.verify, store, key, *found, want)
    return state


async def _serve(request: Request, entry: StoreEntry, key: str, svc: Service) -> Response:
    name = entry.name
    check_key(key)
    want = entry.committed(key)
    if want is False:
        if key in entry.empty and entry.exists(key):
            raise StoreDamaged(name, key, "exists, but the manifest records it with size 0")
        raise ApiError(404, "no_such_key", f"store {name!r} has no key {key!r}")
    state = await _state(svc, name, key, entry.location, want)
    headers = base_headers(key, etag_of(state.size, state.digest, entry.identity), entry.identity)
    if etag_matches(request.headers.get("if-none-match"), headers["etag"]):
        return not_modified(headers)
    rng = parse_range(request.headers.get("range"), state.size)
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != headers["etag"]:
        rng = None
    if rng is False:
        raise unsatisfiable(state.size)
    start, stop, status = (0, state.size, 200) if rng is None else (rng.start, rng.stop, 206)  # type: ignore[union-attr]
    if status == 206:
        headers["content-range"] = f"bytes {start}-{stop - 1}/{state.size}"
    headers["content-length"] = str(stop - start)
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers)
    data = svc.files.cached(state)
    if data is not None:
        body = data if (start, stop) == (0, len(data)) else data[start:stop]
    else:
        body = await run_in_threadpool(svc.files.read, state, start, stop, False)
    return Response(body, status_code=status, headers=headers)


@router.api_route(
    "/stores/{name}/zarr/{key:path}",
    methods=["GET", "HEAD"],
    responses=_DOC,
    response_class=Response,
)
async def zarr_key(name: StoreName, key: ZarrKey, request: Request, svc: ServiceDep) -> Response:
    """One zarr key of a complete store (GET or HEAD); ``Range: bytes=a-b | a- | -n`` → 206."""
    entry = data_store(svc, name)
    with refusing_damaged(svc, entry):
        return await _serve(request, entry, key, svc)
