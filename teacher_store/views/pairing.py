"""The codec's mixing pairs for a whole view slot at once (numpy; equal to the scalar codec).

:func:`~teacher_store.views.codec.pair_partner` answers one sample in pure Python; samplers
and generation need every sample's partner of a slot, so this module runs the same Feistel
permutations over arrays (uint64 arithmetic wraps like the codec's ``& MASK64``).
"""

from __future__ import annotations

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

_PASS_TILES = 256  # tiles whose samples slot_partners maps in one pass


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
    key = pair_key(store_seed, slot)
    tiles = num_samples // tile - (num_samples // tile) % 2
    edge = tiles * tile
    out = np.full(num_samples, -1, np.int64)
    if edge:
        # Per tile: its rank, its mate and the key matching their samples (tiles are few).
        rank = permute_array(key, np.arange(tiles, dtype=np.int64), tiles)
        mate = permute_array(key, rank ^ 1, tiles, inverse=True)
        sub = mix64_array(
            np.uint64(key) ^ mix64_array((rank >> 1).astype(np.uint64) + np.uint64(1))
        )
        odd = (rank & 1).astype(bool)
        # Per sample, a bounded number of tiles at a time: the Feistel temporaries stay
        # O(_PASS_TILES x tile), not ~10 arrays of N (1.1 GB at ImageNet-22k's 14M samples).
        o = np.arange(tile, dtype=np.int64)
        for a in range(0, tiles, _PASS_TILES):
            b = min(tiles, a + _PASS_TILES)
            keys, inv = np.repeat(sub[a:b], tile), np.repeat(odd[a:b], tile)
            x = np.tile(o, b - a)
            off = np.empty(len(x), np.int64)
            off[~inv] = permute_array(keys[~inv], x[~inv], tile)
            off[inv] = permute_array(keys[inv], x[inv], tile, inverse=True)
            out[a * tile : b * tile] = np.repeat(mate[a:b], tile) * tile + off
    m = num_samples - edge
    if m == 1 and edge:
        out[edge] = int(pair_partner(key, edge, num_samples, tile) or 0)
    elif m >= 2:
        rest = mix64(key ^ REST_TAG)
        p = permute_array(rest, np.arange(m, dtype=np.int64), m)
        q = p ^ 1
        if m % 2:
            q[p == m - 1] = m - 2
        out[edge:] = edge + permute_array(rest, q, m, inverse=True)
    return out
