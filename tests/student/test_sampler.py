"""The pair-aware sampler: pure in (seed, epoch), pairs adjacent, whole pairs per rank."""

from __future__ import annotations

import numpy as np
import pytest

from student.sampler import mix_groups, pair_order, rank_share
from teacher_store.views.pairing import slot_partners

N, TILE = 1031, 64  # odd: one group of three


@pytest.fixture(scope="module")
def groups():
    return mix_groups(slot_partners(5, 2, N, TILE))


def _runs(keys: np.ndarray) -> list[int]:
    """Group ids in order of appearance, one entry per contiguous run."""
    return [int(k) for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]


def test_groups_are_the_pairs_and_one_triple(groups):
    p = slot_partners(5, 2, N, TILE)
    sizes = np.bincount(groups)[np.unique(groups)]
    assert sorted(set(sizes.tolist())) == [2, 3] and (sizes == 3).sum() == 1
    assert (groups == groups[p]).all()  # a sample and its partner share a group


def test_pair_order_is_pure_whole_and_keeps_groups_adjacent(groups):
    train = np.flatnonzero(np.arange(N) % 7 != 3)  # a split: some partners held out
    order, keys = pair_order(1, 4, train, groups, TILE, 2)
    again, _ = pair_order(1, 4, train, groups, TILE, 2)
    assert np.array_equal(order, again)
    assert not np.array_equal(order, pair_order(1, 5, train, groups, TILE, 2)[0])
    assert np.array_equal(np.sort(order), train)  # every training sample once
    runs = _runs(keys)
    assert len(runs) == len(set(runs))  # each group contiguous
    assert np.array_equal(keys, groups[order])
    # shard-aware: a bucket (a tile pair's groups) spans positions shared with at most the
    # other bucket of its window of 2, so a window reads the targets of 4 tiles
    bucket = keys // TILE
    spans = [
        (np.flatnonzero(bucket == b).min(), np.flatnonzero(bucket == b).max())
        for b in np.unique(bucket)
    ]
    for lo, hi in spans:
        assert sum(1 for a, b in spans if a <= hi and lo <= b) <= 2


@pytest.mark.parametrize(("world", "batch"), [(1, 7), (2, 8), (3, 5), (4, 16)])
def test_rank_shares_split_no_group_and_see_every_sample(groups, world, batch):
    train = np.arange(N)
    order, keys = pair_order(0, 0, train, groups, TILE, 2)
    shares = [rank_share(order, keys, r, world, batch) for r in range(world)]
    lengths = {len(s) for s in shares}
    assert len(lengths) == 1 and lengths.pop() % batch == 0  # lockstep, no drop-last loss
    assert np.array_equal(np.unique(np.concatenate(shares)), train)  # everyone seen
    owner = {}
    for r, share in enumerate(shares):
        distinct = share[: len(np.unique(share))]  # the unpadded part
        for g in np.unique(groups[distinct]):
            assert owner.setdefault(int(g), r) == r  # a group lives on one rank
    assert sum(len(np.unique(s)) for s in shares) == N
    with pytest.raises(ValueError, match="rank"):
        rank_share(order, keys, world, world, batch)


def test_an_epochs_batches_mix_samples_from_across_the_dataset() -> None:
    """A folder numbers its samples class by class, and a pairing tile is 1,024 consecutive
    ids (one or two classes at ImageNet): every batch must draw from many tiles. A window of
    two tile pairs (before) gave each batch at most 4 tiles, and curricula lost ~1.4 points."""
    from student.data import SAMPLER_WINDOW_PAIRS
    from student.loader import epoch_plan
    from teacher_store.views.codec import PAIR_TILE
    from tests.store_fixtures import make_attrs

    n = 32 * PAIR_TILE  # 32 tiles: "classes" 0..31 in id order
    a = make_attrs(num_samples=n, views=1, chunk=64, shard=4096, shard_views=1)
    plan = epoch_plan(a, np.arange(n), seed=0, epoch=0, batch_size=256)
    tiles = [len(np.unique(plan.batch(b) // PAIR_TILE)) for b in range(8)]
    assert min(tiles) >= min(32, 2 * SAMPLER_WINDOW_PAIRS) * 3 // 4, tiles
