"""The zarr key space of a store over HTTP: key checks, Range parsing, ETags, responses.

Implements the contract of DESIGN.md §3 that stock zarr-python (fsspec/obstore) relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.responses import Response

from api.errors import ApiError

IMMUTABLE = "public, max-age=31536000, immutable"
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
# Keys are relative a/b/c paths of letters, digits, '_', '.', '-' (what zarr writes).
KEY_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
_KEY_RE = re.compile(KEY_PATTERN)


def check_key(key: str) -> str:
    """400 for a key outside :data:`KEY_PATTERN` (NUL, backslash, absolute, empty segment...);
    404 for '.'/'..' segments (no such key exists). Defence in depth: routes also serve only
    whitelisted keys, and resolve paths and check containment before reading."""
    if not _KEY_RE.match(key):
        raise ApiError(400, "bad_key", f"invalid zarr key {key!r}: keys are relative a/b/c paths")
    if any(p in (".", "..") for p in key.split("/")):
        raise ApiError(404, "no_such_key", f"no key {key!r}: keys have no '.' or '..' segments")
    return key


_HUGE = 1 << 62  # beyond any file


def _number(digits: str) -> int:
    """A Range number; one of thousands of digits is just huge (int() refuses > 4300 digits,
    which was a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _HUGE


@dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive


def parse_range(header: str | None, total: int) -> ByteRange | bool | None:
    """A satisfiable single range, None to send everything, or False when unsatisfiable (416).

    ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n`` are understood; anything else (other units,
    several ranges, garbage, a > b) is ignored, as RFC 9110 allows, and the whole body is sent.
    """
    if header is None:
        return None
    m = _RANGE.match(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last n bytes
        n = _number(last)
        if n == 0 or total == 0:
            return False
        return ByteRange(max(0, total - n), total)
    a = _number(first)
    b = _number(last) if last else total - 1
    if last and b < a:
        return None
    if a >= total:
        return False
    return ByteRange(a, min(b, total - 1) + 1)


def etag_of(size: int, digest: str, identity: str = "") -> str:
    """A strong ETag from the store identity, the content digest (blake2b-64) and the size.

    The identity (the digest of the store's manifest) ties every key to one store: after the
    store is replaced, no cached key of the old one revalidates (304) or splices into a range
    (If-Range) read of the new one, even where the bytes of that key happen to be equal.
    """
    return f'"{identity}-{digest}-{size:x}"' if identity else f'"{digest}-{size:x}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip() for t in if_none_match.split(","))
    return any((t[2:] if t.startswith("W/") else t) == etag for t in tags)


def base_headers(key: str, etag: str, identity: str = "") -> dict[str, str]:
    media = "application/json" if key.endswith(".json") else "application/octet-stream"
    headers = {
        "content-type": media,
        "accept-ranges": "bytes",
        "etag": etag,
        "cache-control": IMMUTABLE,
    }
    if identity:
        headers["x-distill-store-identity"] = identity
    return headers


def not_modified(headers: dict[str, str]) -> Response:
    keep = {
        k: v
        for k, v in headers.items()
        if k in ("etag", "cache-control", "x-distill-store-identity")
    }
    return Response(status_code=304, headers=keep)


def unsatisfiable(total: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"requested range is outside the {total} bytes of this key",
        {"content-range": f"bytes */{total}", "accept-ranges": "bytes"},
    )
