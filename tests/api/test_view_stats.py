"""The dashboard's chart numbers: pure functions over top-K targets."""

from __future__ import annotations

import numpy as np

from api.view_stats import histogram, sparse_entropy, top_classes


def test_sparse_entropy_spreads_the_residual_over_the_other_classes() -> None:
    k, c = 4, 100
    uniform_topk = np.log(np.full((1, k), 1.0 / k))  # all mass in the top-K
    with np.errstate(divide="ignore"):  # log 0 = -inf, as logprob-f16 stores a rounded-off p
        one_hot = np.log(np.array([[1.0, 0.0, 0.0, 0.0]]))
    half = np.log(np.array([[0.5, 1e-30, 1e-30, 1e-30]]))  # 0.5 left for the 96 others
    got = sparse_entropy(np.concatenate([uniform_topk, one_hot, half]), c)
    want_half = -0.5 * np.log(0.5) - 0.5 * np.log(0.5 / (c - k))
    np.testing.assert_allclose(got, [np.log(k), 0.0, want_half], atol=1e-9)


def test_top_classes_most_frequent_first_with_names() -> None:
    ids = np.array([3, 1, 3, 2, 1, 3, 7])
    names = ["zero", "one", "two", "three"]
    assert top_classes(ids, names, most=3) == [("three", 3), ("one", 2), ("two", 1)]
    assert top_classes(ids, names)[-1] == ("class 7", 1)  # no name: its id


def test_histogram_clips_into_its_range() -> None:
    h = histogram(np.array([-1.0, 0.0, 0.26, 0.99, 2.0]), 0.0, 1.0, bins=4)
    assert h.counts == [2, 1, 0, 2] and sum(h.counts) == 5
