"""The one direct reader of a store's arrays: :class:`StoreReader`, for a folder and for any
fsspec location (an object store, fsspec's memory filesystem); the service reads through it
and the client's local and fsspec backends both wrap it.

It checks the store's metadata at open (:func:`~teacher_store.store.integrity.check_store`:
attrs, arrays, metadata digests), refuses an unfinished store when asked to, and returns each
block's ids in rank order whatever the store's ``id_order``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zarr

from teacher_store.errors import StoreDamaged, StoreIncomplete
from teacher_store.images.digests import SampleDigests
from teacher_store.storage.location import Location
from teacher_store.store import layout
from teacher_store.store.content import load_sample_digests
from teacher_store.store.id_order import stored_to_rank
from teacher_store.store.integrity import check_store
from teacher_store.store.layout import MANIFEST
from teacher_store.store.schema import decode_values

T = TypeVar("T")


@dataclass(frozen=True)
class TargetBlock:
    """Targets of view slot ``slot`` for samples [start, stop)."""

    slot: int
    start: int
    ids: np.ndarray  # [n, K] uint16/uint32, rank order
    values: np.ndarray  # [n, K] stored encoding
    valid: np.ndarray  # [n] bool
    encoding: str

    def logprobs(self) -> np.ndarray:
        """[n, K] float32 log-probabilities (-inf where the encoding rounded p to zero)."""
        return decode_values(self.values, self.encoding)


def growing_files(loc: Location) -> None:
    """StoreIncomplete when a growth of the store at ``loc`` is under way
    (:mod:`teacher_store.store.grow`): finishing it rewrites the arrays' metadata (and shards
    shared with new slots) just before the root and the new manifest, so for an instant the
    old manifest does not describe them."""
    if loc.is_file(layout.GROWTH):
        raise StoreIncomplete(
            f"store {loc.display} is finishing a growth (its metadata and manifest are being "
            "replaced); open it again in a moment, or, if no `distill generate` is growing it, "
            "re-run the one that did to finish the growth"
        ) from None


def _direct(fn: Callable[[], T]) -> T:
    return fn()


class StoreReader:
    """Direct reader of the store at ``location`` (a folder or an fsspec root, not the
    service).

    ``require_complete``: refuse an unfinished store (no manifest); ``check_sizes``: when it is
    complete, stat every file the manifest lists (one request each on an object store);
    ``call``: how each metadata request is made (a reader that retries passes its retry loop).
    """

    def __init__(
        self,
        location: Location,
        require_complete: bool = True,
        check_sizes: bool = True,
        call: Callable[[Callable[[], Any]], Any] = _direct,
    ) -> None:
        self.location = location
        self.address = location.display  # the folder's path or the store's URL
        location.probe()  # an object store's missing bucket or refused key: one line
        try:
            self.checked = call(lambda: check_store(location))
            done = self.checked.manifest is not None
            self.manifest = json.loads(self.checked.manifest_bytes) if done else None
            if check_sizes and self.manifest is not None:
                layout.check_sizes(location, self.manifest["files"])
        except StoreDamaged:
            growing_files(location)  # a growth finishing: open it again in a moment
            raise
        self.attrs = self.checked.attrs
        if require_complete and self.manifest is None:
            raise StoreIncomplete(
                f"store {location.display} is unfinished (no {MANIFEST}); re-run the same "
                "`distill generate` to finish it before reading it"
            )
        self.group = call(lambda: zarr.open_group(location.zarr_store(), mode="r"))

    @property
    def complete(self) -> bool:
        """True when the store is finished (its manifest exists)."""
        return self.manifest is not None

    def sample_digests(self) -> SampleDigests | None:
        """The per-sample content digests the store records (checked against its attrs), None
        for a store made before they were recorded."""
        return load_sample_digests(self.attrs, self.location.read, self.address)

    def _array(self, name: str) -> zarr.Array:
        node = self.group[name]
        assert isinstance(node, zarr.Array), name
        return node

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock:
        """Targets of view slot ``slot`` for samples [start, stop), ids in rank order."""
        a = self.attrs
        a.check_block(slot, start, stop)
        ids, values = stored_to_rank(
            np.asarray(self._array("ids")[slot, start:stop]),
            np.asarray(self._array("values")[slot, start:stop]),
            a,
            at=(slot, start),
        )
        valid = np.asarray(self._array("valid")[slot, start:stop]).astype(bool)
        return TargetBlock(slot, start, ids, values, valid, a.value_encoding)


__all__ = ["StoreReader", "TargetBlock", "growing_files"]
