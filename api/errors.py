"""Every error is a JSON body ``{"status", "error", "detail"}`` with a 4xx, or a 5xx for faults."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from teacher_store import errors as store_errors

log = logging.getLogger("distill.api")


class ErrorBody(BaseModel):
    """The body of every error response."""

    model_config = ConfigDict(frozen=True)

    status: int
    error: str
    detail: str


class ApiError(Exception):
    """An expected failure with its HTTP status, short code and a message for humans."""

    def __init__(
        self, status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})


class StoreDamaged(store_errors.StoreDamaged):
    """A committed file of a store is missing, resized, corrupt or escapes the store."""

    def __init__(self, store: str, key: str, problem: str) -> None:
        super().__init__(
            key,
            problem,
            f"store {store!r} is damaged: {key} {problem}; the server will not serve it. "
            "Regenerate the store (re-run the same `distill generate`) or restore the file.",
        )
        self.store = store
        self.key = key

    def __reduce__(self) -> tuple[type[StoreDamaged], tuple[str, str, str]]:
        return type(self), (self.store, self.key, self.reason)


# Typed store errors -> (HTTP status, error code); the most specific class listed wins.
STORE_ERRORS: dict[type[store_errors.StoreError], tuple[int, str]] = {
    store_errors.StoreNotFound: (404, "unknown_store"),
    store_errors.StoreIncomplete: (409, "store_incomplete"),
    store_errors.StoreDamaged: (409, "store_damaged"),
    store_errors.UnsupportedStoreVersion: (409, "store_invalid"),
    store_errors.StoreChangedError: (409, "store_changed"),
    # An image replaced since the store was made: its stored targets are other pixels'.
    store_errors.ImageChangedError: (409, "image_changed"),
    store_errors.DatasetMismatch: (409, "dataset_mismatch"),
    store_errors.StoreConflict: (409, "store_conflict"),
    # The object store behind the service refused its credentials or is unreachable: the
    # server's storage failed, not the request.
    store_errors.StoreAccessError: (502, "storage_unavailable"),
    store_errors.StoreError: (409, "store_invalid"),
}


def store_status(exc: store_errors.StoreError) -> tuple[int, str]:
    """The (status, code) of a typed store error, from :data:`STORE_ERRORS`."""
    for cls in type(exc).__mro__:
        if cls in STORE_ERRORS:
            return STORE_ERRORS[cls]
    return 409, "store_invalid"  # unreachable: StoreError itself is in the table


def io_error(store: str, key: str, e: OSError) -> ApiError:
    """A real storage fault on the server (permissions, I/O error): a 500, said plainly."""
    return ApiError(
        500, "io_error", f"server cannot read {key} of store {store!r}: {e.strerror or e}"
    )


def error_response(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(status=status, error=error, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers or {}))


def _code(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path"))
        got = err.get("input")
        parts.append(f"{where}: {err.get('msg', 'invalid')} (got {got!r})")
    return "invalid request: " + "; ".join(parts)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _store_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, store_errors.StoreError)
    log.error("%s", exc)
    status, code = store_status(exc)
    return error_response(status, code, str(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = "no such endpoint; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"method not allowed here; allowed: {(exc.headers or {}).get('Allow', 'GET')}"
    return error_response(exc.status_code, _code(exc.status_code), detail, exc.headers)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "bad_request", _validation_detail(exc))


async def _fault(_: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error", exc_info=exc)
    return error_response(500, "internal_error", f"internal server error: {type(exc).__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(store_errors.StoreError, _store_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _fault)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed request or value out of bounds"},
    401: {"model": ErrorBody, "description": "Missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "No such store or key"},
    503: {"model": ErrorBody, "description": "Overloaded: retry after Retry-After seconds"},
}
DATA_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    409: {"model": ErrorBody, "description": "Store unfinished, unreadable or damaged"},
    502: {"model": ErrorBody, "description": "The store's object storage refused or failed"},
}
