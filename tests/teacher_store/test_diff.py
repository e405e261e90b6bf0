"""teacher_store.diff.compare_stores: two stores of one config compared view by view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teacher_store import StoreAgreement, compare_stores
from teacher_store.diff import StoresNotComparable
from teacher_store.store.layout import ShardUnit
from teacher_store.store.schema import encode_values
from teacher_store.testing import build_store, make_attrs, write_store

ATTRS = make_attrs(4, views=1, topk=3, num_classes=10, chunk=4, shard=4, shard_views=1)
P = np.log(np.array([0.5, 0.25, 0.125]))  # the top-3 probabilities of every view


def _store(path: Path, ids: list[list[int]], valid: list[int], p: np.ndarray = P) -> Path:
    def targets(u: ShardUnit) -> tuple[np.ndarray, ...]:
        values = encode_values(np.broadcast_to(p, (1, 4, 3)).copy(), ATTRS.value_encoding)
        return np.array([ids], ATTRS.ids_dtype), values, np.array([valid], np.uint8)

    write_store(path, ATTRS, targets)
    return path


def test_figures_are_counted_over_views_valid_in_both(tmp_path: Path) -> None:
    a = _store(tmp_path / "a", [[1, 2, 3], [1, 2, 3], [4, 5, 6], [7, 8, 9]], [1, 1, 1, 0])
    q = np.log(np.array([0.5, 0.25, 0.1]))  # the third rank's p differs by 0.025
    b = _store(tmp_path / "b", [[1, 2, 3], [1, 3, 2], [5, 4, 0], [7, 8, 9]], [1, 1, 1, 1], q)
    got = compare_stores(a, b)
    assert got.views_compared == 3  # the last view is invalid in a
    assert got.top1_agreement == pytest.approx(2 / 3)  # views 0 and 1
    assert got.ids_agreement == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert got.topk_overlap == pytest.approx((1 + 1 + 2 / 3) / 3)
    # shared ids at other ranks compare p of different ranks: 0.25 vs 0.1 (view 1), 0.5 vs
    # 0.25 (view 2, id 4 is rank 0 of a and rank 1 of b)
    assert got.max_abs_dp_shared_ids == pytest.approx(0.25, abs=2e-3)
    assert set(got.to_dict()) == {
        "views_compared", "top1_agreement", "ids_agreement", "topk_overlap",
        "max_abs_dp_shared_ids",
    }  # fmt: skip


def test_a_store_agrees_with_its_twin_and_not_with_another(tmp_path: Path) -> None:
    ids = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]]
    a = _store(tmp_path / "a", ids, [1, 1, 1, 1])
    twin = compare_stores(a, _store(tmp_path / "b", ids, [1, 1, 1, 1]))
    assert twin == StoreAgreement(4, 1.0, 1.0, 1.0, 0.0)
    attrs = make_attrs(40, views=2, topk=4, chunk=8, shard=16)
    x, y = build_store(tmp_path / "x", attrs, seed=3), build_store(tmp_path / "y", attrs, seed=4)
    other = compare_stores(x, y)  # independent random ids: little agreement
    assert other.top1_agreement < 0.2 and other.ids_agreement < 0.2 and other.views_compared > 60


def test_stores_of_other_shapes_or_no_common_view_are_refused(tmp_path: Path) -> None:
    a = build_store(tmp_path / "a", make_attrs(40, views=2, chunk=8, shard=16))
    b = build_store(tmp_path / "b", make_attrs(40, views=3, chunk=8, shard=16))
    with pytest.raises(StoresNotComparable, match=r"differ in shape .* 2 x 40 against 3 x 40"):
        compare_stores(a, b)
    none = _store(tmp_path / "n", [[1, 2, 3]] * 4, [0, 0, 0, 0])
    with pytest.raises(StoresNotComparable, match="no view valid in both"):
        compare_stores(none, _store(tmp_path / "m", [[1, 2, 3]] * 4, [1, 1, 1, 1]))
    assert issubclass(StoresNotComparable, ValueError)
