"""Schema version 2: head-sorted id order and the prob-u8x3 encoding (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_store.store.id_order import encoding_kl, rank_to_stored, stored_to_rank
from teacher_store.store.schema import (
    StoreAttrs,
    decode_values,
    default_encoding,
    encode_values,
    head_size,
    quant_step,
)
from tests.store_fixtures import make_attrs


def _teacher_like(rng: np.random.Generator, v: int, c: int, k: int) -> tuple[np.ndarray, ...]:
    """[v, K] rank-order ids and float32 log-probs of a peaked softmax over c classes."""
    logits = rng.standard_normal((v, c)).astype(np.float32) * 3
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    ids = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    return ids, np.take_along_axis(logp, ids, 1)


@pytest.mark.parametrize(
    ("encoding", "k"), [("prob-u8", 10), ("prob-u8x3", 100), ("logprob-f16", 7)]
)
def test_head_sorted_round_trip(encoding: str, k: int) -> None:
    rng = np.random.default_rng(0)
    ids, logp = _teacher_like(rng, 300, 1000, k)
    attrs = make_attrs(topk=k, num_classes=1000, encoding=encoding).model_copy(
        update={"id_order": "head-sorted"}
    )
    values = encode_values(logp, encoding)
    s_ids, s_vals = rank_to_stored(ids.astype(np.uint16), values, attrs)
    m = head_size(encoding)
    tail = np.cumsum(s_ids[:, m:].astype(np.int64), axis=1)
    assert (np.diff(tail, axis=1) > 0).all()  # the tail is stored sorted, as gaps
    r_ids, r_vals = stored_to_rank(s_ids, s_vals, attrs)
    assert (r_ids[:, 0] == ids[:, 0]).all()  # top-1 exact
    # The same (id, value) pairs; rank order differs only between equal stored values.
    for i in range(len(ids)):
        assert dict(zip(r_ids[i].tolist(), r_vals[i].tolist(), strict=True)) == dict(
            zip(ids[i].tolist(), values[i].tolist(), strict=True)
        )
    moved = r_ids != ids
    assert (r_vals[moved] == values[moved]).all()
    assert (np.diff(r_vals[:, m:].astype(np.float32), axis=1) <= 0).all()


def test_rank_order_is_identity() -> None:
    attrs = make_attrs(topk=5, encoding="prob-u8")
    ids = np.arange(10, dtype=np.uint16).reshape(2, 5)
    vals = np.arange(10, dtype=np.uint8).reshape(2, 5)
    assert rank_to_stored(ids, vals, attrs)[0] is ids
    assert stored_to_rank(ids, vals, attrs)[1] is vals


def test_u8x3_error_bound_and_tail_precision() -> None:
    rng = np.random.default_rng(1)
    _, logp = _teacher_like(rng, 500, 1000, 100)
    p = np.exp(logp.astype(np.float64))
    for enc in ("prob-u8", "prob-u8x3"):
        back = np.exp(decode_values(encode_values(logp, enc), enc).astype(np.float64))
        err = np.abs(back - p)
        assert err.max() <= 1 / 510 + 1e-6  # every probability within 2e-3
        assert (err <= 0.5 * quant_step(enc, 100) + 1e-6).all()
    tail = np.abs(np.exp(decode_values(encode_values(logp, "prob-u8x3"), "prob-u8x3")) - p)
    assert tail[:, 2:].max() <= 1 / 1530 + 1e-6  # 3x finer than prob-u8 from rank 3


def test_default_encoding_by_k() -> None:
    assert default_encoding(10) == "prob-u8"
    assert default_encoding(100) == "prob-u8x3"
    assert (head_size("prob-u8"), head_size("prob-u8x3"), head_size("logprob-f16")) == (1, 2, 1)


def test_encoding_kl_orders_the_encodings() -> None:
    rng = np.random.default_rng(2)
    _, logp = _teacher_like(rng, 400, 1000, 100)
    kl = {
        enc: encoding_kl(logp, encode_values(logp, enc), enc, 1000).mean()
        for enc in ("logprob-f16", "prob-u8", "prob-u8x3")
    }
    assert 0 <= kl["logprob-f16"] < 1e-5
    assert kl["logprob-f16"] < kl["prob-u8x3"] < kl["prob-u8"] / 3  # the finer tail pays off


def _padded_attrs(
    encoding: str, k: int, order: list[int] | None, id_order: str = "head-sorted-pad"
) -> StoreAttrs:
    base = make_attrs(topk=k, num_classes=1000, encoding=encoding).to_dict()
    return StoreAttrs.from_dict({**base, "id_order": id_order, "class_order": order})


@pytest.mark.parametrize(
    ("encoding", "k", "ordered"),
    [("prob-u8", 10, True), ("prob-u8x3", 100, True), ("prob-u8x3", 100, False),
     ("logprob-f16", 7, True)],
)  # fmt: skip
def test_padded_round_trip(encoding: str, k: int, ordered: bool) -> None:
    """head-sorted-pad: positions in the class order, zero-valued tail entries as padding."""
    rng = np.random.default_rng(3)
    ids, logp = _teacher_like(rng, 300, 1000, k)
    order = rng.permutation(1000).tolist() if ordered else None
    attrs = _padded_attrs(encoding, k, order)
    values = encode_values(logp, encoding)
    m = head_size(encoding)
    s_ids, s_vals = rank_to_stored(ids.astype(np.uint16), values, attrs)
    zero = (s_vals[:, m:] == 0) if encoding != "logprob-f16" else np.zeros((300, k - m), bool)
    assert (s_ids[:, m:][zero] == 0).all() and (np.diff(zero.astype(int), axis=1) >= 0).all()
    if encoding == "prob-u8x3":
        assert zero.mean() > 0.05  # the padding is exercised
    positions = np.cumsum(s_ids[:, m:].astype(np.int64), axis=1)
    pos_of = np.empty(1000, np.int64)
    pos_of[np.asarray(order if order else range(1000))] = np.arange(1000)
    nonzero = (values[:, m:] != 0) if encoding != "logprob-f16" else np.ones((300, k - m), bool)
    assert sorted(positions[~zero].tolist()) == sorted(pos_of[ids[:, m:][nonzero]].tolist())
    r_ids, r_vals = stored_to_rank(s_ids, s_vals, attrs)
    assert (r_ids[:, 0] == ids[:, 0]).all()  # top-1 exact
    for i in range(len(ids)):
        assert len(set(r_ids[i].tolist())) == k  # padding got distinct, unused ids
        kept = {c: v for c, v in zip(ids[i].tolist(), values[i].tolist(), strict=True) if v}
        got = {c: v for c, v in zip(r_ids[i].tolist(), r_vals[i].tolist(), strict=True) if v}
        assert got == kept if encoding != "logprob-f16" else len(got) == k
    # Rank order: descending value, ties (padding included) by ascending class id.
    key = r_vals[:, m:].astype(np.float64)
    assert (np.diff(key, axis=1) <= 0).all()
    same = np.diff(key, axis=1) == 0
    assert (np.diff(r_ids[:, m:].astype(np.int64), axis=1)[same] > 0).all()


def test_padding_decodes_like_the_others_in_the_loss() -> None:
    """Padding changes no student target: zero-valued entries were rest mass already."""
    import torch

    from student.loss import sparse_teacher_logprobs

    rng = np.random.default_rng(4)
    ids, logp = _teacher_like(rng, 64, 1000, 100)
    values = encode_values(logp, "prob-u8x3")
    dense = []
    for attrs in (
        make_attrs(topk=100, num_classes=1000, encoding="prob-u8x3"),
        _padded_attrs("prob-u8x3", 100, rng.permutation(1000).tolist()),
    ):
        r_ids, r_vals = stored_to_rank(*rank_to_stored(ids.astype(np.uint16), values, attrs), attrs)
        lp = torch.from_numpy(decode_values(r_vals, "prob-u8x3"))
        dense.append(sparse_teacher_logprobs(torch.from_numpy(r_ids.astype(np.int64)), lp, 1000))
    torch.testing.assert_close(dense[0], dense[1])


def test_class_order_must_be_a_permutation() -> None:
    with pytest.raises(ValueError, match="not a permutation"):
        _padded_attrs("prob-u8", 10, [0] * 1000)
    with pytest.raises(ValueError, match="not a permutation"):
        _padded_attrs("prob-u8", 10, list(range(999)))
    with pytest.raises(ValueError, match="needs id_order 'head-sorted-pad'"):
        _padded_attrs("prob-u8", 10, list(range(1000)), id_order="head-sorted")
