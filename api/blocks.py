"""Block assembly: one view slot x a sample range, from cached decoded chunks, into the wire format.

Every block carries the store's identity (the digest of its manifest, see
:func:`teacher_store.store.blockfmt.store_identity`), so a client notices a store replaced under it.

Shard files are verified (size + crc32c) on first use by :class:`FileCache`; decoded inner
chunks and parsed shard indexes are kept in their own byte-bounded LRU, keyed by the store's
generation, so a repeated block costs only copies.
"""

from __future__ import annotations

import numpy as np

from api.cache import ByteLRU, FileCache
from api.errors import ApiError, StoreDamaged
from api.registry import StoreEntry
from api.shards import ArrayLayout, decode_chunk, parse_index, read_slot_range
from teacher_store.store.blockfmt import BlockBuffer, BlockHeader
from teacher_store.store.id_order import stored_to_rank
from teacher_store.store.layout import ARRAYS


class BlockReader:
    def __init__(self, files: FileCache, chunks: ByteLRU) -> None:
        self.files = files
        self.chunks = chunks

    def read(self, store: StoreEntry, slot: int, start: int, stop: int) -> memoryview:
        """The sealed wire-format block for ``slot`` x ``[start, stop)`` (bounds checked before)."""
        attrs = store.attrs
        assert attrs is not None
        header = BlockHeader(
            slot, start, stop - start, attrs.topk, attrs.ids_dtype, attrs.values_dtype,
            attrs.value_encoding, store.identity,
        )  # fmt: skip
        out = BlockBuffer(header)

        def chunk(layout: ArrayLayout, coords: tuple[int, ...], linear: int) -> np.ndarray:
            return self._chunk(store, layout, coords, linear)

        for name, dest in zip(ARRAYS, (out.ids, out.values, out.valid), strict=True):
            layout = store.layouts.get(name)
            if layout is None:
                raise ApiError(
                    409,
                    "unsupported_layout",
                    f"store {store.name!r}: array {name!r} uses a layout the block endpoint "
                    f"cannot decode; read it through {store.name}/zarr/ instead",
                )
            if stop > start:  # an empty range reads no chunk
                read_slot_range(layout, chunk, slot, start, stop, dest)
        # Server-side decode: blocks always carry rank order, whatever the store's id_order.
        out.ids[...], out.values[...] = stored_to_rank(out.ids, out.values, attrs, (slot, start))
        return out.seal()

    def _chunk(
        self, store: StoreEntry, layout: ArrayLayout, coords: tuple[int, ...], linear: int
    ) -> np.ndarray:
        ckey = (store.uid, layout.name, coords, linear)
        arr: np.ndarray | None = self.chunks.get(ckey)
        if arr is not None:
            return arr
        key = layout.shard_key(coords)
        want = store.files.get(key)
        if want is None:  # a shard the manifest records as never written: the fill value
            if key not in store.empty:
                raise StoreDamaged(store.name, key, "is not in the manifest")
            if store.exists(key):
                raise StoreDamaged(store.name, key, "exists, but the manifest records size 0")
            arr = np.full(layout.inner, layout.fill, dtype=layout.dtype)
        else:
            found = self.files.resolve(store.name, store.location, key)
            if found is None:
                raise StoreDamaged(store.name, key, "is missing")
            state = self.files.verify(store.name, key, *found, want)
            data = self.files.read(state)
            ikey = (store.uid, key, "index")
            index = self.chunks.get(ikey)
            if index is None:
                index = parse_index(layout, data, store.name, key)
                self.chunks.put(ikey, index, index.nbytes)
            arr = decode_chunk(layout, data, index, linear, store.name, key)
        self.chunks.put(ckey, arr, arr.nbytes)
        return arr
