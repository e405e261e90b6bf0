"""The block wire format: round trips, exact layout, and refusal of damaged bytes."""

from __future__ import annotations

import hashlib
import struct

import crc32c
import numpy as np
import pytest

from teacher_store.store.arrays import TargetBlock
from teacher_store.store.blockfmt import (
    HEADER_SIZE,
    MAGIC,
    BlockFormatError,
    BlockHeader,
    decode_block,
    decode_block_with_header,
    encode_block,
    store_identity,
)

IDENT = store_identity(b'{"files": {}}\n')


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
    raw = encode_block(block, IDENT)
    n, k = block.ids.shape
    isz, vsz = np.dtype(ids).itemsize, np.dtype(values).itemsize
    assert len(raw) == HEADER_SIZE + n * k * (isz + vsz) + n == 48 + n * k * (isz + vsz) + n
    magic, version, hsize = struct.unpack_from("<4sHH", raw)
    assert (magic, version, hsize) == (MAGIC, 2, 48)
    assert struct.unpack_from("<III Q", raw, 12) == (k, n, 2, 1234567890123)
    assert raw[32:40] == bytes.fromhex(IDENT) and raw[40:44] == bytes(4)
    # the crc covers the header (all but its own field) and then the body
    assert struct.unpack_from("<I", raw, 44)[0] == crc32c.crc32c(raw[48:], crc32c.crc32c(raw[:44]))
    ids_bytes = raw[48 : 48 + n * k * isz]
    assert ids_bytes == block.ids.astype(np.dtype(ids).newbyteorder("<")).tobytes()
    assert raw[-n:] == block.valid.astype(np.uint8).tobytes()
    header, back = decode_block_with_header(bytearray(raw))
    assert header.identity == IDENT
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


def test_identity_is_tied_to_the_manifest_and_covered_by_the_crc() -> None:
    assert hashlib.sha256(b'{"files": {}}\n').hexdigest()[:16] == IDENT
    assert store_identity(b'{"files": {}} \n') != IDENT  # any other manifest byte: other store
    raw = encode_block(_block("uint16", "float16", "logprob-f16"), IDENT)
    for at in (32, 39):  # first and last identity byte
        flipped = bytearray(raw)
        flipped[at] ^= 0x01
        with pytest.raises(BlockFormatError, match="crc32c"):
            decode_block(flipped)
    block = _block("uint16", "float16", "logprob-f16")
    other = store_identity(b"another manifest")
    assert decode_block_with_header(encode_block(block, other))[0].identity == other != IDENT
    unnamed = decode_block_with_header(encode_block(block))[0]
    assert unnamed.identity == ""  # no identity given: all-zero bytes, read back as ""
    with pytest.raises(ValueError, match="16 hex digits"):
        encode_block(_block("uint16", "float16", "logprob-f16"), "abc")


def test_refuses_version_1_blocks() -> None:
    raw = bytearray(encode_block(_block("uint16", "float16", "logprob-f16"), IDENT))
    struct.pack_into("<HH", raw, 4, 1, 40)  # what a version-1 server sends
    with pytest.raises(BlockFormatError, match=r"version 1 .*knows version 2"):
        decode_block(raw)


def test_header_rejects_unknown_dtype() -> None:
    h = BlockHeader(0, 0, 1, 1, np.dtype("int64"), np.dtype("float16"), "logprob-f16")
    with pytest.raises(ValueError, match="ids dtype"):
        h.pack()


def _resealed(raw: bytes | bytearray) -> bytes:
    """``raw`` with its crc made right again (what a forger, or a writer's bug, would send)."""
    out = bytearray(raw)
    struct.pack_into("<I", out, 44, crc32c.crc32c(out[48:], crc32c.crc32c(out[:44])))
    return bytes(out)


def test_refuses_bytes_the_encoder_never_writes_even_with_a_right_crc() -> None:
    """Found by tests/teacher_store/store/test_blockfmt_fuzz.py: each of these decoded."""
    raw = bytearray(encode_block(_block("uint16", "float16", "logprob-f16")))
    decode_block(_resealed(raw))
    reserved = bytearray(raw)
    reserved[40] = 1
    with pytest.raises(BlockFormatError, match="reserved"):
        decode_block(_resealed(reserved))
    flag = bytearray(raw)
    flag[-1] = 2
    with pytest.raises(BlockFormatError, match="valid flags"):
        decode_block(_resealed(flag))
    mismatch = bytearray(raw)
    mismatch[10] = 2  # prob-u8 with float16 values
    with pytest.raises(BlockFormatError, match="prob-u8"):
        decode_block(_resealed(mismatch))
    block = _block("uint16", "float16", "prob-u8")
    with pytest.raises(ValueError, match="prob-u8"):
        encode_block(block)
