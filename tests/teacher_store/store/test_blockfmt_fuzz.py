"""Fuzzing the block wire format's decoder (``teacher_store.store.blockfmt``) with Hypothesis.

Properties, each over blocks built by the encoder from random small ids, values and valid
flags (every dtype and encoding, with and without a store identity) or over raw bytes:

- arbitrary bytes (and bytes that start like a block header) either decode or raise
  :class:`BlockFormatError`, never another exception;
- every prefix truncation, one extra byte, every single-bit flip and a random non-zero xor of
  every byte of a valid block raise :class:`BlockFormatError` (the crc32c covers every byte but
  its own field, and crc32c detects any error confined to 32 consecutive bits);
- bytes whose crc is made right for random header fields and body (a forger, or a bug on the
  writing side) decode only when they are what the encoder writes for the decoded data, with
  values in the encoding's dtype (so a decoder cannot hand out data its own encoder would
  never produce);
- encode -> decode is exact (ids, values bit for bit including NaN payloads, valid flags,
  slot, start, encoding, identity).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import crc32c
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teacher_store.store.arrays import TargetBlock
from teacher_store.store.blockfmt import (
    HEADER_SIZE,
    MAGIC,
    BlockFormatError,
    BlockHeader,
    decode_block_with_header,
    encode_block,
)
from teacher_store.store.schema import values_dtype
from tests.reliability import full_scale, record

pytestmark = pytest.mark.reliability

# (examples of the raw-bytes, forged-crc and round-trip properties; of the damage property,
# whose every example tries ~10 mutations per byte of a block)
EXAMPLES = 6000 if full_scale() else 1000
DAMAGED_BLOCKS = 300 if full_scale() else 30

_ENCODINGS = ("logprob-f16", "prob-u8", "prob-u8x3")
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


@st.composite
def _blocks(draw: st.DrawFn, max_n: int = 6, max_k: int = 6) -> tuple[TargetBlock, str]:
    """A random small block in stored dtypes, and a store identity ("" or 16 hex digits)."""
    n, k = draw(st.integers(0, max_n)), draw(st.integers(0, max_k))
    ids_dtype = np.dtype(draw(st.sampled_from(["<u2", "<u4"])))
    encoding = draw(st.sampled_from(_ENCODINGS))
    vdt = np.dtype(values_dtype(encoding)).newbyteorder("<")
    ids = np.frombuffer(draw(st.binary(min_size=n * k * ids_dtype.itemsize,
                                       max_size=n * k * ids_dtype.itemsize)),
                        ids_dtype).reshape(n, k)  # fmt: skip
    values = np.frombuffer(draw(st.binary(min_size=n * k * vdt.itemsize,
                                          max_size=n * k * vdt.itemsize)),
                           vdt).reshape(n, k)  # fmt: skip
    valid = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    slot, start = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**64 - 1))
    identity = draw(st.one_of(st.just(""), st.binary(min_size=8, max_size=8).map(bytes.hex)))
    if identity == "00" * 8:
        identity = ""  # all-zero bytes are the format's "no identity"
    return TargetBlock(slot, start, ids, values, valid, encoding), identity


def _same(a: TargetBlock, b: TargetBlock) -> bool:
    """Equal data, bit for bit (NaN payloads included), in equal dtypes."""
    return (
        (a.slot, a.start, a.encoding) == (b.slot, b.start, b.encoding)
        and a.ids.shape == b.ids.shape
        and a.ids.dtype == b.ids.dtype
        and a.values.dtype == b.values.dtype
        and a.ids.tobytes() == b.ids.tobytes()
        and a.values.tobytes() == b.values.tobytes()
        and a.valid.dtype == b.valid.dtype == np.dtype(bool)
        and a.valid.tobytes() == b.valid.tobytes()
    )


def _decode_or_refuse(buf: bytes) -> tuple[BlockHeader, TargetBlock] | None:
    """The decoded block, or None for a BlockFormatError; any other exception propagates."""
    try:
        return decode_block_with_header(buf)
    except BlockFormatError:
        return None


def _check_accepted(buf: bytes, got: tuple[BlockHeader, TargetBlock]) -> None:
    """A block the decoder accepts is exactly what the encoder writes for its data."""
    header, block = got
    assert block.values.dtype == np.dtype(values_dtype(block.encoding))
    assert encode_block(block, header.identity) == bytes(buf)


def _run(test: Callable[[], None], name: str, tried: list[int]) -> None:
    try:
        test()
    finally:
        record(name, inputs_tried=sum(tried), data_lost=0)


ROW = "fuzz: block wire format"
_HEADERISH = st.builds(
    lambda rest, body: MAGIC + struct.pack("<HH", 2, HEADER_SIZE) + rest + body,
    st.binary(min_size=HEADER_SIZE - 8, max_size=HEADER_SIZE - 8),
    st.binary(max_size=120),
)


def test_arbitrary_bytes_decode_or_raise_the_typed_error() -> None:
    tried = [0]

    @settings(max_examples=EXAMPLES, **_SETTINGS)
    @given(buf=st.one_of(st.binary(max_size=300), _HEADERISH))
    def fuzz(buf: bytes) -> None:
        tried[0] += 1
        got = _decode_or_refuse(buf)
        if got is not None:  # only bytes whose crc happens to match
            _check_accepted(buf, got)

    _run(fuzz, ROW, tried)


# (ids code, values code, encoding code, valid code) of well-formed headers
_WELL_FORMED_CODES = st.sampled_from(
    [(i, v, e, 1) for i in (1, 2) for v, e in ((1, 1), (2, 2), (2, 3))]
)


def test_crc_correct_forgeries_decode_only_as_encoder_output() -> None:
    """Random header fields and body with the crc made right: refused, or canonical."""
    tried = [0]
    accepted = [0]

    @settings(max_examples=EXAMPLES, **_SETTINGS)
    @given(
        codes=st.one_of(_WELL_FORMED_CODES, st.tuples(*[st.integers(0, 4)] * 4)),
        n=st.integers(0, 4),
        k=st.integers(0, 4),
        slot=st.integers(0, 2**32 - 1),
        start=st.integers(0, 2**64 - 1),
        ident=st.binary(min_size=8, max_size=8),
        reserved=st.sampled_from([0, 0, 1, 2**31]),
        extra=st.sampled_from([0, 0, 0, -2, -1, 1, 2]),
        data=st.data(),
    )
    def fuzz(
        codes: tuple[int, int, int, int],
        n: int,
        k: int,
        slot: int,
        start: int,
        ident: bytes,
        reserved: int,
        extra: int,
        data: st.DataObject,
    ) -> None:
        tried[0] += 1
        ic, vc, ec, valc = codes
        isz, vsz = {2: 4}.get(ic, 2), {1: 2}.get(vc, 1)
        size = max(0, n * k * (isz + vsz) + n + extra)
        body = data.draw(st.binary(min_size=size, max_size=size))
        # valid flags: mostly 0/1 with an occasional other byte (must not decode as "valid")
        if n and extra == 0 and data.draw(st.booleans()):
            flags = data.draw(st.lists(st.sampled_from([0, 1, 1, 2, 255]), min_size=n,
                                       max_size=n))  # fmt: skip
            body = body[: size - n] + bytes(flags)
        head = struct.pack("<4sHHBBBBIIIQ8sI", MAGIC, 2, HEADER_SIZE, ic, vc, ec, valc, k, n,
                           slot, start, ident, reserved)  # fmt: skip
        crc = crc32c.crc32c(body, crc32c.crc32c(head))
        buf = head + struct.pack("<I", crc) + body
        got = _decode_or_refuse(buf)
        if got is not None:
            accepted[0] += 1
            _check_accepted(buf, got)

    _run(fuzz, ROW, tried)
    assert accepted[0] > 0  # the strategy does reach well-formed blocks


def _mutations(raw: bytes, xors: list[int]) -> list[tuple[str, bytes]]:
    """Every prefix, one byte more, every single-bit flip and one xor of every byte."""
    out = [(f"prefix {i}", raw[:i]) for i in range(len(raw))]
    out.append(("one more byte", raw + b"\0"))
    for i in range(len(raw)):
        for bit in range(8):
            out.append(
                (f"bit {bit} of byte {i}", raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1 :])
            )
        out.append(
            (f"xor {xors[i]:#x} at byte {i}", raw[:i] + bytes([raw[i] ^ xors[i]]) + raw[i + 1 :])
        )
    return out


def test_truncated_and_flipped_blocks_are_refused() -> None:
    tried = [0]

    @settings(max_examples=DAMAGED_BLOCKS, **_SETTINGS)
    @given(made=_blocks(max_n=5, max_k=5), data=st.data())
    def fuzz(made: tuple[TargetBlock, str], data: st.DataObject) -> None:
        block, identity = made
        raw = encode_block(block, identity)
        xors = data.draw(st.lists(st.integers(1, 255), min_size=len(raw), max_size=len(raw)))
        for what, bad in _mutations(raw, xors):
            tried[0] += 1
            got = _decode_or_refuse(bad)
            # The crc covers every byte but its own field, so no damage may pass; were a byte
            # outside it, a flip there would at least have to leave the data as it was.
            assert got is None or _same(got[1], block), f"{what} decoded to other data"
            assert got is None, f"{what} was not detected"

    _run(fuzz, ROW, tried)


def test_encode_decode_round_trip_is_exact() -> None:
    tried = [0]

    @settings(max_examples=EXAMPLES, **_SETTINGS)
    @given(made=_blocks(), writable=st.booleans())
    def fuzz(made: tuple[TargetBlock, str], writable: bool) -> None:
        tried[0] += 1
        block, identity = made
        raw = encode_block(block, identity)
        header, back = decode_block_with_header(bytearray(raw) if writable else raw)
        assert _same(back, block)
        assert header.identity == identity and header.total_size == len(raw)
        assert encode_block(back, header.identity) == raw

    _run(fuzz, ROW, tried)
