"""Store addresses: the one place a string becomes "a folder", "an fsspec URL" or "the service".

- ``http(s)://host:port[/prefix]/v1/stores/NAME``: a distill service store (read-only);
- any other URL (``s3://bucket/prefix``, ``file://...``, chains ``a::b://...``): fsspec;
- anything without a scheme: a local folder.

A scheme that neither fsspec nor the service supports (``foo://x``) is refused with
:class:`StoreAddressError`, never taken for a folder name (``s3:`` would otherwise become one).
"""

from __future__ import annotations

import os
import re

from teacher_store.storage.failures import UNSUPPORTED, protocol_problem

__all__ = ["StoreAddressError", "resolve_address"]

_SERVICE_URL = re.compile(r"^https?://[^/?#]+(/[^?#]*)?/v1/stores/[A-Za-z0-9][A-Za-z0-9._-]*/?$")
# Anything before ``://`` (or an fsspec chain's ``::``) is a scheme, valid or not: never a folder.
_SCHEME = re.compile(r"^([^/\\:]+)(://|::)")
# "s3:/bucket" or a bare "s3:": a URL with a mistyped separator, which a path would make into
# a folder called "s3:".
_BROKEN_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(/(?!/)|$)")


class StoreAddressError(ValueError):
    """A store address with a scheme that no reader or writer supports."""


def _check_protocol(name: str, url: str) -> None:
    """StoreAddressError unless fsspec can open ``name://`` here."""
    why = protocol_problem(name)
    if why is None:
        return
    use = "use a folder path, a service URL http(s)://HOST/v1/stores/NAME or an fsspec URL"
    hint = f"; {use}" if why == UNSUPPORTED else ""
    raise StoreAddressError(f"store address {url}: scheme {name!r} {why}{hint}")


def resolve_address(address: str | os.PathLike[str]) -> tuple[str, str]:
    """``(kind, url)`` for a store address: ``service`` (a distill service store URL),
    ``fsspec`` (any other URL, chains ``a::b://...`` included) or ``local`` (no scheme).

    The one place that reads an address; an unsupported scheme is a StoreAddressError.
    """
    url = os.fspath(address)
    m = _SCHEME.match(url)
    if m is None:
        broken = _BROKEN_URL.match(url)
        if broken:
            raise StoreAddressError(
                f"store address {url}: {broken.group(1)}: is not followed by //; write "
                f"{broken.group(1)}://... for a URL, or ./{url} for a folder of that name"
            )
        return "local", url
    url = m.group(1).lower() + url[len(m.group(1)) :]  # schemes are case-insensitive
    if _SERVICE_URL.match(url):
        return "service", url
    for part in url.split("::"):
        _check_protocol(part.split("://", 1)[0].lower(), url)
    return "fsspec", url
