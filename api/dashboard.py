"""The dashboard's state: per-store readers, chart numbers and view renderers, cached by the
store's identity (a regenerated store is read afresh).

Rendering a view needs the store's image folder (``distill serve --data NAME=DIR``) and the
torch/Pillow replay path, imported only when a view is rendered: the API imports no torch.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Any

from api.errors import ApiError
from api.registry import StoreEntry
from api.view_stats import ViewStats, store_stats
from teacher_store.errors import StoreError

log = logging.getLogger("distill.api")
IMAGE_CACHE = 64  # decoded images a store's renderer keeps (a view also decodes its partner)
MAX_VIEW_SIZE = 512  # largest ?size= of a rendered view (px); the PNG stays bounded
HOW_TO_ENABLE = (
    "rendering views of store {name!r} needs its images: start the service with "
    "`distill serve --data {name}=DIR` (or DISTILL_DATA={name}=DIR)"
)
NO_REPLAY = (
    "rendering views needs torch and Pillow, which this installation lacks (the slim API "
    "image is torch-free): serve with the full `distill` install"
)


def check_view(attrs: Any, slot: int, sample: int) -> None:
    """ApiError 400 unless (slot, sample) addresses a view of the store."""
    if not 0 <= slot < attrs.views:
        raise ApiError(
            400, "bad_request", f"view slot {slot} out of range: slots are 0..{attrs.views - 1}"
        )
    if not 0 <= sample < attrs.num_samples:
        raise ApiError(
            400,
            "bad_request",
            f"sample {sample} out of range: samples are 0..{attrs.num_samples - 1}",
        )


class Dashboard:
    """Caches keyed by store name and identity; one lock (replay is CPU-bound anyway)."""

    def __init__(self, data: dict[str, Path]) -> None:
        self.data = dict(data)
        self._lock = threading.Lock()
        self._stores: dict[str, tuple[str, Any]] = {}  # name -> (identity, LocalStore)
        self._stats: dict[str, tuple[str, ViewStats]] = {}
        self._renderers: dict[str, tuple[str, Any]] = {}  # ViewRenderer or its StoreError

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

    def view_problem(self, entry: StoreEntry, slot: int, sample: int) -> str | None:
        """Why view ``slot`` of ``sample`` cannot be rendered: no dataset, the wrong one, or an
        image of the view (its own or its mixing partner's) that is not the one the store was
        made from (its content digest; the files are read, not decoded); None when it can."""
        try:
            self.renderer(entry).check_images(sample, slot)
        except (ApiError, StoreError) as e:
            return str(e)
        return None

    def renderer(self, entry: StoreEntry) -> Any:
        """The store's ViewRenderer; ApiError 409 without a dataset, DatasetMismatch (409)
        when the configured folder is not the store's dataset."""
        folder = self.data.get(entry.name)
        if folder is None:
            raise ApiError(409, "dataset_not_configured", HOW_TO_ENABLE.format(name=entry.name))
        with self._lock:
            cached = self._renderers.get(entry.name)
            if cached is None or cached[0] != entry.identity:
                try:
                    from teacher_store.show import ViewRenderer

                    made: Any = ViewRenderer(str(entry.path), str(folder), IMAGE_CACHE)
                    if made.note:  # a store without content digests: said once per identity
                        log.warning("%s", made.note)
                except StoreError as e:  # DatasetMismatch: remembered, not rescanned per request
                    made = e
                except ImportError as e:  # the slim API image has no torch
                    raise ApiError(409, "rendering_unavailable", f"{NO_REPLAY}: {e}") from None
                cached = (entry.identity, made)
                self._renderers[entry.name] = cached
        if isinstance(cached[1], StoreError):
            raise cached[1]
        return cached[1]

    def png(self, entry: StoreEntry, slot: int, sample: int, size: int | None) -> bytes:
        """View ``slot`` of ``sample`` as ``distill show`` draws it (the same pixels), PNG;
        ImageChangedError (409) when its image is not the one the store was made from."""
        renderer = self.renderer(entry)
        with self._lock:  # a Replayer is not thread-safe
            try:
                shown = renderer.render(sample, slot, size)
            except StoreError:
                raise
            except ValueError as e:  # no targets: its image (or its partner) was unreadable
                raise ApiError(409, "view_unavailable", str(e)) from None
        buf = io.BytesIO()
        shown.image.save(buf, format="PNG")
        return buf.getvalue()
