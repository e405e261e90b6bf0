"""Store addresses: the one place a string becomes "a folder", "an fsspec URL" or "the service".

- ``http(s)://host:port[/prefix]/v1/stores/NAME``: a distill service store (read-only);
- any other URL (``s3://bucket/prefix``, ``file://...``, chains ``a::b://...``): fsspec;
- anything without a scheme: a local folder.

A scheme that neither fsspec nor the service supports (``foo://x``) is refused with
:class:`StoreAddressError`, never taken for a folder name (``s3:`` would otherwise become one).
So are http(s) addresses with credentials (``http://user:pw@host/...``: requests would send
them as Basic auth in place of the bearer token) or with a query string or fragment (no store
address has one; keys would be appended after it). No message here ever shows a URL's
credentials: they are replaced by ``***``.
"""

from __future__ import annotations

import os
import re

from teacher_store.storage.failures import UNSUPPORTED, protocol_problem

__all__ = ["StoreAddressError", "redact_url", "resolve_address"]

_SERVICE_URL = re.compile(r"^https?://[^/?#]+(/[^?#]*)?/v1/stores/[A-Za-z0-9][A-Za-z0-9._-]*/?$")
# Anything before ``://`` (or an fsspec chain's ``::``) is a scheme, valid or not: never a folder.
_SCHEME = re.compile(r"^([^/\\:]+)(://|::)")
# The credentials part of a URL's authority: "scheme://USER:PASSWORD@host".
_USERINFO = re.compile(r"^([^/?#:]+://)[^/?#]*@")
# "s3:/bucket" or a bare "s3:": a URL with a mistyped separator, which a path would make into
# a folder called "s3:".
_BROKEN_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(/(?!/)|$)")


class StoreAddressError(ValueError):
    """A store address with a scheme that no reader or writer supports."""


def redact_url(url: str) -> str:
    """``url`` with the credentials of its authorities (``user:pw@``) replaced by ``***@``
    (in every part of an fsspec chain ``a::b://...``)."""
    return "::".join(_USERINFO.sub(r"\1***@", part) for part in url.split("::"))


def _check_http(url: str, part: str) -> None:
    """StoreAddressError when the http(s) ``part`` of address ``url`` has credentials, a query
    or a fragment."""
    from urllib.parse import urlsplit

    bare = urlsplit(part)._replace(query="", fragment="").geturl()
    shown = redact_url(url.replace(part, bare))  # a query may carry a secret too: not shown
    if _USERINFO.match(part):
        raise StoreAddressError(
            f"store address {shown}: credentials in the URL are not accepted (they would be "
            "sent as Basic auth instead of the bearer token); remove them and pass the token "
            "with --token-file (or token=...)"
        )
    for what, mark in (("a query string (?...)", "?"), ("a fragment (#...)", "#")):
        if mark in part:
            raise StoreAddressError(
                f"store address {shown} has {what}, which no store address carries; remove it"
            )


def _check_protocol(name: str, url: str) -> None:
    """StoreAddressError unless fsspec can open ``name://`` here."""
    why = protocol_problem(name)
    if why is None:
        return
    use = "use a folder path, a service URL http(s)://HOST/v1/stores/NAME or an fsspec URL"
    hint = f"; {use}" if why == UNSUPPORTED else ""
    raise StoreAddressError(f"store address {redact_url(url)}: scheme {name!r} {why}{hint}")


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
    for part in url.split("::"):
        if part.lower().startswith(("http://", "https://")):
            _check_http(url, part)
    if _SERVICE_URL.match(url):
        return "service", url
    for part in url.split("::"):
        _check_protocol(part.split("://", 1)[0].lower(), url)
    return "fsspec", url
