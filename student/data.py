"""The student's data path: views replayed from their seeds, targets gathered block-wise.

Images are rendered in DataLoader workers (a map-style dataset keyed by ``(slot, sample)``), so
a batch's pixels depend only on its keys, never on workers or batch size. Teacher targets are
gathered in the main process from block-aligned reads of the store (local or over HTTP); the
store client's block cache and prefetch threads fetch the blocks the next batches need.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from teacher_store.images.dataset import CorruptImageError
from teacher_store.images.digests import SampleDigests
from teacher_store.images.prefetch import ReadAhead
from teacher_store.images.source import ImageSource
from teacher_store.reader.client import open_store
from teacher_store.store.arrays import TargetBlock
from teacher_store.store.schema import StoreAttrs
from teacher_store.views.codec import PAIR_TILE, mix64
from teacher_store.views.pairing import mix64_array
from teacher_store.views.replay import ReplayedView, Replayer

# An epoch shuffles samples within windows of this many pairing-tile pairs (two target blocks
# each). A tile is PAIR_TILE consecutive sample ids and a folder numbers its samples class by
# class (at ImageNet a tile holds one or two classes), so a window of W tile pairs gives a batch
# up to ~2W classes: with 2 pairs (before) ImageNet batches saw <= 8 classes and curricula on
# MNIST lost ~1.4 points of top-1. 64 pairs: a batch of 256 draws from ~128 tiles.
SAMPLER_WINDOW_PAIRS = 64
# The trainer's cache holds the blocks of the current window and of the next one (a window's
# batches touch all of its blocks in random order; read-ahead crosses into the next window).
_CACHE_BLOCKS = 4 * SAMPLER_WINDOW_PAIRS + 32
_PREFETCH_THREADS = 2


def split_samples(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, stratified (train, held-out) sample ids, both sorted.

    The held-out set has exactly ``round(val_fraction * N)`` samples, at least 1 and at most
    N - 1 when N >= 2 and ``val_fraction > 0``. Each class holds out its share (largest
    remainders first, never a class's only sample while another class can give one); inside a
    class, a hash of (seed, sample) picks which.
    """
    y = np.asarray(labels, dtype=np.int64)
    n = len(y)
    if val_fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    total = min(n - 1, max(1, round(val_fraction * n)))
    key = np.uint64(mix64(seed ^ 0x5EED5EED))
    # [N] tie-break hashes mix64(key ^ i), vectorized: no per-sample Python ints at N = 1.28M.
    rank = mix64_array(np.arange(n, dtype=np.uint64) ^ key)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * (total / n)  # [C] exact shares
    quota = np.minimum(np.floor(share).astype(np.int64), counts - 1)
    # Remaining picks: classes that keep a training sample first, then larger remainders.
    keeps = (counts - quota) > 1
    order = np.lexsort((classes, -(share - quota), ~keeps))
    for c in order[: total - int(quota.sum())]:
        quota[c] += 1
    # Each class's `quota` members of lowest hash: one sort by (class, hash), not a pass over
    # all N labels per class (O(N C): hours at ImageNet-22k's 14M samples x 21,841 classes).
    by_class = np.lexsort((rank, y))
    first = np.repeat(np.cumsum(counts) - counts, counts)  # [N] start of each class's run
    picked = (np.arange(n) - first) < np.repeat(quota, counts)
    held_ids = np.sort(by_class[picked]).astype(np.int64)
    mask = np.ones(n, bool)
    mask[held_ids] = False
    return np.flatnonzero(mask), held_ids


class PlannedKeys(list[tuple[int, int]]):
    """A batch's keys ``(slot, sample)`` as :class:`BatchPlan` yields them, with ``ahead``:
    the samples (int64 [B]) of the next batch the same DataLoader worker will get (empty at
    the epoch's end). A DataLoader hands the list, attributes and all, to its worker."""

    def __init__(self, keys: Sequence[tuple[int, int]], ahead: np.ndarray) -> None:
        super().__init__(keys)
        self.ahead = ahead


class ReplayDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Item ``(slot, sample)`` -> the stored view rendered at ``img_size`` plus label info.

    ``img_size`` may change between epochs (progressive resizing). ``cache_size``: decoded
    images each worker keeps; none by default, since samples come shuffled (few hits).
    ``draft``: decode JPEGs at a reduced DCT scale where the crop allows (see
    :class:`~teacher_store.views.replay.Replayer`; off by default: not the teacher's pixels).
    ``folder`` may read ahead (:class:`~teacher_store.images.prefetch.ReadAhead`): a batch of
    :class:`PlannedKeys` then names its images and the next batch's of this worker to it.
    """

    def __init__(
        self,
        folder: ImageSource,
        attrs: StoreAttrs,
        img_size: int,
        cache_size: int = 0,
        draft: bool = False,
    ) -> None:
        self.folder, self.attrs, self.img_size = folder, attrs, img_size
        self.replay = Replayer(folder, attrs, cache_size=cache_size, draft=draft)
        if not self.replay.exact:
            # DataLoader workers cannot hold CUDA, so views replay through Pillow here.
            warnings.warn(
                "the store decoded its images on the GPU (--decode gpu): views replay through "
                "Pillow, close to but not bit-exact with what the teacher saw; generate with "
                "--decode cpu for bit-exact replay",
                stacklevel=2,
            )

    def __len__(self) -> int:
        return len(self.folder) * self.attrs.views

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        return self._render([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch's items (DataLoader calls this per batch): each image of the batch is
        decoded and rendered once, so both views of a mixing pair cost one decode each."""
        self.read_ahead(keys)
        return self._render(keys)

    def _render(self, keys: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        views = self.replay.render_many(keys, self.img_size)
        return [self._item(sample, view) for (_, sample), view in zip(keys, views, strict=True)]

    def read_ahead(self, keys: Sequence[tuple[int, int]]) -> None:
        """Name this batch's images, then those of this worker's next batch (a DataLoader
        hands its W workers the batches in turn: batch b + W), to a folder that reads ahead,
        in the order they are read (each view's image, then its partner's). A wrong guess
        costs reads, never a byte of the batch."""
        if not isinstance(self.folder, ReadAhead):
            return
        batches = [list(keys)]
        if isinstance(keys, PlannedKeys) and keys:
            batches.append([(keys[0][0], int(s)) for s in keys.ahead])
        reads: list[int] = []
        for batch in batches:
            for slot, sample in batch:
                mix = self.replay.params(slot, sample).mix
                reads += [sample] if mix is None else [sample, mix.partner]
        self.folder.want(s for s in reads if not self.replay.cached(s))

    def _item(self, sample: int, view: ReplayedView | CorruptImageError) -> dict[str, Any]:
        if isinstance(view, CorruptImageError):  # the store marks such views missing
            label = self.folder.label(sample)
            pixels = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8)
            partner_label, lam, ok = label, 1.0, False
        else:
            pixels, label, ok = view.pixels, view.label, True
            partner_label, lam = view.partner_label, view.lam
        return {
            "image": pixels,
            "sample": sample,
            "label": label,
            "partner_label": partner_label,
            "lam": lam,
            "ok": ok,
        }


def center_view(image: Image.Image, size: int, crop_pct: float = 0.875) -> torch.Tensor:
    """Standard evaluation view: resize the short side to size / crop_pct, centre crop."""
    w, h = image.size
    scale = size / crop_pct / min(w, h)
    cw, ch = size / scale, size / scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    out = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


class EvalDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Held-out samples as centre crops (for accuracy against folder labels)."""

    def __init__(
        self, folder: ImageSource, samples: Sequence[int] | np.ndarray, img_size: int
    ) -> None:
        self.folder, self.samples, self.img_size = folder, [int(s) for s in samples], img_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, k: int) -> dict[str, Any]:
        s = self.samples[k]
        try:
            pixels, ok = center_view(self.folder.load(s), self.img_size), True
        except CorruptImageError:
            pixels, ok = torch.zeros(3, self.img_size, self.img_size, dtype=torch.uint8), False
        return {"image": pixels, "sample": s, "label": self.folder.label(s), "ok": ok}


class BatchPlan(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Batches of ``(slot, sample)`` keys for one epoch of one rank, from batch ``start`` on.

    Each batch is a :class:`PlannedKeys` naming the samples of batch b + ``stride`` too: the
    next batch of the DataLoader worker that gets batch b (``stride``: the loader's workers,
    which it hands the batches in turn; 1 without workers), for its read-ahead.
    """

    def __init__(self, order: np.ndarray, slot: int, batch_size: int, start: int = 0) -> None:
        self.order, self.slot, self.batch_size, self.start = order, slot, batch_size, start
        self.stride = 1

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    @property
    def end(self) -> int:
        """One past the epoch's last whole batch (drop_last: DDP ranks stay in lockstep)."""
        return len(self.order) // self.batch_size

    def batch(self, b: int) -> np.ndarray:
        return self.order[b * self.batch_size : (b + 1) * self.batch_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.start, self.end):
            ahead = b + self.stride
            later = self.batch(ahead) if ahead < self.end else self.order[:0]
            yield PlannedKeys([(self.slot, int(s)) for s in self.batch(b)], later)


class BlockReader(Protocol):
    """What :class:`TargetCache` reads: a store client or a local store."""

    @property
    def attrs(self) -> StoreAttrs: ...

    def read_block(self, slot: int, start: int, stop: int) -> TargetBlock: ...


def target_block(attrs: StoreAttrs) -> int:
    """Samples per target read: whole chunks covering one pairing tile (``PAIR_TILE``).

    An epoch's order shuffles samples within windows of :data:`SAMPLER_WINDOW_PAIRS` tile
    pairs (student.loader): in 1,024-sample blocks a window is 128 reads, each read once and
    shared by every batch of the window (the cache holds two windows). In one-chunk blocks (64
    samples in a schema 2 store) a window would be 16x as many reads, and the cache would
    overflow: measured at ImageNet scale with small windows, 7x more reads than blocks and 259
    vs 17,786 views/s.
    """
    chunk = int(attrs.chunk_samples)
    return -(-PAIR_TILE // chunk) * chunk


class TargetCache:
    """Teacher targets of any samples, gathered from block-aligned reads of ``reader``.

    It keeps no blocks itself: a :class:`~teacher_store.reader.client.StoreClient` (see
    :func:`open_targets`) is the one block cache, and ``prefetch`` starts its reads early.
    ``block``: samples per read (default :func:`target_block`).
    """

    def __init__(self, reader: BlockReader, block: int | None = None) -> None:
        self.reader, self.attrs = reader, reader.attrs
        self.block = int(block or target_block(self.attrs))
        self.n = int(self.attrs.num_samples)

    @property
    def identity(self) -> str:
        """The store's identity (its manifest's digest, the same however it is reached: a
        folder, a URL or the service); "" when the reader does not know it."""
        return str(getattr(self.reader, "identity", "") or "")

    def continues(self, identity: str) -> bool:
        """Whether ``identity`` (a checkpoint's or cursor's) names this store, or this store
        before slots were appended to it (a grown store: the slots it had are unchanged)."""
        if not identity or identity == self.identity:
            return True
        check = getattr(self.reader, "continues", None)
        return bool(check(identity)) if check is not None else False

    @property
    def address(self) -> str:
        """Where the store is (its folder, URL or service URL), for messages; "" if unknown."""
        return str(getattr(self.reader, "url", "") or getattr(self.reader, "address", "") or "")

    def sample_digests(self) -> SampleDigests | None:
        """The store's per-sample content digests (None: the store records none, or the
        reader cannot read them)."""
        read = getattr(self.reader, "sample_digests", None)
        return read() if read is not None else None

    def _range(self, b: int) -> tuple[int, int]:
        return b * self.block, min(self.n, (b + 1) * self.block)

    def prefetch(self, slot: int, samples: np.ndarray) -> None:
        """Start reading the blocks holding ``samples`` (when the reader can read ahead)."""
        start = getattr(self.reader, "prefetch_blocks", None)
        if start is not None:
            start(slot, [self._range(int(b)) for b in np.unique(samples // self.block)])

    def gather(self, slot: int, samples: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(ids [B, K] int64, log-probs [B, K] float32, valid [B] bool) for ``samples``."""
        k = int(self.attrs.topk)
        ids = np.empty((len(samples), k), np.int64)
        logp = np.empty((len(samples), k), np.float32)
        valid = np.empty(len(samples), bool)
        which = samples // self.block
        for b in np.unique(which):
            blk = self.reader.read_block(slot, *self._range(int(b)))
            rows = np.flatnonzero(which == b)
            local = samples[rows] - blk.start
            ids[rows], valid[rows] = blk.ids[local], blk.valid[local]
            logp[rows] = blk.logprobs()[local]
        return torch.from_numpy(ids), torch.from_numpy(logp), torch.from_numpy(valid)

    def close(self) -> None:
        """Close the reader (its threads and connections), if it has any."""
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()


def open_targets(
    address: str,
    token: str | None = None,
    expected_fingerprint: dict[str, Any] | None = None,
    retry_budget_s: float = 600.0,
) -> TargetCache:
    """Targets from the store at ``address`` (folder, fsspec URL or service URL), read through
    one client sized for the trainer's read-ahead; ``expected_fingerprint`` refuses a store of
    another dataset (:class:`~teacher_store.reader.client.DatasetMismatchError`)."""
    reader = open_store(
        address,
        token,
        expected_fingerprint,
        prefetch=_PREFETCH_THREADS,
        max_cache_blocks=_CACHE_BLOCKS,
        retry_budget_s=retry_budget_s,
    )
    return TargetCache(reader)
