"""Store readers behind :class:`~teacher_store.reader.client.StoreClient`: one backend per kind of
address (the distill service, zarr over fsspec, a local folder), each with ``attrs``,
``identity``, ``read_block`` and ``close``.

Every backend learns the store's identity (``store_identity`` of its manifest) when it opens
and checks it on every block: the identity in each service block's header, or the manifest
(stat signature, re-hashed when it changes) after each local/fsspec read, raising
:class:`~teacher_store.errors.StoreChangedError` when the store was replaced.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Protocol

import numpy as np
import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from teacher_store.errors import (
    StoreChangedError,
    StoreError,
    StoreIncomplete,
    UnsupportedStoreVersion,
)
from teacher_store.reader.retry import RetryBudgetError, RetryPolicy, StoreClientError, retry_after
from teacher_store.storage.failures import TRANSIENT_STATUS, is_transient
from teacher_store.storage.location import Location, Signature
from teacher_store.store import layout
from teacher_store.store.blockfmt import BlockFormatError, decode_block_with_header, store_identity
from teacher_store.store.content import SampleDigests, load_sample_digests
from teacher_store.store.grow import appended, manifest_lineage
from teacher_store.store.id_order import check_class_ids
from teacher_store.store.layout import MANIFEST
from teacher_store.store.schema import StoreAttrs, check_readable
from teacher_store.store.store_reader import StoreReader, TargetBlock

_RETRY_STATUS = TRANSIENT_STATUS
_SETTLE_S = (0.25, 0.5, 1.0, 2.0)  # waits for a store that is finishing a growth


class Backend(Protocol):
    attrs: StoreAttrs
    identity: str
    grown_from: list[dict[str, Any]]  # the stores this one was grown from (its manifest's)

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock: ...

    def sample_digests(self) -> SampleDigests | None: ...

    def close(self) -> None: ...


def _codec_version() -> int:
    from teacher_store.views.codec import CODEC_VERSION

    return CODEC_VERSION


def readonly(block: TargetBlock) -> TargetBlock:
    for a in (block.ids, block.values, block.valid):
        a.flags.writeable = False
    return block


def _check_block(block: TargetBlock, slot: int, start: int, stop: int, attrs: StoreAttrs) -> None:
    n = stop - start
    if (block.slot, block.start, block.ids.shape) != (slot, start, (n, attrs.topk)):
        raise BlockFormatError(
            f"server answered slot {block.slot} [{block.start}, +{block.ids.shape[0]}) x "
            f"K={block.ids.shape[1]} for slot {slot} [{start}, {stop}) x K={attrs.topk}"
        )
    if block.encoding != attrs.value_encoding or block.ids.dtype != attrs.ids_dtype:
        raise BlockFormatError(
            f"server answered {block.encoding}/{block.ids.dtype}, the store has "
            f"{attrs.value_encoding}/{attrs.ids_dtype}"
        )
    check_class_ids(block.ids, attrs.num_classes, (slot, start))  # the same check as a decode


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: CaseInsensitiveDict[str]
    body: bytearray

    def json(self) -> Any:
        return json.loads(self.body)


def _read_body(r: requests.Response) -> bytearray:
    """The whole body into one bytearray (no intermediate chunks when the length is known)."""
    length = r.headers.get("Content-Length")
    if length is None or r.headers.get("Content-Encoding"):
        return bytearray(r.content)
    buf = bytearray(int(length))
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = r.raw.readinto(view[got:])
        if not n:
            raise requests.exceptions.ChunkedEncodingError(
                f"body ended after {got} of {len(buf)} bytes"
            )
        got += n
    return buf


def _detail(reply: _Reply) -> str:
    try:
        return str(reply.json().get("detail", f"HTTP {reply.status}"))
    except (ValueError, AttributeError):
        return bytes(reply.body[:200]).decode("utf-8", "replace") or f"HTTP {reply.status}"


def _query(params: dict[str, int] | None) -> str:
    return "?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else ""


class ServiceBackend:
    """The distill service: metadata from ``GET {base}``, data from ``{base}/blocks/{view}``."""

    def __init__(self, base: str, token: str | None, retry: RetryPolicy, timeout_s: float):
        self.base = base.rstrip("/")
        self.retry = retry
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._local = threading.local()
        info = self.get(self.base).json()
        if info.get("state") != "complete":
            p = info.get("progress") or {}
            why = info.get("error") or (
                f"unfinished: {p.get('committed_units')}/{p.get('total_units')} shard units "
                "committed; finish it with the same `distill generate`"
            )
            kind = StoreIncomplete if info.get("state") == "incomplete" else StoreError
            raise kind(f"store {self.base} cannot be read ({why})")
        self.attrs = check_readable(info["attrs"], self.base, _codec_version())
        self.max_block = max(1, int(info.get("max_block") or self.attrs.num_samples))
        self.identity = str(info.get("identity") or "")
        self.grown_from = list(info.get("grown_from") or [])
        self.accepted = {self.identity}  # identities of this store with slots appended
        if not self.identity:
            raise UnsupportedStoreVersion(
                f"service {self.base} reports no store identity: it is older than this client; "
                "run the same distill version on server and client"
            )

    def _session(self) -> requests.Session:
        s: requests.Session | None = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.headers.update(self.headers)
            # requests re-reads the proxy and CA variables from the environment on every
            # request (a scan of os.environ: ~0.3 ms of CPU each, measured); read them once for
            # this service. trust_env=False also keeps a ~/.netrc entry from replacing the
            # bearer token with Basic auth.
            s.proxies.update(requests.utils.get_environ_proxies(self.base))
            ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if ca:
                s.verify = ca
            s.trust_env = False
        return s

    def _once(self, url: str, params: dict[str, int] | None) -> _Reply:
        with self._session().get(url, params=params, timeout=self.timeout_s, stream=True) as r:
            return _Reply(r.status_code, CaseInsensitiveDict(r.headers), _read_body(r))

    def get(self, url: str, params: dict[str, int] | None = None) -> _Reply:
        """GET with retries on connection errors, 429 and 5xx-unavailable; raises on 4xx."""
        tries = self.retry.start(f"GET {url}{_query(params)}")
        while True:
            wait: float | None = None
            try:
                reply = self._once(url, params)
                if reply.status < 400:
                    return reply
                if reply.status not in _RETRY_STATUS:
                    raise StoreClientError(
                        f"GET {url}{_query(params)}: HTTP {reply.status}: {_detail(reply)}",
                        url,
                        reply.status,
                    )
                wait = retry_after(reply.headers.get("Retry-After"))
                last = f"HTTP {reply.status}: {_detail(reply)}"
            except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
                last = f"{type(e).__name__}: {e}"
            except requests.exceptions.ChunkedEncodingError as e:
                last = f"connection broke mid-body: {e}"
            if not tries.again(last, wait):
                raise tries.error(last, url)

    def _info_now(self) -> dict[str, Any]:
        """The store's info, waiting out the instant a growth finishes (its metadata and
        manifest are several writes: the service may list the store as invalid in between)."""
        for wait in (0.0, *_SETTLE_S):
            time.sleep(wait)
            info = self.get(self.base).json()
            if info.get("state") == "complete":
                break
        return dict(info)

    def _appended(self, seen: str) -> bool:
        """Whether identity ``seen`` (a block's) is this store's with slots appended."""
        if seen in self.accepted:
            return True
        try:
            info = self._info_now()
        except (StoreClientError, ValueError, AttributeError):
            return False
        now, lineage = str(info.get("identity") or ""), list(info.get("grown_from") or [])
        if not now or not appended(self.identity, now, lineage):
            return False
        ids = [str(e.get("identity")) for e in lineage if isinstance(e, dict)]
        after = ids[ids.index(self.identity) + 1 :] if self.identity in ids else []
        self.accepted.update([*after, now])  # the growths since this client opened the store
        return seen in self.accepted

    def _recheck(self, err: StoreClientError) -> NoReturn:
        """After a 404/409 for a block: StoreChangedError if the store was replaced."""
        try:
            now = str(self._info_now().get("identity") or "")
        except (StoreClientError, ValueError, AttributeError):
            raise err from None
        if not self._appended(now):
            raise StoreChangedError(self.base, self.identity, now) from err
        raise err

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        parts = []
        for a in range(start, stop, self.max_block):
            b = min(stop, a + self.max_block)
            url = f"{self.base}/blocks/{slot}"
            try:
                reply = self.get(url, {"start": a, "stop": b})
            except StoreClientError as e:
                if e.status not in (404, 409):
                    raise
                self._recheck(e)
            try:
                header, block = decode_block_with_header(reply.body)
                if not self._appended(header.identity):
                    raise StoreChangedError(self.base, self.identity, header.identity)
                _check_block(block, slot, a, b, self.attrs)
            except BlockFormatError as e:
                where = f"GET {url}{_query({'start': a, 'stop': b})}"
                raise StoreClientError(f"{where}: {e}", url) from e
            parts.append(block)
        if len(parts) == 1:
            return parts[0]
        cat = [np.concatenate([getattr(p, f) for p in parts]) for f in ("ids", "values", "valid")]
        return TargetBlock(slot, start, cat[0], cat[1], cat[2], self.attrs.value_encoding)

    def read_key(self, key: str) -> bytes:
        """A committed file of the store, from its zarr key space (404: FileNotFoundError)."""
        url = f"{self.base}/zarr/{key}"
        try:
            reply = self.get(url)
        except StoreClientError as e:
            if e.status == 404:
                raise FileNotFoundError(key) from None
            if e.status == 409:
                self._recheck(e)
            raise
        now = reply.headers.get("x-distill-store-identity")
        if now and now != self.identity:
            raise StoreChangedError(self.base, self.identity, now)
        return bytes(reply.body)

    def sample_digests(self) -> SampleDigests | None:
        """The store's per-sample content digests, from its key space (None: it has none)."""
        return load_sample_digests(self.attrs, self.read_key, self.base)

    def close(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            s.close()


class _ManifestWatch:
    """The store identity from its manifest, re-hashed only when the manifest's signature
    (``sig()``: stat or fsspec info fields; None when it has none) changes.

    A new identity is accepted when the new manifest says the store was grown from the one
    opened (``grown_from``, :func:`~teacher_store.store.grow.appended`): slots were appended,
    none of those it had changed."""

    def __init__(self, url: str, sig: Any, read: Any) -> None:
        self.url, self._sig, self._read = url, sig, read
        self.last_sig = self._sig()
        self.identity, self.grown_from = self._hash()
        self.current = self.identity  # the identity now (an append's, once one is seen)
        if not self.identity:
            raise StoreIncomplete(f"store {url} has no {MANIFEST}; it is unfinished")

    def _hash(self) -> tuple[str, list[dict[str, Any]]]:
        try:
            raw = self._read()
        except FileNotFoundError:
            return "", []
        return store_identity(raw), manifest_lineage(raw)

    def check(self) -> None:
        """StoreChangedError unless the manifest still has the identity seen at open, or that
        of the same store with slots appended."""
        try:
            sig = self._sig()
        except FileNotFoundError:
            sig = "missing"
        if sig is not None and sig == self.last_sig:
            return
        now, lineage = ("", []) if sig == "missing" else self._hash()
        if now != self.current:
            if not now or not appended(self.identity, now, lineage):
                raise StoreChangedError(self.url, self.identity, now)
            self.current = now
        self.last_sig = sig


class DirectBackend:
    """A store read directly, not through the service (a folder or any fsspec location): one
    :class:`~teacher_store.store.store_reader.StoreReader`, its storage requests retried
    while ``retry`` allows, every block checked against the manifest's identity.

    ``check_sizes``: stat every manifest file at open (a folder: cheap; an object store: one
    request per file, so its readers skip it and rely on the shards' checksums); ``url``: how a
    changed store is named (the address as the client was given it).
    """

    def __init__(self, location: Location, retry: RetryPolicy, check_sizes: bool, url: str) -> None:
        self.location = location
        self.url = url
        self.retry = retry
        self.reader = StoreReader(location, check_sizes=check_sizes, call=self._retrying)
        checked = self.reader.checked
        self.attrs = self.reader.attrs
        read = lambda: self._retrying(lambda: layout.manifest_bytes(location))  # noqa: E731
        self.watch = _ManifestWatch(self.url, self._manifest_sig, read)
        self.identity, self.grown_from = self.watch.identity, self.watch.grown_from
        if self.identity != checked.identity:  # replaced while it was being opened
            raise StoreChangedError(self.url, checked.identity, self.identity)

    def _manifest_sig(self) -> Signature | None:
        """The manifest's change signature (size, mtime, ETag...); None if nothing but the
        size, which cannot tell two manifests apart (then every check re-hashes)."""
        sig: Signature = self._retrying(lambda: self.location.signature(MANIFEST))
        return None if sig.weak else sig

    def _retrying(self, fn: Any) -> Any:
        tries = self.retry.start(self.url)
        while True:
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                reason = f"{type(e).__name__}: {e}"
                if not tries.again(reason):
                    raise tries.error(reason, self.url) from e

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        try:
            block: TargetBlock = self._retrying(lambda: self.reader.read_block(slot, start, stop))
        except (StoreChangedError, RetryBudgetError):
            raise
        except Exception:
            self.watch.check()  # a store replaced under the read explains the failure
            raise
        self.watch.check()  # after the read: a swap during it is caught too
        return block

    def sample_digests(self) -> SampleDigests | None:
        """The store's per-sample content digests (None: it has none), read with retries."""
        read = lambda key: self._retrying(lambda: self.location.read(key))  # noqa: E731
        digests = load_sample_digests(self.attrs, read, self.url)
        self.watch.check()
        return digests

    def close(self) -> None:
        pass


def fsspec_location(url: str, token: str | None) -> Location:
    """The location of an fsspec URL (already resolved) for a reader: the bearer ``token``
    sent to an http(s) server, messages naming the store by its URL (a file:// one too)."""
    opts: dict[str, Any] = {}
    if token and url.startswith(("http://", "https://")):
        opts["client_kwargs"] = {"headers": {"Authorization": f"Bearer {token}"}}
    return replace(Location.resolved("fsspec", url, **opts), name=url.rstrip("/"))
