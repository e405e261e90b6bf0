"""The value-encoding table: everything that names an encoding is derived from it."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from pydantic import ValidationError

from teacher_store import commands
from teacher_store.store import blockfmt, id_order
from teacher_store.store.arrays import TargetBlock
from teacher_store.store.schema import StoreAttrs, head_size, quant_step, values_dtype
from teacher_store.store.value_encodings import (
    ENCODINGS,
    VALUE_ENCODINGS,
    UnknownEncoding,
    encoding,
)
from tests.store_fixtures import make_attrs


def test_wire_codes_are_fixed() -> None:
    """Codes are on the wire: a table edit must never renumber an existing encoding."""
    got = {name: (e.wire_code, e.dtype_code, e.dtype_name) for name, e in ENCODINGS.items()}
    assert got == {
        "logprob-f16": (1, 1, "float16"),
        "prob-u8": (2, 2, "uint8"),
        "prob-u8x3": (3, 2, "uint8"),
    }


@pytest.mark.parametrize("name", VALUE_ENCODINGS)
def test_block_format_codes_come_from_the_table(name: str) -> None:
    e = encoding(name)
    values = e.encode(np.log(np.full((2, 3), 0.25)))
    block = TargetBlock(0, 0, np.zeros((2, 3), np.uint16), values, np.ones(2, bool), name)
    raw = blockfmt.encode_block(block)
    assert (raw[9], raw[10]) == (e.dtype_code, e.wire_code)  # header bytes 9 and 10
    assert blockfmt.decode_block(raw).encoding == name
    assert values_dtype(name) == e.dtype and head_size(name) == e.head


def test_cli_choices_come_from_the_table() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "--data", "d", "--out", "o", "--value-encoding", "x"])
    for name in VALUE_ENCODINGS:
        args = parser.parse_args(
            ["generate", "--data", "d", "--out", "o", "--value-encoding", name]
        )
        assert args.value_encoding == name


def test_schema_refuses_an_encoding_not_in_the_table() -> None:
    raw = make_attrs().model_dump()
    raw["value_encoding"] = "prob-u4"
    with pytest.raises(ValidationError, match="unknown value encoding 'prob-u4'; known: logprob"):
        StoreAttrs.model_validate(raw)
    with pytest.raises(UnknownEncoding, match="known: logprob-f16, prob-u8, prob-u8x3"):
        encoding("prob-u4")


def test_verify_bounds_are_the_encodings_rounding_error() -> None:
    """prob-u8: half of 1/255 everywhere; prob-u8x3: 1/765 / 2 from rank 3; logprob-f16: half
    an f16 ulp (relative 2**-11), infinite below the clip floor (p = 0 either way)."""
    ref = np.log(np.array([0.5, 0.2, 0.1, 1e-30]))
    assert np.allclose(encoding("prob-u8").bound(ref), 1 / 510)
    assert np.allclose(encoding("prob-u8x3").bound(ref), [1 / 510, 1 / 510, 1 / 1530, 1 / 1530])
    f16 = encoding("logprob-f16").bound(np.array([-1.0, -70000.0]))
    assert f16[0] == pytest.approx(2**-11 + 2**-24) and f16[1] == np.inf
    assert np.array_equal(quant_step("logprob-f16", 3), np.zeros(3))


@pytest.mark.parametrize("name", VALUE_ENCODINGS)
def test_each_encoding_round_trips_within_its_bound(name: str) -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((20, 50)) * 3
    logp = np.sort(logits - np.log(np.exp(logits).sum(1, keepdims=True)), 1)[:, ::-1][:, :12]
    e = encoding(name)
    stored = e.encode(logp)
    assert stored.dtype == e.dtype
    back = e.decode(stored).astype(np.float64)
    fresh = logp if e.tolerance_space == "logp" else np.exp(logp)
    got = back if e.tolerance_space == "logp" else np.exp(back)
    bound = np.stack([e.bound(row) for row in logp])  # [20, K]
    assert (np.abs(got - fresh) <= bound + 1e-9).all()
    assert np.array_equal(e.zero(stored), stored == 0 if e.tolerance_space == "p" else 0 * stored)


def test_old_id_order_path_still_imports() -> None:
    """teacher_store.store.encodings was the id-order module: a re-export for one release."""
    from teacher_store.store import encodings

    assert encodings.stored_to_rank is id_order.stored_to_rank
    assert encodings.ClassIdError is id_order.ClassIdError
