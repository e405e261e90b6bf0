"""The documented block header is the one on the wire: the table after the
``distill:block-header-table`` marker (in docs/**/*.md, else README.md) is compared field by
field with ``blockfmt.HEADER_FIELDS``, and a real sealed block is read back at the documented
offsets."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest

from teacher_store.store import blockfmt
from teacher_store.store.blockfmt import (
    FORMAT_VERSION,
    HEADER_FIELDS,
    HEADER_SIZE,
    BlockBuffer,
    BlockHeader,
)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- distill:block-header-table"
_UINT = {"uint8": "<B", "uint16": "<H", "uint32": "<I", "uint64": "<Q"}


def _documents() -> list[Path]:
    """Every page holding the table: the MkDocs pages first, then the README."""
    pages = sorted((ROOT / "docs").rglob("*.md")) if (ROOT / "docs").is_dir() else []
    return [p for p in [*pages, ROOT / "README.md"] if p.is_file() and MARKER in p.read_text()]


def _table(doc: Path) -> list[list[str]]:
    """The rows (cells, stripped) of the first Markdown table after the marker."""
    text = doc.read_text().split(MARKER, 1)[1]
    rows, started = [], False
    for line in text.splitlines()[1:]:
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows, f"{doc}: no table after {MARKER}"
    return rows


def _documented(doc: Path) -> tuple[list[blockfmt.HeaderField], int]:
    """(the header fields, the body's documented offset) of ``doc``'s table."""
    head, rule, *rows = _table(doc)
    assert head[:4] == ["offset", "size", "type", "field"], head
    assert set("".join(rule)) <= set("-: "), rule
    fields, body = [], None
    for offset, size, typ, name, *_ in rows:
        if typ == "body":
            body = int(offset)
            continue
        plain = re.fullmatch(r"`(\w+)`", name)
        assert plain, f"{doc}: field cell {name!r} is not a `name`"
        fields.append(blockfmt.HeaderField(plain.group(1), int(offset), int(size), typ))
    assert body is not None, f"{doc}: no body row"
    return fields, body


def test_the_table_is_documented_somewhere():
    assert _documents(), f"no docs/**/*.md nor README.md holds {MARKER}"


@pytest.mark.parametrize("doc", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_header_is_the_codes_header(doc: Path):
    fields, body = _documented(doc)
    assert fields == list(HEADER_FIELDS)
    assert body == HEADER_SIZE == 48
    # The code's own table is contiguous and is what the struct packs.
    ends = [f.offset + f.size for f in HEADER_FIELDS]
    assert [f.offset for f in HEADER_FIELDS] == [0, *ends[:-1]] and ends[-1] == HEADER_SIZE
    for f in HEADER_FIELDS:
        assert f.type == "bytes" or struct.calcsize(_UINT[f.type]) == f.size, f
    text = doc.read_text()
    assert f"format version, {FORMAT_VERSION}" in text and "header size in bytes, 48" in text


def test_a_sealed_block_reads_back_at_the_documented_offsets():
    """A real block, its header fields read at HEADER_FIELDS' offsets: what a client written
    from the table would decode."""
    n, k = 3, 5
    header = BlockHeader(
        slot=7,
        start=1 << 33,
        n=n,
        topk=k,
        ids_dtype=np.dtype("<u2"),
        values_dtype=np.dtype("u1"),
        encoding="prob-u8",
        identity="0123456789abcdef",
    )
    buf = BlockBuffer(header)
    buf.ids[:] = np.arange(n * k).reshape(n, k)
    buf.values[:] = 9
    buf.valid[:] = 1
    raw = bytes(buf.seal())

    def field(name: str) -> int | bytes:
        f = next(f for f in HEADER_FIELDS if f.name == name)
        chunk = raw[f.offset : f.offset + f.size]
        return chunk if f.type == "bytes" else struct.unpack(_UINT[f.type], chunk)[0]

    want = {
        "magic": b"DTGB",
        "version": FORMAT_VERSION,
        "header_size": HEADER_SIZE,
        "ids_dtype": 1,
        "values_dtype": 2,
        "value_encoding": 2,
        "valid_dtype": 1,
        "k": k,
        "n": n,
        "slot": 7,
        "start": 1 << 33,
        "identity": bytes.fromhex("0123456789abcdef"),
        "reserved": 0,
    }
    assert {name: field(name) for name in want} == want
    crc_at = next(f.offset for f in HEADER_FIELDS if f.name == "crc32c")
    assert field("crc32c") == crc32c.crc32c(raw[:crc_at] + raw[HEADER_SIZE:])
    assert len(raw) == HEADER_SIZE + n * k * (2 + 1) + n
    ids = np.frombuffer(raw, "<u2", n * k, HEADER_SIZE).reshape(n, k)
    assert (ids == np.arange(n * k).reshape(n, k)).all()
