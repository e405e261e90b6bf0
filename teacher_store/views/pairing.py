"""The codec's mixing pairs for a whole view slot at once (numpy; equal to the scalar codec).

:func:`~teacher_store.views.codec.pair_partner` answers one sample in pure Python; samplers
and generation need every sample's partner of a slot, so this module runs the same Feistel
permutations over arrays (uint64 arithmetic wraps like the codec's ``& MASK64``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from teacher_store.views.codec import (
    FEISTEL_ROUNDS,
    GOLDEN_GAMMA,
    PAIR_TILE,
    REST_TAG,
    mix64,
    pair_key,
    pair_partner,
)

_PASS_TILES = 256  # slot_partners maps this many tiles' worth of samples per pass


def mix64_array(z: np.ndarray) -> np.ndarray:
    """:func:`~teacher_store.views.codec.mix64` over a uint64 array (wrapping multiply)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _feistel(keys: np.ndarray, x: np.ndarray, h: int, inverse: bool) -> np.ndarray:
    mask = np.uint64((1 << h) - 1)
    left, right = x >> np.uint64(h), x & mask
    rounds = range(FEISTEL_ROUNDS - 1, -1, -1) if inverse else range(FEISTEL_ROUNDS)
    for r in rounds:
        rk = keys + np.uint64(((r + 1) * GOLDEN_GAMMA) & ((1 << 64) - 1))
        if inverse:
            left, right = right ^ (mix64_array(rk ^ left) & mask), left
        else:
            left, right = right, left ^ (mix64_array(rk ^ right) & mask)
    return (left << np.uint64(h)) | right


def permute_array(
    keys: np.ndarray | int, x: np.ndarray, n: int, inverse: bool = False
) -> np.ndarray:
    """:func:`~teacher_store.views.codec.permute` over an array (one key, or one per element)."""
    h = max(1, ((n - 1).bit_length() + 1) // 2)
    k = np.broadcast_to(np.asarray(keys, dtype=np.uint64), x.shape).copy()
    y = _feistel(k, x.astype(np.uint64), h, inverse)
    out = y >= np.uint64(n)
    while out.any():  # cycle walking, only where still out of range
        y[out] = _feistel(k[out], y[out], h, inverse)
        out = y >= np.uint64(n)
    return y.astype(np.int64)


def slot_partners(
    store_seed: int, slot: int, num_samples: int, tile: int = PAIR_TILE
) -> np.ndarray:
    """Every sample's mixing partner in view slot ``slot``: int64 [num_samples], -1 for none.

    Equal to ``pair_partner(pair_key(store_seed, slot), i, num_samples, tile)`` for every i.
    """
    out = np.empty(num_samples, np.int64)
    step = _PASS_TILES * tile
    # A bounded number of samples per pass: the Feistel temporaries stay O(step), not ~10
    # arrays of N (1.1 GB at ImageNet-22k's 14M samples).
    for a in range(0, num_samples, step):
        b = min(num_samples, a + step)
        out[a:b] = partners_of(store_seed, slot, np.arange(a, b, dtype=np.int64), num_samples, tile)
    return out


def partners_of(
    store_seed: int, slot: int, samples: np.ndarray, num_samples: int, tile: int = PAIR_TILE
) -> np.ndarray:
    """The mixing partners of ``samples`` (int64 array) in view slot ``slot``; -1 for none.

    Only the given samples are computed, so a shard unit's partners cost its own size.
    """
    samples = np.asarray(samples, dtype=np.int64)
    key = pair_key(store_seed, slot)
    tiles = num_samples // tile - (num_samples // tile) % 2
    edge = tiles * tile
    out = np.full(samples.shape, -1, np.int64)
    paired = samples < edge
    if paired.any():
        t, o = np.divmod(samples[paired], tile)
        rank = permute_array(key, t, tiles)
        mate = permute_array(key, rank ^ 1, tiles, inverse=True)
        sub = mix64_array(
            np.uint64(key) ^ mix64_array((rank >> 1).astype(np.uint64) + np.uint64(1))
        )
        odd = (rank & 1).astype(bool)
        off = np.empty(len(t), np.int64)
        off[~odd] = permute_array(sub[~odd], o[~odd], tile)
        off[odd] = permute_array(sub[odd], o[odd], tile, inverse=True)
        out[paired] = mate * tile + off
    m = num_samples - edge
    rest = ~paired
    if m == 1 and edge and rest.any():
        out[rest] = int(pair_partner(key, edge, num_samples, tile) or 0)
    elif m >= 2 and rest.any():
        mix = mix64(key ^ REST_TAG)
        p = permute_array(mix, samples[rest] - edge, m)
        q = p ^ 1
        if m % 2:
            q[p == m - 1] = m - 2
        out[rest] = edge + permute_array(mix, q, m, inverse=True)
    return out


VIEW_ORDERS = ("sample", "pairs")


def recorded_view_order(config: Mapping[str, Any]) -> str:
    """The view order a store's recorded generation config says it was made in (a store
    without one predates pair order: "sample")."""
    return str(config.get("view_order") or "sample")


def unit_view_order(
    store_seed: int, num_samples: int, slots: range, samples: range, order: str = "pairs"
) -> list[list[tuple[int, int]]]:
    """The order in which generation renders and batches the views of one shard unit.

    One step per sample of ``samples`` (ascending), each a list of ``(slot, sample)``.
    ``"sample"``: the sample's views, slot by slot (stores made before pair order).
    ``"pairs"``: for each slot, the sample's view not taken yet, followed by its partner's
    view when the partner is in the unit and not taken yet; so both views of a pair render
    in one step from one decode of each image, and a later step holds only what is left.
    Every view of the unit appears exactly once; the order depends on the store's seed and
    layout alone, never on workers or ranks.
    """
    if order not in VIEW_ORDERS:
        raise ValueError(f"unknown view order {order!r}: use one of {VIEW_ORDERS}")
    if order == "sample":
        return [[(r, i) for r in slots] for i in samples]
    ids = np.arange(samples.start, samples.stop, dtype=np.int64)
    partner = {r: partners_of(store_seed, r, ids, num_samples).tolist() for r in slots}
    taken = np.zeros((len(slots), len(samples)), bool)
    steps = []
    for s, i in enumerate(samples):
        step = []
        for j, r in enumerate(slots):
            if taken[j, s]:
                continue
            taken[j, s] = True
            step.append((r, i))
            p = partner[r][s]
            if samples.start <= p < samples.stop and not taken[j, p - samples.start]:
                taken[j, p - samples.start] = True
                step.append((r, p))
        steps.append(step)
    return steps
