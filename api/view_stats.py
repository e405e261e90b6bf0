"""What the teacher said over a store's views, as numbers for the dashboard's charts.

Pure functions over decoded top-K targets (numpy), plus one bounded read of a store. Entropy
follows the sparse-KD model the student trains with: the mass outside the top-K is spread
uniformly over the other ``C - K`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_STAT_VIEWS = 1 << 16  # the charts read at most this many views (whole slots, slot 0 first)
BINS = 20


@dataclass(frozen=True)
class Histogram:
    """Counts over equal bins of [lo, hi]."""

    lo: float
    hi: float
    counts: list[int]


@dataclass(frozen=True)
class ViewStats:
    """Charts of a store: views read, top-1 classes (most frequent first), mass and entropy."""

    views_read: int
    views_total: int
    top1: list[tuple[str, int]]  # (class name, views whose top-1 it is), at most 20
    mass: Histogram  # top-K probability mass per view
    entropy: Histogram  # nats, 0 .. log(num_classes)


def histogram(values: np.ndarray, lo: float, hi: float, bins: int = BINS) -> Histogram:
    """Counts of ``values`` [n] in ``bins`` equal bins of [lo, hi] (ends clipped in)."""
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return Histogram(lo, hi, [int(c) for c in counts])


def sparse_entropy(logprobs: np.ndarray, num_classes: int) -> np.ndarray:
    """Entropy (nats) of [n, K] top-K log-probs with the residual spread over the rest: [n]."""
    p = np.exp(logprobs.astype(np.float64))
    k = logprobs.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        head = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
        rest = np.clip(1.0 - p.sum(-1), 0.0, 1.0)
        others = max(num_classes - k, 1)
        tail = -np.where(rest > 0, rest * np.log(rest / others), 0.0)
    return np.asarray(head + tail)


def top_classes(ids: np.ndarray, names: list[str], most: int = 20) -> list[tuple[str, int]]:
    """The ``most`` most frequent top-1 class ids [n] as (name, count), ties by id."""
    uniq, counts = np.unique(ids, return_counts=True)
    order = np.lexsort((uniq, -counts))[:most]
    return [
        (names[int(uniq[i])] if int(uniq[i]) < len(names) else f"class {int(uniq[i])}", int(c))
        for i, c in zip(order, counts[order], strict=True)
    ]


def store_stats(store: Any, max_views: int = MAX_STAT_VIEWS) -> ViewStats:
    """Charts of a :class:`~teacher_store.store.arrays.LocalStore` over its valid views,
    reading whole view slots from slot 0 until ``max_views`` views are read."""
    a = store.attrs
    slots = max(1, min(a.views, max_views // max(a.num_samples, 1)))
    ids, logp = [], []
    for slot in range(slots):
        block = store.read_block(slot, 0, a.num_samples)
        ids.append(block.ids[block.valid, 0])
        logp.append(block.logprobs()[block.valid])
    all_ids, all_logp = np.concatenate(ids), np.concatenate(logp)
    names = [str(n) for n in (a.teacher.get("class_names") or [])]
    mass = np.exp(all_logp.astype(np.float64)).sum(-1)
    return ViewStats(
        views_read=len(all_ids),
        views_total=a.views * a.num_samples,
        top1=top_classes(all_ids, names),
        mass=histogram(mass, 0.0, 1.0),
        entropy=histogram(
            sparse_entropy(all_logp, a.num_classes), 0.0, float(np.log(a.num_classes))
        ),
    )
