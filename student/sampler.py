"""Deterministic, resumable, shard-aware sampling: a pure function of (seed, epoch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    """Where training stands: epoch and samples of this rank's epoch order already consumed."""

    epoch: int = 0
    position: int = 0
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cursor:
        return cls(**d)
