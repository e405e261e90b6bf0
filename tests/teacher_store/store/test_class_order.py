"""The teacher-derived class order of head-sorted-pad stores."""

from __future__ import annotations

import numpy as np
import torch

from teacher_store.store.class_order import (
    MAX_CLASSES,
    order_from_weights,
    teacher_class_order,
)


def test_similar_classifier_rows_sit_together() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 32)) * 5
    cluster = rng.permutation(np.repeat(np.arange(4), 10))  # 40 classes, 4 shuffled clusters
    weight = centres[cluster] + rng.standard_normal((40, 32)) * 0.1
    order = order_from_weights(weight)
    assert sorted(order) == list(range(40))
    runs = np.count_nonzero(np.diff(cluster[order])) + 1
    assert runs == 4  # each cluster is one contiguous run
    assert order_from_weights(weight) == order  # deterministic


def test_shipped_lite0_order_is_the_computed_one(lite0) -> None:
    """The shipped order (so generation skips the 5-20 s clustering) is what the code computes."""
    model, info = lite0
    shipped = teacher_class_order(model, 1000, info.weights_sha256)
    computed = order_from_weights(model.get_classifier().weight.detach().numpy())
    assert shipped == computed


def test_no_order_for_many_classes_or_no_linear_head() -> None:
    big = torch.nn.Linear(4, MAX_CLASSES + 1)
    model = torch.nn.Sequential(big)
    model.get_classifier = lambda: big  # type: ignore[method-assign,assignment]
    assert teacher_class_order(model, MAX_CLASSES + 1) is None
    assert teacher_class_order(torch.nn.Sequential(), 10) is None  # no get_classifier
    small = torch.nn.Linear(4, 5)
    model.get_classifier = lambda: small  # type: ignore[method-assign,assignment]
    order = teacher_class_order(model, 5)
    assert order is not None and sorted(order) == list(range(5))
