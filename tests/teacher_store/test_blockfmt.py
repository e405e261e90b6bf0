"""The block wire format: round trips, exact layout, and refusal of damaged bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from teacher_store.blockfmt import (
    HEADER_SIZE,
    MAGIC,
    BlockFormatError,
    BlockHeader,
    decode_block,
    encode_block,
)
from teacher_store.store import TargetBlock


def _block(ids_dtype: str, values_dtype: str, encoding: str, n: int = 7, k: int = 3) -> TargetBlock:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 60000, (n, k)).astype(ids_dtype)
    values = rng.normal(size=(n, k)).astype(values_dtype)
    valid = rng.random(n) > 0.3
    return TargetBlock(2, 1234567890123, ids, values, valid, encoding)


@pytest.mark.parametrize(
    ("ids", "values", "enc"),
    [("uint16", "float16", "logprob-f16"), ("uint32", "uint8", "prob-u8")],
)
def test_round_trip_and_layout(ids: str, values: str, enc: str) -> None:
    block = _block(ids, values, enc)
    raw = encode_block(block)
    n, k = block.ids.shape
    isz, vsz = np.dtype(ids).itemsize, np.dtype(values).itemsize
    assert len(raw) == HEADER_SIZE + n * k * (isz + vsz) + n == 40 + n * k * (isz + vsz) + n
    magic, version, hsize = struct.unpack_from("<4sHH", raw)
    assert (magic, version, hsize) == (MAGIC, 1, 40)
    assert struct.unpack_from("<III Q", raw, 12) == (k, n, 2, 1234567890123)
    ids_bytes = raw[40 : 40 + n * k * isz]
    assert ids_bytes == block.ids.astype(np.dtype(ids).newbyteorder("<")).tobytes()
    assert raw[-n:] == block.valid.astype(np.uint8).tobytes()
    back = decode_block(bytearray(raw))
    assert (back.slot, back.start, back.encoding) == (2, 1234567890123, enc)
    for f in ("ids", "values", "valid"):
        np.testing.assert_array_equal(getattr(back, f), getattr(block, f))
        assert getattr(back, f).dtype == getattr(block, f).dtype
    assert back.ids.flags.writeable  # decoded from a bytearray: no copy, still writable


def test_refuses_damage() -> None:
    raw = bytearray(encode_block(_block("uint16", "float16", "logprob-f16")))
    flipped = bytearray(raw)
    flipped[HEADER_SIZE + 5] ^= 1
    with pytest.raises(BlockFormatError, match="crc32c"):
        decode_block(flipped)
    with pytest.raises(BlockFormatError, match="bytes"):
        decode_block(raw[:-1])
    with pytest.raises(BlockFormatError, match="magic"):
        decode_block(b"XXXX" + raw[4:])
    with pytest.raises(BlockFormatError, match="version"):
        decode_block(raw[:4] + struct.pack("<H", 9) + raw[6:])
    with pytest.raises(BlockFormatError, match="shorter"):
        decode_block(raw[:10])


def test_header_rejects_unknown_dtype() -> None:
    h = BlockHeader(0, 0, 1, 1, np.dtype("int64"), np.dtype("float16"), "logprob-f16")
    with pytest.raises(ValueError, match="ids dtype"):
        h.pack()
