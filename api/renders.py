"""View PNG renders off the request path: worker processes, a bounded queue, recent PNGs cached.

A render replays a view with torch and Pillow: tens of milliseconds of CPU per 512 px view,
much of it holding the GIL. Run in the server's thread pool, renders competed with block reads
for that pool and for the GIL (issue 24: 60 clients rendering 512 px views made a 2 ms block
read take 3.4 s). Here renders run in their own small pool of worker processes
(``render_workers``, spawned at the first render and started at a lower CPU priority,
``render_nice``), so the server process never runs replay code. At most ``render_queue`` renders
wait beyond the ones running; one more is answered 503 + ``Retry-After`` at once, so under a
flood renders are refused first and hold no request slot while they wait for nothing. Identical
renders in flight share one job, and the PNGs of recent renders are kept in a byte-bounded LRU
(``render_cache_bytes``) keyed by the store's identity, its image folder and the request: a
repeated view costs a lookup (``X-Distill-Render-Cache: hit``; the ``renders`` cache's hits in
``/metrics``).

The worker functions (:func:`render_png`) run in the child processes and return either the PNG
bytes or an ``(status, code, detail)`` refusal: expected failures never cross the process
boundary as exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import multiprocessing
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from api.cache import ByteLRU
from api.errors import ApiError, store_status
from teacher_store.errors import StoreError

log = logging.getLogger("distill.api")

IMAGE_CACHE = 64  # decoded images a worker's renderer keeps (a view also decodes its partner)
RENDER_CACHE_HEADER = "x-distill-render-cache"  # "hit": served from the cache, "miss": rendered
NO_REPLAY = (
    "rendering views needs torch and Pillow, which this installation lacks (the slim API "
    "image is torch-free): serve with the full `distill` install (Docker Compose: the "
    "dashboard service, `docker compose --profile dashboard up -d dashboard`)"
)
Refusal = tuple[int, str, str]  # (HTTP status, error code, detail) of a render that failed


@dataclass(frozen=True)
class RenderJob:
    """One view to render, with everything a worker process needs to open its store."""

    store: str  # the store's folder
    identity: str  # the store's identity: a regenerated store gets a fresh renderer
    data: str  # the store's image folder
    data_sig: tuple[int, ...]  # the folder's stat signature: a changed folder is rescanned
    slot: int
    sample: int
    size: int | None  # view size before enlarging (None: the teacher's input size)

    @property
    def key(self) -> Hashable:
        """The cache key: the store's identity, its image folder and the request."""
        return (self.store, self.identity, self.data, self.data_sig, self.slot, self.sample,
                self.size)  # fmt: skip


# ---- in the worker processes ---------------------------------------------------------------

_RENDERERS: OrderedDict[Hashable, Any] = OrderedDict()  # (store, identity, data) -> ViewRenderer
_MAX_RENDERERS = 4  # stores whose renderer (and decoded images) a worker keeps


def _start_worker(nice: int) -> None:
    """Worker start-up: a lower CPU priority (renders yield the cores to block reads), one
    torch thread per worker (set before torch loads; a render is a small image), and Ctrl-C
    left to the server, which stops its workers (else each would print a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if nice > 0:
        with contextlib.suppress(OSError):  # no nice here: renders run at normal priority
            os.nice(nice)


def _renderer(job: RenderJob) -> Any:
    key = (job.store, job.identity, job.data, job.data_sig)
    made = _RENDERERS.get(key)
    if made is None:
        from teacher_store.views.shown import ViewRenderer

        made = ViewRenderer(job.store, job.data, IMAGE_CACHE)
        _RENDERERS[key] = made
        while len(_RENDERERS) > _MAX_RENDERERS:
            _RENDERERS.popitem(last=False)
    _RENDERERS.move_to_end(key)
    return made


def render_png(job: RenderJob) -> bytes | Refusal:
    """(In a worker process.) The view as ``distill show`` draws it, as PNG bytes; or why not."""
    try:
        renderer = _renderer(job)
        shown = renderer.render(job.sample, job.slot, job.size)
    except ImportError as e:  # the slim API image has no torch
        return 409, "rendering_unavailable", f"{NO_REPLAY}: {e}"
    except StoreError as e:  # DatasetMismatch, a damaged or unfinished store
        return (*store_status(e), str(e))
    except ValueError as e:  # no targets, or its image (or its partner) is unreadable now
        return 409, "view_unavailable", str(e)
    buf = io.BytesIO()
    shown.image.save(buf, format="PNG")
    return buf.getvalue()


# ---- in the server process -----------------------------------------------------------------


class RenderPool:
    """Worker processes for view renders behind a bounded queue, and an LRU of their PNGs.

    Used from the event loop only (its counters need no lock).
    """

    def __init__(
        self, workers: int, queue: int, cache_bytes: int, nice: int, retry_after_s: int
    ) -> None:
        self.workers, self.queue, self.nice = workers, queue, nice
        self.retry_after_s = retry_after_s
        self.cache = ByteLRU("renders", cache_bytes)
        self.pending = 0  # renders queued or running
        self.wait_s = 1.0  # moving average of a render's time from queued to done
        self.refused = 0  # renders answered 503 because the queue was full
        self._jobs: dict[Hashable, asyncio.Future[bytes | Refusal]] = {}
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server process has threads (a forked lock may be held)
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.nice,),
            )
        return self._pool

    def _busy(self, why: str) -> ApiError:
        # Retry-After: about how long the renders ahead take, so that clients which honour it
        # come back when the queue has room rather than every second (each refusal costs the
        # server a request).
        retry = str(min(60, max(self.retry_after_s, math.ceil(self.wait_s))))
        return ApiError(
            503, "renders_busy", f"{why}; retry after {retry} s", {"retry-after": retry}
        )

    def _submit(self, job: RenderJob) -> asyncio.Future[bytes | Refusal]:
        limit = self.workers + self.queue
        if self.pending >= limit:
            self.refused += 1
            raise self._busy(f"view renders busy ({self.pending} queued or running, limit {limit})")
        pool = self._executor()
        try:
            submitted = pool.submit(render_png, job)
        except BrokenProcessPool:  # a worker died since the last render: start afresh
            self._restart(pool)
            pool = self._executor()
            submitted = pool.submit(render_png, job)
        fut: asyncio.Future[bytes | Refusal] = asyncio.wrap_future(submitted)
        queued = time.monotonic()
        self.pending += 1
        self._jobs[job.key] = fut

        def done(f: asyncio.Future[bytes | Refusal]) -> None:
            self.pending -= 1
            self.wait_s = 0.8 * self.wait_s + 0.2 * (time.monotonic() - queued)
            self._jobs.pop(job.key, None)
            if f.cancelled():
                return
            if isinstance(f.exception(), BrokenProcessPool):
                self._restart(pool)
            elif f.exception() is None and isinstance(f.result(), bytes):
                self.cache.put(job.key, f.result(), len(f.result()))

        fut.add_done_callback(done)
        return fut

    async def png(self, job: RenderJob) -> tuple[bytes, bool]:
        """``(PNG, from the cache)``; ApiError 503 when the queue is full, or the refusal."""
        cached = self.cache.get(job.key)
        if cached is not None:
            return cached, True
        fut = self._jobs.get(job.key) or self._submit(job)
        try:
            # shielded: a client that goes away leaves the render to finish into the cache
            outcome = await asyncio.shield(fut)
        except BrokenProcessPool:  # a worker died (killed, out of memory): renders restart
            raise self._busy("the view renderer restarted") from None
        if isinstance(outcome, tuple):
            raise ApiError(*outcome)
        return outcome, False

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        """Drop the pool ``broken`` (once: a newer pool is left alone); the next render
        starts new workers."""
        if self._pool is broken:
            log.warning("a view render worker died; the next render starts new ones")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Stop the worker processes (queued renders are dropped; a running one finishes)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
