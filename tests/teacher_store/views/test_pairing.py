"""Codec 2's mixing pairs: a seeded involution, spread over the dataset, same in numpy."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_store.views.codec import PAIR_TILE, decode, pair_key, pair_partner, permute
from teacher_store.views.pairing import partners_of, slot_partners, unit_view_order
from teacher_store.views.recipe import Recipe, get_recipe


@pytest.mark.parametrize("n", [1, 2, 5, 17, 100, 1000])
def test_permute_is_a_bijection_with_an_inverse(n):
    ys = [permute(99, x, n) for x in range(n)]
    assert sorted(ys) == list(range(n))
    assert [permute(99, y, n, inverse=True) for y in ys] == list(range(n))


@pytest.mark.parametrize(
    ("n", "tile"),
    # (4403, 4): 1,100 tiles, mapped in several passes of a bounded number of tiles
    [(1, 4), (2, 1), (3, 1), (5, 2), (17, 8), (17, PAIR_TILE), (255, 16), (1000, 64), (2051, 512),
     (4403, 4)],
)  # fmt: skip
def test_pairs_are_an_involution_and_numpy_equals_the_codec(n, tile):
    key = pair_key(7, 3)
    want = [pair_partner(key, i, n, tile) for i in range(n)]
    got = slot_partners(7, 3, n, tile)
    assert got.tolist() == [-1 if p is None else p for p in want]
    if n == 1:
        assert want == [None]
        return
    i = np.arange(n)
    assert (got != i).all() and (got >= 0).all()  # everyone mixes, never with itself
    one_way = np.flatnonzero(got[got] != i)
    assert len(one_way) == n % 2  # odd count: one sample mixes one way with a paired one
    for s in one_way:
        assert got[got[s]] != s and got[got[got[s]]] == got[s]


def test_partners_are_spread_over_the_dataset_not_clustered():
    """Catches a pairing within a shard, within neighbouring shards, or fixed across slots."""
    n, tile, slots = 4096, 64, 16
    tiles = np.arange(n) // tile
    seen = [set() for _ in range(n)]
    near = []
    for slot in range(slots):
        p = slot_partners(11, slot, n, tile)
        assert (tiles[p] != tiles).all()  # never in its own tile (shard)
        near.append(np.mean(np.abs(tiles[p] - tiles) <= 1))
        # uniform partners: mean distance n/3
        assert np.mean(np.abs(p - np.arange(n))) / n == pytest.approx(1 / 3, abs=0.06)
        for i, j in enumerate(tiles[p]):
            seen[i].add(int(j))
    assert np.mean(near) < 0.08  # neighbouring tiles: 2/63 = 0.032 for a uniform matching
    assert min(len(s) for s in seen) >= 10  # new partner tiles slot after slot (~14 expected)


def test_every_sample_mixes_at_the_recipes_rate():
    n = 600
    half = Recipe(name="half", mix_prob=0.5)
    for recipe, rate in ((get_recipe("default"), 1.0), (half, 0.5)):
        mixed = [decode(3, 1, i, n, recipe, 4).mix for i in range(n)]
        partners = slot_partners(3, 1, n)
        frac = np.mean([m is not None for m in mixed])
        assert frac == pytest.approx(rate, abs=0.07)
        assert all(m.partner == partners[i] for i, m in enumerate(mixed) if m is not None)


def test_the_partner_renders_as_its_own_base_view():
    r = get_recipe("default")
    v = decode(5, 2, 10, 50, r, 4)
    assert v.mix is not None
    assert v.mix.partner_aug == decode(5, 2, v.mix.partner, 50, r, 4).base


@pytest.mark.parametrize("n", [17, 2051, 5000])
def test_partners_of_a_subset_equal_the_whole_slot(n):
    full = slot_partners(5, 2, n)
    some = np.array([0, 1, n // 3, n // 2, n - 2, n - 1], dtype=np.int64)
    assert partners_of(5, 2, some, n).tolist() == full[some].tolist()


@pytest.mark.parametrize(
    ("n", "samples"), [(17, range(17)), (17, range(8, 16)), (2051, range(1024, 2051))]
)
def test_unit_view_order_puts_each_view_beside_its_partner_once(n, samples):
    slots = range(2, 5)
    steps = unit_view_order(9, n, slots, samples, "pairs")
    flat = [key for step in steps for key in step]
    assert len(steps) == len(samples)
    assert sorted(flat) == sorted((r, i) for r in slots for i in samples)  # each view once
    where = {key: k for k, key in enumerate(flat)}
    partners = {r: slot_partners(9, r, n) for r in slots}
    beside = 0
    for r in slots:
        for i in samples:
            p = int(partners[r][i])
            if p in samples and partners[r][p] == i:  # a pair inside the unit: adjacent
                assert abs(where[(r, i)] - where[(r, p)]) == 1
                beside += 1
    assert beside > 0
    assert unit_view_order(9, n, slots, samples, "sample") == [
        [(r, i) for r in slots] for i in samples
    ]
    with pytest.raises(ValueError, match="unknown view order"):
        unit_view_order(9, n, slots, samples, "slot")
