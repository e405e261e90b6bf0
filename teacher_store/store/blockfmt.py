"""The binary wire format of one target block (server and client share it).

A block holds the stored targets of one view slot for a contiguous sample range
``[start, start + n)``: class ids, values in the store's own encoding (not decoded), and the
valid flags, tagged with the identity of the store they came from. Everything is
little-endian. Layout (version 2)::

    offset  size  field
    0       4     magic b"DTGB"
    4       2     format version (uint16, currently 2)
    6       2     header size in bytes (uint16, 48 in version 2; readers skip to it)
    8       1     ids dtype code     (1 = uint16, 2 = uint32)
    9       1     values dtype code  (the encoding's ``dtype_code``: 1 = float16, 2 = uint8)
    10      1     value encoding     (its ``wire_code``: 1 = logprob-f16, 2 = prob-u8,
                                      3 = prob-u8x3; teacher_store.store.value_encodings)
    11      1     valid dtype code   (1 = uint8, 0 or 1)
    12      4     K, top-k per view (uint32)
    16      4     n, samples in the block (uint32)
    20      4     view slot (uint32)
    24      8     start, first sample id (uint64)
    32      8     store identity: the first 8 bytes of sha256(_distill/manifest.json)
    40      4     reserved, 0 (a reader refuses any other value)
    44      4     crc32c of the whole block except this field (header bytes 0-43, then body)
    48      ...   ids     n*K * itemsize(ids)     row-major [n, K], rank order (always: the
                                                  server decodes a store's id_order)
                  values  n*K * itemsize(values)  row-major [n, K], stored encoding
                  valid   n bytes                 1 where the view was computed

Total size = header + n*K*(ids itemsize + values itemsize) + n. A reader must check the
magic, the version, that the size matches exactly, and the crc; must refuse a values dtype
that is not its encoding's (float16 for logprob-f16, uint8 for the prob-u8 family), a non-zero
reserved field and a valid flag other than 0 or 1 (bytes the encoder never writes, even under a
right crc: a decoded block re-encodes to exactly its bytes); must refuse a block whose
slot/start/n differ from what it asked for, and must refuse a block whose store identity
differs from the store it opened (the store was replaced while it was being read). Version 1
(40-byte header, no identity, crc of the body only) is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

import crc32c
import numpy as np

from teacher_store.store.arrays import TargetBlock

# The identity is the manifest's digest, defined where the manifest is checked; re-exported.
from teacher_store.store.integrity import IDENTITY_BYTES
from teacher_store.store.integrity import store_identity as store_identity
from teacher_store.store.schema import values_dtype
from teacher_store.store.value_encodings import ENCODINGS

MAGIC = b"DTGB"
FORMAT_VERSION = 2
MEDIA_TYPE = "application/octet-stream"
IDENTITY_HEADER = "X-Distill-Store-Identity"  # the same identity as an HTTP response header


@dataclass(frozen=True)
class HeaderField:
    """One field of the block header: ``type`` is ``bytes`` or a little-endian ``uintN``."""

    name: str
    offset: int
    size: int
    type: str


# The header, field by field: the struct below is built from it, and a test compares it with
# the table in the documentation, so the documented layout is the one on the wire.
HEADER_FIELDS = (
    HeaderField("magic", 0, 4, "bytes"),
    HeaderField("version", 4, 2, "uint16"),
    HeaderField("header_size", 6, 2, "uint16"),
    HeaderField("ids_dtype", 8, 1, "uint8"),
    HeaderField("values_dtype", 9, 1, "uint8"),
    HeaderField("value_encoding", 10, 1, "uint8"),
    HeaderField("valid_dtype", 11, 1, "uint8"),
    HeaderField("k", 12, 4, "uint32"),
    HeaderField("n", 16, 4, "uint32"),
    HeaderField("slot", 20, 4, "uint32"),
    HeaderField("start", 24, 8, "uint64"),
    HeaderField("identity", 32, 8, "bytes"),
    HeaderField("reserved", 40, 4, "uint32"),
    HeaderField("crc32c", 44, 4, "uint32"),
)
_CODES = {"uint8": "B", "uint16": "H", "uint32": "I", "uint64": "Q"}
_HEADER = struct.Struct("<" + "".join(_CODES.get(f.type) or f"{f.size}s" for f in HEADER_FIELDS))
HEADER_SIZE = _HEADER.size  # 48
# The crc is the header's last field; it covers all bytes but itself.
_CRC_AT = next(f.offset for f in HEADER_FIELDS if f.name == "crc32c")
_NO_IDENTITY = bytes(IDENTITY_BYTES)

_IDS_CODES: dict[int, np.dtype] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
# Both derived from the value-encoding table (its docstring has the codes' meaning).
_VALUES_CODES: dict[int, np.dtype] = {
    e.dtype_code: e.dtype.newbyteorder("<") for e in ENCODINGS.values()
}
_ENCODING_CODES: dict[int, str] = {e.wire_code: e.name for e in ENCODINGS.values()}
_VALID_CODES: dict[int, np.dtype] = {1: np.dtype("u1")}


class BlockFormatError(ValueError):
    """Bytes that are not a well-formed block (wrong magic, version, size or checksum)."""


def _identity_bytes(identity: str) -> bytes:
    if not identity:
        return _NO_IDENTITY
    try:
        raw = bytes.fromhex(identity)
    except ValueError:
        raw = b""
    if len(raw) != IDENTITY_BYTES:
        raise ValueError(f"store identity {identity!r} is not {2 * IDENTITY_BYTES} hex digits")
    return raw


def _code(table: Mapping[int, object], value: object, what: str) -> int:
    for code, v in table.items():
        if v == value:
            return code
    raise ValueError(f"{what} {value} has no block format code; known: {list(table.values())}")


@dataclass(frozen=True)
class BlockHeader:
    slot: int
    start: int
    n: int
    topk: int
    ids_dtype: np.dtype
    values_dtype: np.dtype
    encoding: str
    identity: str = ""  # store_identity() of the store the block comes from ("" = none)
    crc: int = 0

    @property
    def payload_size(self) -> int:
        k = self.n * self.topk
        return k * self.ids_dtype.itemsize + k * self.values_dtype.itemsize + self.n

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + self.payload_size

    def pack(self) -> bytes:
        _check_values_dtype(self.values_dtype, self.encoding, ValueError)
        return _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            HEADER_SIZE,
            _code(_IDS_CODES, self.ids_dtype.newbyteorder("<"), "ids dtype"),
            _code(_VALUES_CODES, self.values_dtype.newbyteorder("<"), "values dtype"),
            _code(_ENCODING_CODES, self.encoding, "value encoding"),
            1,
            self.topk,
            self.n,
            self.slot,
            self.start,
            _identity_bytes(self.identity),
            0,
            self.crc,
        )

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> BlockHeader:
        if len(buf) < HEADER_SIZE:
            raise BlockFormatError(f"block of {len(buf)} bytes is shorter than its header")
        magic, version, hsize, ic, vc, ec, valc, k, n, slot, start, ident, reserved, crc = (
            _HEADER.unpack_from(buf)
        )
        if magic != MAGIC:
            raise BlockFormatError(f"not a target block (magic {bytes(magic)!r}, want {MAGIC!r})")
        if version != FORMAT_VERSION or hsize != HEADER_SIZE:
            raise BlockFormatError(
                f"block format version {version} (header {hsize} B); this reader knows "
                f"version {FORMAT_VERSION}: run the same distill version on server and client"
            )
        if ic not in _IDS_CODES or vc not in _VALUES_CODES or ec not in _ENCODING_CODES:
            raise BlockFormatError(f"unknown dtype/encoding codes {ic}/{vc}/{ec} in block")
        if valc not in _VALID_CODES:
            raise BlockFormatError(f"unknown valid dtype code {valc} in block")
        if reserved != 0:
            raise BlockFormatError(f"reserved header field is {reserved:#x}, not 0")
        _check_values_dtype(_VALUES_CODES[vc], _ENCODING_CODES[ec], BlockFormatError)
        identity = "" if ident == _NO_IDENTITY else bytes(ident).hex()
        return cls(
            slot, start, n, k, _IDS_CODES[ic], _VALUES_CODES[vc], _ENCODING_CODES[ec], identity, crc
        )


def _check_values_dtype(dtype: np.dtype, encoding: str, error: type[ValueError]) -> None:
    want = values_dtype(encoding)
    if dtype.newbyteorder("<") != want.newbyteorder("<"):
        raise error(f"values of encoding {encoding} are {want}, not {dtype}")


class BlockBuffer:
    """A block being assembled in place: fill ``ids``/``values``/``valid``, then ``seal()``."""

    def __init__(self, header: BlockHeader) -> None:
        self.header = header
        self.buf = bytearray(header.total_size)
        self.ids, self.values, self.valid = _views(self.buf, header)

    def seal(self) -> memoryview:
        """Write the header and the crc (of header and body) and return the finished bytes."""
        mv = memoryview(self.buf)
        mv[:HEADER_SIZE] = replace(self.header, crc=0).pack()
        struct.pack_into("<I", mv, _CRC_AT, _crc_of(mv))
        return mv


def _crc_of(buf: bytes | bytearray | memoryview) -> int:
    """crc32c of every byte of a block except the crc field itself."""
    mv = memoryview(buf)
    return int(crc32c.crc32c(mv[HEADER_SIZE:], crc32c.crc32c(mv[:_CRC_AT])))


def _views(
    buf: bytes | bytearray | memoryview, h: BlockHeader
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = h.n * h.topk
    o1 = HEADER_SIZE
    o2 = o1 + k * h.ids_dtype.itemsize
    o3 = o2 + k * h.values_dtype.itemsize
    ids = np.frombuffer(buf, h.ids_dtype, k, o1).reshape(h.n, h.topk)
    values = np.frombuffer(buf, h.values_dtype, k, o2).reshape(h.n, h.topk)
    valid = np.frombuffer(buf, np.uint8, h.n, o3)
    return ids, values, valid


def encode_block(block: TargetBlock, identity: str = "") -> bytes:
    """Serialize a :class:`TargetBlock` (ids/values in their stored dtypes) of store
    ``identity`` (see :func:`store_identity`)."""
    n, k = block.ids.shape
    header = BlockHeader(
        block.slot, block.start, n, k, block.ids.dtype, block.values.dtype, block.encoding,
        identity,
    )  # fmt: skip
    out = BlockBuffer(header)
    out.ids[...] = block.ids
    out.values[...] = block.values
    out.valid[...] = block.valid
    return bytes(out.seal())


def decode_block_with_header(
    buf: bytes | bytearray | memoryview,
) -> tuple[BlockHeader, TargetBlock]:
    """Parse and verify a block; its header (with the store identity) and its targets."""
    h = BlockHeader.unpack(buf)
    if len(buf) != h.total_size:
        raise BlockFormatError(
            f"block is {len(buf)} bytes, its header (n={h.n}, K={h.topk}) says {h.total_size}"
        )
    crc = _crc_of(buf)
    if crc != h.crc:
        raise BlockFormatError(f"block fails its crc32c ({crc:#010x} != {h.crc:#010x})")
    ids, values, valid = _views(buf, h)
    if valid.size and int(valid.max()) > 1:
        raise BlockFormatError("block has valid flags other than 0 and 1")
    return h, TargetBlock(h.slot, h.start, ids, values, valid != 0, h.encoding)


def decode_block(buf: bytes | bytearray | memoryview) -> TargetBlock:
    """Parse and verify a block. Arrays share ``buf`` (writable when ``buf`` is a bytearray)."""
    return decode_block_with_header(buf)[1]
