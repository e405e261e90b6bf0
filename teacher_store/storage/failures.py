"""Storage failures: which provider a filesystem is, a bucket probed before any work, a failed
request explained in one line, and which errors are worth a retry.

:data:`PROVIDERS` is the one list of object stores; a new one is a module of this room (as
:mod:`.s3`) plus its line here.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from teacher_store.errors import StoreAccessError, StoreNotFound, causes
from teacher_store.storage.provider import Failure, Provider, first_line
from teacher_store.storage.s3 import S3

if TYPE_CHECKING:
    from teacher_store.storage.location import Location

PROVIDERS: tuple[Provider, ...] = (S3,)

# HTTP statuses of an overloaded or restarting server: worth a retry.
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
UNSUPPORTED = "is not supported"


def protocols(fs: Any) -> tuple[str, ...]:
    """The protocol names of an fsspec filesystem."""
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


def provider_of(fs: Any) -> Provider | None:
    """The object store behind an fsspec filesystem, or None (a folder, memory, http...)."""
    names = set(protocols(fs))
    return next((p for p in PROVIDERS if p.protocols & names), None)


def provider_for(protocol: str) -> Provider | None:
    """The object store serving an fsspec protocol name, or None."""
    return next((p for p in PROVIDERS if protocol in p.protocols), None)


def protocol_problem(name: str) -> str | None:
    """None when fsspec can open ``name://`` here; else why not, as words that follow
    "scheme 'name'": :data:`UNSUPPORTED`, or that its package is not installed."""
    import fsspec

    try:
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*", name):
            raise ValueError(name)
        fsspec.get_filesystem_class(name)
    except ValueError:
        return UNSUPPORTED
    except ImportError as e:  # a known protocol whose package is missing (gcsfs, adlfs...)
        return f"needs a package that is not installed ({first_line(e)})"
    return None


def probe(loc: Location, what: str = "store") -> None:
    """A one-line typed error now, rather than a traceback later, when the object store is
    unreachable, refuses the credentials or has no such bucket (other storage: nothing);
    ``what`` names the thing at ``loc`` in the message (a store, a dataset)."""
    p = provider_of(loc.fs)
    if p is None:
        return
    bucket = loc.root.split("/", 1)[0]
    endpoint = p.endpoint(loc.fs)
    try:
        loc.fs.info(bucket)
    except FileNotFoundError:
        raise StoreNotFound(
            f"{what} {loc.display}: bucket {bucket!r} does not exist at {endpoint}; create "
            f"it or fix the address (and {p.endpoint_variable})"
        ) from None
    except PermissionError as e:
        raise StoreAccessError(
            f"{what} {loc.display}: {endpoint} refused the credentials ({first_line(e)}); "
            f"check {p.credentials}"
        ) from None
    except Exception as e:  # connection refused, DNS, TLS: the client library's own types
        raise StoreAccessError(
            f"{what} {loc.display}: cannot reach {endpoint} ({first_line(e)}); check "
            f"{p.endpoint_variable} and the network"
        ) from None


def storage_failure(loc: Location, e: BaseException) -> Failure | None:
    """(what went wrong, what to do), each one line, when ``e`` is an object store refusing
    or failing a request on ``loc`` (credentials revoked, bucket deleted, a 5xx, the endpoint
    gone); None for anything else, and always for a folder."""
    p = provider_of(loc.fs)
    if p is None:
        return None
    endpoint, bucket = p.endpoint(loc.fs), loc.root.split("/", 1)[0]
    for seen in causes(e):
        if isinstance(seen, ValueError):  # a deliberate message (raised while handling one)
            return None
        found = p.classify(seen, endpoint, bucket)
        if found is not None:
            return found
    return None


def is_transient(e: BaseException) -> bool:
    """Connection trouble or an overloaded server, as raised through zarr/fsspec: worth a
    retry (a missing file or a refusal is not)."""
    if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    status = getattr(e, "status", None) or getattr(e, "code", None)
    if isinstance(status, int):
        return status in TRANSIENT_STATUS
    try:
        import aiohttp
    except ImportError:
        return isinstance(e, OSError | TimeoutError)
    return isinstance(
        e, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError | TimeoutError
    )


__all__ = [
    "PROVIDERS",
    "TRANSIENT_STATUS",
    "UNSUPPORTED",
    "is_transient",
    "probe",
    "protocol_problem",
    "protocols",
    "provider_for",
    "provider_of",
    "storage_failure",
]
