"""Deterministic, resumable, shard-aware sampling: a pure function of (seed, epoch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from teacher_store.views.codec import mix64


def epoch_order(seed: int, epoch: int, num_samples: int, block: int, window: int) -> np.ndarray:
    """The global sample order of ``epoch``: [num_samples] int64.

    Shard-aware: contiguous blocks of ``block`` samples are shuffled as units, then samples are
    shuffled inside windows of ``window`` consecutive blocks, so one window needs only
    ``window`` block fetches while the order still mixes across the dataset.
    """
    if num_samples < 1 or block < 1 or window < 1:
        raise ValueError(f"bad sampler sizes: samples={num_samples} block={block} window={window}")
    rng = np.random.Generator(np.random.PCG64(mix64(mix64(seed) ^ epoch)))
    n_blocks = -(-num_samples // block)
    blocks = rng.permutation(n_blocks)
    out = []
    for w in range(0, n_blocks, window):
        idx = np.concatenate(
            [
                np.arange(b * block, min((b + 1) * block, num_samples))
                for b in blocks[w : w + window]
            ]
        )
        out.append(rng.permutation(idx))
    return np.concatenate(out).astype(np.int64)


def mix_groups(partners: np.ndarray) -> np.ndarray:
    """Each sample's mixing group: int64 [N], the group's smallest member (or ``i`` alone).

    ``partners`` is one slot's pairing (``slot_partners``; -1: none). A pair is a group; a
    sample mixing one way with a paired sample joins that pair (a group of three).
    """
    n = len(partners)
    i = np.arange(n, dtype=np.int64)
    p = np.where(partners < 0, i, partners)
    mutual = p[p] == i
    pair_min = np.minimum(i, p)  # a pair's key, read by both members
    return np.where(mutual, pair_min, pair_min[p])


def pair_order(
    seed: int, epoch: int, samples: np.ndarray, groups: np.ndarray, tile: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """An epoch's order of ``samples`` with mixing groups adjacent: (sample ids, group ids).

    A pure function of its arguments. Shard-aware over the pairing's tiles: groups are bucketed
    by ``group // tile`` (a tile pair's groups share one bucket, so its targets are two
    blocks), buckets are shuffled, then groups are shuffled inside windows of ``window``
    buckets. ``groups`` is :func:`mix_groups` over the whole dataset (``samples`` may be a
    subset, e.g. the training split; a group's members outside it are left out).
    """
    if len(samples) < 1 or tile < 1 or window < 1:
        raise ValueError(f"bad sampler sizes: samples={len(samples)} tile={tile} window={window}")
    rng = np.random.Generator(np.random.PCG64(mix64(mix64(seed) ^ epoch)))
    key = groups[samples]
    buckets, bucket_of = np.unique(key // tile, return_inverse=True)
    bucket_rank = np.empty(len(buckets), np.int64)
    bucket_rank[rng.permutation(len(buckets))] = np.arange(len(buckets))
    win = bucket_rank[bucket_of] // window
    del bucket_of  # temporaries of N go as soon as used: ImageNet-22k has 14M samples
    ukeys, group_of = np.unique(key, return_inverse=True)
    shuffle = rng.permutation(len(ukeys))  # one random rank per group, shared by its members
    shuffled = shuffle[group_of]
    del group_of, shuffle
    pos = np.lexsort((samples, shuffled, win))
    del shuffled, win
    return samples[pos].astype(np.int64, copy=False), key[pos].astype(np.int64, copy=False)


def rank_share(
    order: np.ndarray, groups: np.ndarray, rank: int, world: int, batch_size: int
) -> np.ndarray:
    """This rank's share of a :func:`pair_order`, groups never split between ranks.

    Groups are dealt in order to the rank with the fewest samples so far; each share is then
    padded, by repeating its own first samples, to the same multiple of ``batch_size`` on every
    rank, so drop-last batching in lockstep still sees every sample at least once.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if world == 1:  # one rank owns every group: only the padding to whole batches
        return np.resize(order, -(-len(order) // batch_size) * batch_size).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    bounds = np.r_[starts, len(order)]
    shares: list[list[int]] = [[] for _ in range(world)]
    sizes = [0] * world
    for g in range(len(starts)):
        r = min(range(world), key=sizes.__getitem__)  # fewest samples, lowest rank on ties
        shares[r].append(g)
        sizes[r] += int(bounds[g + 1] - bounds[g])
    length = -(-max(sizes) // batch_size) * batch_size
    mine = [order[bounds[g] : bounds[g + 1]] for g in shares[rank]]
    own = np.concatenate(mine) if mine else order[:0]
    if len(own) == 0:
        own = order  # more ranks than groups: this rank repeats the epoch's samples
    return np.resize(own, length).astype(np.int64)  # np.resize repeats from the start


def rank_order(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of an epoch: every ``world``-th sample, truncated to equal lengths."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    per_rank = len(order) // world
    if per_rank == 0:
        raise ValueError(f"{len(order)} samples cannot be split over {world} ranks")
    return order[rank : per_rank * world : world]


@dataclass(frozen=True)
class Cursor:
    """Where training stands: epoch and batches of this rank's epoch order already consumed.

    ``store``: the identity of the store it was taken on ("" when unknown, as in cursors saved
    before it was kept); a loader refuses a cursor of another store. Not part of equality: two
    cursors at the same place are equal.
    """

    epoch: int = 0
    position: int = 0
    version: int = 1
    store: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The cursor as JSON-ready fields (saved in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cursor:
        """The cursor from :meth:`to_dict`'s fields."""
        return cls(**d)
