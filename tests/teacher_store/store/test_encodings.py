"""Schema version 2: head-sorted id order and the prob-u8x3 encoding (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_store.store.encodings import encoding_kl, rank_to_stored, stored_to_rank
from teacher_store.store.schema import (
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
