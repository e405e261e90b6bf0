"""Read-ahead of image bytes: the coming samples' reads run in a bounded thread pool.

On object storage one image read is a request of tens of milliseconds; read one at a time, a
replay worker would wait on every image. Generation and the student know the order they will
read samples in (the shard unit's view order, the epoch's batch plan), so they name the coming
samples (:meth:`ReadAhead.want`) and :class:`ReadAhead` starts their reads in ``threads``
threads; a later :meth:`~ReadAhead.read` of a sample takes its bytes (or its read's error) from
there, else reads it in place.

Never different data: a read done ahead is the source's own ``read`` (content check included),
its result or its exception handed over as they are, and a sample whose read was not started
ahead is read and loaded by the source itself. So views, errors and store bytes are the same
with read-ahead off (``threads=0``: :func:`read_ahead` returns the source itself), on, and at
any thread count. Bounded: at most ``depth`` samples wanted at once, and no more reads are
started while the finished, unconsumed reads hold ``max_bytes``.

One consumer thread per process (a DataLoader worker or the main process). The pool belongs to
the process that made it: a forked worker, or one that unpickled the source, starts its own.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from teacher_store.images.dataset import DatasetFingerprint, DraftRule, decode_image
from teacher_store.images.digests import SampleDigests
from teacher_store.images.source import ImageSource
from teacher_store.options import DEFAULT_READ_THREADS, MAX_READ_THREADS

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "DEFAULT_READ_THREADS",
    "MAX_READ_THREADS",
    "ReadAhead",
    "read_ahead",
    "wanted",
]

_MAX_BYTES = 256 << 20  # finished reads held before no more are started (per process)


class ReadAhead:
    """``source`` (an :class:`ImageSource`) whose reads of wanted samples run ahead in threads.

    Every other member is the source's own. ``depth``: most samples wanted at once (default
    32 per thread, at least a batch of a student's or a generation window's images).
    """

    def __init__(
        self,
        source: ImageSource,
        threads: int = DEFAULT_READ_THREADS,
        depth: int | None = None,
        max_bytes: int = _MAX_BYTES,
    ) -> None:
        if threads < 1:
            raise ValueError(f"read-ahead threads {threads}: must be at least 1 (0: no ReadAhead)")
        self.source, self.threads = source, threads
        self.depth = depth if depth is not None else 32 * threads
        self.max_bytes = max_bytes
        self._pid = -1
        self._pool: ThreadPoolExecutor | None = None
        self._pending: OrderedDict[int, Future[bytes]] = OrderedDict()
        self.served = 0  # reads this process took from the read-ahead (a measure, not state)

    # -- the read-ahead ----------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_pid=-1, _pool=None, _pending=OrderedDict(), served=0)  # no threads travel
        return state

    def _own_pool(self) -> ThreadPoolExecutor:
        """This process's pool (a forked child inherits the parent's, without its threads)."""
        if self._pool is None or self._pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="read-ahead")
            self._pid, self._pending = os.getpid(), OrderedDict()
        return self._pool

    def want(self, samples: Iterable[int]) -> None:
        """The samples to be read next, in the order they will be read: start their reads
        (up to ``depth`` of them); reads started earlier for samples no longer wanted are
        dropped (cancelled, or their bytes let go)."""
        pool = self._own_pool()
        window = list(dict.fromkeys(int(s) for s in samples))[: self.depth]
        keep = set(window)
        for s in [s for s in self._pending if s not in keep]:
            self._pending.pop(s).cancel()
        held = sum(len(f.result()) for f in self._pending.values() if _ok(f))
        for s in window:
            if s in self._pending:
                continue
            if held >= self.max_bytes:
                break
            self._pending[s] = pool.submit(self.source.read, s)

    def pending(self) -> int:
        """Reads started and not yet taken."""
        return len(self._pending) if self._pid == os.getpid() else 0

    def close(self) -> None:
        """Stop the threads (reads not started are cancelled)."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pending, self._pid = None, OrderedDict(), -1

    def _taken(self, index: int) -> Future[bytes] | None:
        if self._pid != os.getpid():
            return None
        got = self._pending.pop(index, None)
        self.served += got is not None
        return got

    def read(self, index: int) -> bytes:
        """Sample ``index``'s bytes: the read started ahead (its bytes, or its error, as the
        source's ``read`` gave them), else the source's read now."""
        got = self._taken(index)
        return got.result() if got is not None else self.source.read(index)

    def load(self, index: int, draft: DraftRule | None = None) -> Image.Image:
        """Sample ``index`` decoded: from the bytes read ahead (decoded as every source
        decodes, naming the sample as :meth:`where` does), else the source's own load."""
        got = self._taken(index)
        if got is None:
            return self.source.load(index, draft)
        where, limit = self.source.where(index), self.source.max_image_pixels
        return decode_image(got.result(), where, limit, draft)

    # -- the source's own members --------------------------------------------------------------

    @property
    def classes(self) -> tuple[str, ...]:
        return self.source.classes

    @property
    def max_image_pixels(self) -> int:
        return self.source.max_image_pixels

    @property
    def content(self) -> SampleDigests | None:
        return self.source.content

    @property
    def location(self) -> str:
        return self.source.location

    def __len__(self) -> int:
        return len(self.source)

    def label(self, index: int) -> int:
        return self.source.label(index)

    def key(self, index: int) -> str:
        return self.source.key(index)

    def where(self, index: int) -> str:
        return self.source.where(index)

    def fingerprint(self) -> DatasetFingerprint:
        return self.source.fingerprint()

    def with_content(self, digests: SampleDigests) -> ReadAhead:
        return ReadAhead(
            self.source.with_content(digests), self.threads, self.depth, self.max_bytes
        )

    def sample_digests(
        self, threads: int = 8, progress: Callable[[int], None] | None = None
    ) -> SampleDigests:
        return self.source.sample_digests(threads, progress)

    def skipped_summary(self, limit: int = 5) -> str | None:
        return self.source.skipped_summary(limit)


def _ok(f: Future[bytes]) -> bool:
    return f.done() and not f.cancelled() and f.exception() is None


def read_ahead(source: ImageSource, threads: int) -> ImageSource:
    """``source`` reading ahead in ``threads`` threads; ``threads=0``: ``source`` itself (no
    threads, every read in place); a source already reading ahead is re-wrapped at the new
    thread count."""
    base = source.source if isinstance(source, ReadAhead) else source
    return base if threads <= 0 else ReadAhead(base, threads)


def wanted(source: ImageSource, samples: Iterable[int]) -> None:
    """Tell ``source`` the samples it will read next, when it reads ahead (else nothing)."""
    if isinstance(source, ReadAhead):
        source.want(samples)
