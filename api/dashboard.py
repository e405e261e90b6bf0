"""The dashboard's state: per-store readers, chart numbers and image-folder checks, cached by
the store's identity (a regenerated store is read afresh).

Rendering a view needs the store's image folder (``distill serve --data NAME=DIR``); the
renders themselves run in worker processes (:mod:`api.renders`). The folder is checked here,
once per store identity and folder state (its stat signature): a folder that is not the store's
dataset, or no image folder at all, is refused (409) with the reason, remembered rather than
rescanned per request. The check imports Pillow, never torch: the API process imports no torch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

from api.errors import ApiError
from api.registry import StoreEntry
from api.renders import NO_REPLAY, Refusal, RenderJob
from api.view_stats import ViewStats, store_stats

log = logging.getLogger("distill.api")
MAX_VIEW_SIZE = 512  # largest ?size= of a rendered view (px); the PNG stays bounded
HOW_TO_ENABLE = (
    "rendering views of store {name!r} needs its images: start the service with "
    "`distill serve --data {name}=DIR` (or DISTILL_DATA={name}=DIR)"
)


def check_view(attrs: Any, slot: int, sample: int) -> None:
    """ApiError 404 unless (slot, sample) addresses a view of the store (the schema's "no such
    resource": the path names a view the store does not have)."""
    if not 0 <= slot < attrs.views:
        raise ApiError(
            404, "no_such_view", f"view slot {slot} out of range: slots are 0..{attrs.views - 1}"
        )
    if not 0 <= sample < attrs.num_samples:
        raise ApiError(
            404,
            "no_such_view",
            f"sample {sample} out of range: samples are 0..{attrs.num_samples - 1}",
        )


def _folder_sig(data: str) -> tuple[int, ...]:
    """The images' stat signature: a local folder's (a class folder added or removed changes
    it), a local shard pattern's folder's; a URL has none (``(-1,)``: checked once per store
    identity, not listed per request)."""
    from teacher_store.images.source import is_shard_pattern

    if "://" in data:
        return (-1,)
    folder = Path(data).parent if is_shard_pattern(data) else Path(data)
    try:
        st = os.stat(folder)
    except OSError:
        return (-1,)
    return (st.st_dev, st.st_ino, st.st_mtime_ns)


def _scan(entry: StoreEntry, folder: str, recorded: Any) -> tuple[Refusal | None, Any]:
    """Why the images ``folder`` (a folder, URL or shard pattern) cannot render ``entry``'s
    views (blocking: walks the folder or loads the shard index), or None; and the opened
    ImageSource (None when it could not be opened)."""
    try:  # the image code needs Pillow, which the slim API image does not have
        from teacher_store.images.dataset import ImageFolder  # noqa: F401
        from teacher_store.images.source import open_images
        from teacher_store.store.content import dataset_difference
    except ImportError as e:
        return (409, "rendering_unavailable", f"{NO_REPLAY}: {e}"), None
    a = entry.attrs
    assert a is not None
    try:
        scanned = open_images(folder, a.config.get("max_image_pixels"))
        diff = dataset_difference(a.dataset, scanned, recorded)
    except ImportError as e:  # a source's library missing from this image (lazily imported)
        return (409, "rendering_unavailable", f"{NO_REPLAY}: {e}"), None
    except (ValueError, OSError) as e:  # no class folders, no images, unreadable
        why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        return (
            409,
            "dataset_unusable",
            f"the images {folder} given for store {entry.name!r} cannot be used: {why}; "
            f"pass the folder the store was built from (--data {entry.name}=DIR)",
        ), None
    if diff:
        return (
            409,
            "dataset_mismatch",
            f"dataset {folder} does not match the store ({diff}); pass the --data it was built "
            "from",
        ), scanned
    if importlib.util.find_spec("torch") is None:
        return (409, "rendering_unavailable", NO_REPLAY), scanned
    return None, scanned


class Dashboard:
    """Caches keyed by store name and identity."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = dict(data)
        self.scans = 0  # image-folder scans so far (each store's folder is scanned once)
        self._lock = threading.Lock()
        self._stores: dict[str, tuple[str, Any]] = {}  # name -> (identity, LocalStore)
        self._stats: dict[str, tuple[str, ViewStats]] = {}
        self._checks: dict[str, tuple[tuple[Any, ...], Refusal | None]] = {}
        # name -> (check key, the folder checked against the store's content digests)
        self._folders: dict[str, tuple[tuple[Any, ...], Any]] = {}
        self._scan_locks: dict[str, threading.Lock] = {}

    def store(self, entry: StoreEntry) -> Any:
        """A LocalStore over the (complete) store ``entry``."""
        from teacher_store.store.arrays import LocalStore

        with self._lock:
            cached = self._stores.get(entry.name)
            if cached is None or cached[0] != entry.identity:
                cached = (entry.identity, LocalStore(entry.path))
                self._stores[entry.name] = cached
            return cached[1]

    def stats(self, entry: StoreEntry) -> ViewStats:
        """The store's chart numbers (read once per identity)."""
        cached = self._stats.get(entry.name)
        if cached is None or cached[0] != entry.identity:
            cached = (entry.identity, store_stats(self.store(entry)))
            self._stats[entry.name] = cached
        return cached[1]

    def folder(self, entry: StoreEntry) -> str:
        """The store's images (folder, URL or shard pattern); ApiError 409 when none is
        configured."""
        folder = self.data.get(entry.name)
        if folder is None:
            raise ApiError(409, "dataset_not_configured", HOW_TO_ENABLE.format(name=entry.name))
        return folder

    def remembered(self, entry: StoreEntry) -> tuple[bool, Refusal | None]:
        """``(known, problem)`` from the last check of the store's folder, if still current
        (one stat: never blocks on a walk). ApiError 409 without a folder."""
        key = (entry.identity, _folder_sig(self.folder(entry)))
        known = self._checks.get(entry.name)
        if known is not None and known[0] == key:
            return True, known[1]
        return False, None

    def problem(self, entry: StoreEntry) -> Refusal | None:
        """Why ``entry``'s views cannot be rendered (status, code, detail), or None. Blocking
        on a first call (walks the folder); remembered, failures included, until the store or
        the folder changes."""
        known, problem = self.remembered(entry)
        if known:
            return problem
        folder = self.folder(entry)
        with self._lock:
            lock = self._scan_locks.setdefault(entry.name, threading.Lock())
        with lock:  # concurrent first requests share one scan
            known, problem = self.remembered(entry)
            if known:
                return problem
            key = (entry.identity, _folder_sig(folder))
            problem, scanned = _scan(entry, folder, self.store(entry).sample_digests)
            self.scans += 1
            if problem is None:
                self._folders[entry.name] = (key, self._checked(entry, scanned))
            self._checks[entry.name] = (key, problem)
            if problem is not None:
                log.warning("views of store %r cannot be rendered: %s", entry.name, problem[2])
            return problem

    def _checked(self, entry: StoreEntry, scanned: Any) -> Any:
        """``scanned`` with its reads checked against the store's per-sample content digests
        (a store without them: a one-line note in the log, once per check)."""
        from teacher_store.store.content import checked_folder

        digests = self.store(entry).sample_digests()
        folder, note = checked_folder(scanned, digests, str(entry.path))
        if note:
            log.warning("%s", note)
        return folder

    def image_problem(self, entry: StoreEntry, samples: tuple[int, ...]) -> str | None:
        """Why the images of ``samples`` (a view's own and its mixing partner's) cannot be
        rendered: one is not the image the store was made from (its content digest differs;
        the files are read and digested, not decoded). None when they can, or when the folder
        itself is the problem (:meth:`problem` says so). Blocking."""
        from teacher_store.errors import ImageChangedError
        from teacher_store.images.dataset import CorruptImageError

        if self.problem(entry) is not None:
            return None
        key = (entry.identity, _folder_sig(self.folder(entry)))
        known = self._folders.get(entry.name)
        if known is None or known[0] != key:
            return None
        for s in samples:
            try:
                known[1].read(s)
            except ImageChangedError as e:
                return str(e)
            except CorruptImageError:  # unreadable: the view has no targets, the page says so
                continue
        return None

    def problem_text(self, entry: StoreEntry) -> str | None:
        """:meth:`problem` as text (blocking), for the view page."""
        try:
            problem = self.problem(entry)
        except ApiError as e:  # no folder configured
            return str(e)
        return None if problem is None else problem[2]

    def job(self, entry: StoreEntry, slot: int, sample: int, size: int | None) -> RenderJob:
        """The render job of a view of ``entry`` (its folder checked before)."""
        folder = self.folder(entry)
        return RenderJob(
            str(entry.path), entry.identity, folder, _folder_sig(folder), slot, sample, size
        )
