"""One reader for a store wherever it lives: a local folder, an fsspec URL, or the service.

:func:`open_store` (or ``StoreClient(address)``) picks the backend from the address, parsed in
one place (:func:`resolve_address`):

- ``http(s)://host:port[/prefix]/v1/stores/NAME`` — the distill service; blocks come from its
  block endpoint in the binary format of :mod:`teacher_store.store.blockfmt` (split to the server's
  ``max_block``), retrying connection errors, 429 and 503 with exponential backoff (honouring
  ``Retry-After``) until a total time budget is spent (``retry_budget_s``, default 10 min;
  every wait is logged at WARNING with its reason and the time left);
- any other URL (``http://host/v1/stores/NAME/zarr/``, ``s3://...``, ``file://...``) — zarr over
  fsspec, attrs from the root ``zarr.json``, completeness from ``_distill/manifest.json``;
- anything without a scheme — a local folder read with
  :class:`~teacher_store.store.arrays.LocalStore`.

A scheme that neither fsspec nor the service supports (``foo://x``) is refused with
:class:`StoreAddressError`, never taken for a folder.

Every backend has the same interface (``attrs``, ``read_block``, ``iter_blocks``), refuses
unfinished stores, checks the dataset fingerprint against ``expected_fingerprint``, and returns
read-only arrays. The client keeps the blocks it read in one LRU (``max_cache_blocks``) that
``prefetch`` threads fill ahead of use (``iter_blocks``, ``prefetch_blocks``). Every backend
learns the store's identity (``store_identity`` of its manifest) when it opens and checks it on
every block: the identity in each service block's header, or the manifest (stat signature,
re-hashed when it changes) after each local/fsspec read. A store regenerated or replaced while
it is read raises :class:`StoreChangedError`, never mixed data.
The client pickles without its sessions, threads and cache (DataLoader workers reopen lazily).
This module must not import torch.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import Any

from teacher_store.errors import (
    DatasetMismatch,
    StoreChangedError,
    StoreError,
)
from teacher_store.reader.address import StoreAddressError, resolve_address
from teacher_store.reader.backends import (
    Backend,
    DirectBackend,
    ServiceBackend,
    fsspec_location,
    readonly,
)
from teacher_store.reader.retry import RetryBudgetError, RetryPolicy, StoreClientError
from teacher_store.storage.location import Location
from teacher_store.store.content import SampleDigests
from teacher_store.store.grow import append_compatible, appended
from teacher_store.store.schema import StoreAttrs
from teacher_store.store.store_reader import TargetBlock

__all__ = [
    "DatasetMismatchError",
    "RetryBudgetError",
    "RetryPolicy",
    "StoreAddressError",
    "StoreChangedError",
    "StoreClient",
    "StoreClientError",
    "open_store",
    "resolve_address",
]


class DatasetMismatchError(DatasetMismatch):
    """The store was built from another dataset than ``expected_fingerprint`` describes."""

    def __init__(self, url: str, why: str, store_dataset: dict[str, Any]) -> None:
        super().__init__(f"store {url} was built from a different dataset than expected: {why}")
        self.url, self.why, self.store_dataset = url, why, store_dataset


# Fingerprint fields a store may lack (made before they were recorded): compared when both
# sides have them (DatasetFingerprint.mismatch's rule).
_OPTIONAL = ("labels_sha256", "content")


def _fingerprint_mismatch(have: dict[str, Any], want: dict[str, Any]) -> str | None:
    """How the store's dataset fingerprint ``have`` differs from ``want``, or None: when both
    record the content, it decides with the labels (names and sizes may differ: the tar shards
    packed from the store's folder), else names and sizes do."""
    by_content = bool(have.get("content")) and bool(want.get("content"))
    for key, value in want.items():
        if key in _OPTIONAL and (key not in have or value is None):
            continue
        if key == "sha256" and by_content:
            continue
        if key not in have:
            return f"the store's dataset fingerprint has no {key!r}"
        if have[key] != value:
            if isinstance(value, list | tuple) and len(value) > 4:
                return (
                    f"{key} differs ({len(have[key])} entries in the store, {len(value)} expected)"
                )
            return f"{key} is {have[key]!r} in the store, {value!r} expected"
    return None


class StoreClient:
    """Read a complete store from a path, an fsspec URL or the service (see the module doc).

    Prefer :func:`open_store`; the client caches up to ``max_cache_blocks`` blocks and reads up
    to ``prefetch`` ahead in threads (``iter_blocks``, ``prefetch_blocks``).
    """

    def __init__(
        self,
        url_or_path: str | os.PathLike[str],
        token: str | None = None,
        expected_fingerprint: dict[str, Any] | None = None,
        prefetch: int = 2,
        max_cache_blocks: int = 4,
        retry_budget_s: float = 600.0,
        retries: int | None = None,
        backoff_s: float = 0.25,
        timeout_s: float = 60.0,
    ) -> None:
        """``retry_budget_s``: how long one read keeps retrying an unreachable or overloaded
        store before it fails; ``retries`` additionally caps the attempts (None: no cap)."""
        if prefetch < 0 or max_cache_blocks < 0:
            raise ValueError("prefetch and max_cache_blocks must be >= 0")
        self.kind, self.url = resolve_address(url_or_path)  # service, fsspec or local
        self.token = token
        self.expected_fingerprint = dict(expected_fingerprint) if expected_fingerprint else None
        self.prefetch = prefetch
        self.max_cache_blocks = max_cache_blocks
        self.retry = RetryPolicy(retry_budget_s, backoff_s, attempts=retries)
        self.timeout_s = timeout_s
        self._attrs: StoreAttrs | None = None
        self._identity = ""
        self._reset()
        self._open()

    def _reset(self) -> None:
        self._backend: Backend | None = None
        self._pool: ThreadPoolExecutor | None = None
        # Finished and in-flight reads, least recently used first.
        self._cache: OrderedDict[tuple[int, int, int], Future[TargetBlock]] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _forked(self) -> None:
        """In a forked child (DataLoader workers) drop the parent's sockets, threads and lock."""
        if self._pid != os.getpid():
            self._reset()

    def _open(self) -> Backend:
        self._forked()
        with self._lock:
            if self._backend is not None:
                return self._backend
            kind = self.kind
            backend: Backend
            if kind == "service":
                backend = ServiceBackend(self.url, self.token, self.retry, self.timeout_s)
            elif kind == "fsspec":
                loc = fsspec_location(self.url, self.token)
                url = self.url.rstrip("/") + "/"
                backend = DirectBackend(loc, self.retry, check_sizes=False, url=url)
            else:
                loc = Location.resolved(kind, self.url)  # the address, resolved once above
                backend = DirectBackend(loc, self.retry, check_sizes=True, url=self.url)
            self._validate(backend.attrs, backend.identity, backend.grown_from)
            self._backend = backend
            return backend

    def _validate(self, attrs: StoreAttrs, identity: str, grown_from: list[dict[str, Any]]) -> None:
        if self._attrs is not None and self._identity and identity != self._identity:
            # A reopen (a forked worker) of a store grown since: the slots seen stay as they
            # were, so the client keeps the attrs and identity it opened with.
            if not appended(self._identity, identity, grown_from):
                raise StoreChangedError(self.url, self._identity, identity)
            if not append_compatible(self._attrs, attrs):
                raise StoreError(f"store {self.url} changed since this client was created")
            return
        if self._attrs is not None and attrs != self._attrs:
            raise StoreError(f"store {self.url} changed since this client was created")
        self._identity = identity
        if self.expected_fingerprint is not None:
            why = _fingerprint_mismatch(attrs.dataset, self.expected_fingerprint)
            if why is not None:
                raise DatasetMismatchError(self.url, why, dict(attrs.dataset))
        self._attrs = attrs

    @property
    def identity(self) -> str:
        """The store's identity (:func:`~teacher_store.store.blockfmt.store_identity`) at open."""
        if not self._identity:
            self._open()
        return self._identity

    def continues(self, identity: str) -> bool:
        """Whether the store with ``identity`` (one recorded earlier: a checkpoint's, a
        cursor's) is this store, or this store before slots were appended to it: its slots
        then hold the same stored values here (:func:`~teacher_store.store.grow.appended`)."""
        now = self.identity
        backend = self._open()
        return appended(identity, now, list(getattr(backend, "grown_from", []) or []))

    @property
    def attrs(self) -> StoreAttrs:
        """The store's root attrs (opens the store on first use)."""
        if self._attrs is None:
            self._open()
        assert self._attrs is not None
        return self._attrs

    def sample_digests(self) -> SampleDigests | None:
        """The per-sample content digests the store records (checked against its attrs; read
        afresh on each call), None for a store made before they were recorded."""
        return self._open().sample_digests()

    def _fetch(self, slot: int, start: int, stop: int) -> TargetBlock:
        return readonly(self._open().read_block(slot, start, stop))

    def _keep(self, key: tuple[int, int, int], fut: Future[TargetBlock]) -> None:
        """Cache ``fut`` as the most recent block (call with the lock held)."""
        if self.max_cache_blocks:
            self._cache[key] = fut
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cache_blocks:
                self._cache.popitem(last=False)

    def _cached(self, key: tuple[int, int, int]) -> Future[TargetBlock] | None:
        with self._lock:
            fut = self._cache.get(key)
            if fut is not None:
                self._cache.move_to_end(key)
            return fut

    def _submit(self, slot: int, start: int, stop: int) -> Future[TargetBlock]:
        """The block's cached or in-flight read, else a new one in a prefetch thread."""
        self._forked()
        self.attrs.check_block(slot, start, stop)
        key = (slot, start, stop)
        with self._lock:
            fut = self._cache.get(key)
            if fut is not None and not fut.cancelled():
                self._cache.move_to_end(key)
                return fut
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max(1, self.prefetch), thread_name_prefix="store-prefetch"
                )
            fut = self._pool.submit(self._fetch, slot, start, stop)
            self._keep(key, fut)
            return fut

    def _result(self, key: tuple[int, int, int], fut: Future[TargetBlock]) -> TargetBlock:
        """The block of a read; a failed one leaves the cache, a cancelled one (an
        ``iter_blocks`` stopped early) is read again here."""
        try:
            return fut.result()
        except CancelledError:
            return self._read_now(key)
        except Exception:
            with self._lock:
                if self._cache.get(key) is fut:
                    del self._cache[key]
            raise

    def _read_now(self, key: tuple[int, int, int]) -> TargetBlock:
        block = self._fetch(*key)
        done: Future[TargetBlock] = Future()
        done.set_result(block)
        with self._lock:
            self._keep(key, done)
        return block

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        """Targets of view slot ``slot`` for samples ``[start, stop)`` (read-only arrays):
        from the cache, from a prefetch under way, else read now."""
        self._forked()
        self.attrs.check_block(slot, start, stop)
        key = (slot, start, stop)
        fut = self._cached(key)
        return self._read_now(key) if fut is None else self._result(key, fut)

    def prefetch_blocks(self, slot: int, ranges: Iterable[tuple[int, int]]) -> None:
        """Start reading these blocks in the background into the cache, for ``read_block``
        to take later (nothing to do without prefetch threads or a cache)."""
        if self.prefetch and self.max_cache_blocks:
            for start, stop in ranges:
                self._submit(slot, start, stop)

    def iter_blocks(self, slot: int, ranges: Iterable[tuple[int, int]]) -> Iterator[TargetBlock]:
        """Blocks for ``ranges`` in order, fetching up to ``prefetch`` ahead in threads."""
        self._forked()
        if self.prefetch == 0:
            for start, stop in ranges:
                yield self.read_block(slot, start, stop)
            return
        pending: deque[tuple[tuple[int, int, int], Future[TargetBlock]]] = deque()
        try:
            for start, stop in ranges:
                pending.append(((slot, start, stop), self._submit(slot, start, stop)))
                if len(pending) > self.prefetch:
                    yield self._result(*pending.popleft())
            while pending:
                yield self._result(*pending.popleft())
        finally:
            for _, f in pending:
                f.cancel()

    def close(self) -> None:
        """Stop the prefetch threads and close the reader; the client reopens on next use."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._backend is not None:
            self._backend.close()
        self._reset()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["_attrs"], state["_identity"] = self._attrs, self._identity
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()  # sessions, threads and the cache are rebuilt lazily in this process

    def __repr__(self) -> str:
        return f"StoreClient({self.url!r}, kind={self.kind})"


def open_store(
    address: str | os.PathLike[str],
    token: str | None = None,
    expected_fingerprint: dict[str, Any] | None = None,
    *,
    prefetch: int = 2,
    max_cache_blocks: int = 4,
    retry_budget_s: float = 600.0,
) -> StoreClient:
    """A reader for the complete store at ``address``: a folder, an fsspec URL or a distill
    service URL (``http(s)://HOST[/prefix]/v1/stores/NAME``); see the module doc.

    ``expected_fingerprint`` (a :class:`~teacher_store.images.dataset.DatasetFingerprint`
    dict) refuses a store built from another dataset (DatasetMismatchError); an unsupported
    scheme is a StoreAddressError. The reader keeps ``max_cache_blocks`` blocks and reads up to
    ``prefetch`` ahead; a read retries an unreachable or busy store for ``retry_budget_s``.
    """
    return StoreClient(
        address,
        token=token,
        expected_fingerprint=expected_fingerprint,
        prefetch=prefetch,
        max_cache_blocks=max_cache_blocks,
        retry_budget_s=retry_budget_s,
    )
