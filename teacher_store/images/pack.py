"""Writing tar shards and their index: ``distill images pack`` and ``distill images index``.

**pack** turns an image source (an ImageFolder, local or at a URL) into WebDataset tar shards
``OUT/shard-000000.tar, ...`` plus their index, in sample order: sample i's image is the member
named by its relative key (``cls/img.jpg``, byte for byte the folder's file), followed by
``cls/img.cls`` holding its label in ASCII digits, so stock WebDataset sees samples
``{"__key__": "cls/img", "jpg": ..., "cls": b"3"}``. A shard ends before the sample that would
take it past ``shard_bytes`` (always whole samples). The bytes are deterministic (mtime 0,
uid/gid 0, no user names, mode 0444, members in sample order), so the same folder packs to the
same shards.

**index** scans shards made elsewhere, one streamed pass per tar (a shard is never held in
memory): members are grouped into samples as WebDataset groups them (the name up to the first
dot of its file name, consecutive members); a sample's image is its first member with an image
extension (:data:`~teacher_store.images.dataset.IMAGE_EXTENSIONS`) and its key that member's
full name; its label is the integer in its ``.cls`` member, else the ``"label"`` (or ``"cls"``)
field of its ``.json`` member. Class names come from ``--classes FILE`` (one per line), else
from the classes JSON beside the shards, else the label numbers themselves (``"0"``, ``"1"``...).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from teacher_store.images.dataset import IMAGE_EXTENSIONS, printable_path
from teacher_store.images.digests import content_digest
from teacher_store.images.shard_index import (
    IndexBuilder,
    ShardIndex,
    ShardIndexError,
    ShardPattern,
    ShardRecord,
    webdataset_key,
)
from teacher_store.images.source import ImageSource, open_images
from teacher_store.storage.location import Location

__all__ = ["MAX_LABEL", "PackError", "PackResult", "index_shards", "pack_images"]

MAX_LABEL = (1 << 20) - 1  # label numbers named by themselves: at most ~1 M classes
_BLOCK = tarfile.BLOCKSIZE
_READ_AHEAD = 64  # samples read ahead of the writer (threads hide object-store latency)


class PackError(ValueError):
    """``distill images pack`` cannot write these shards (names the thing and the fix)."""


@dataclass(frozen=True)
class PackResult:
    """What was written: the shard pattern (use it as ``--data``), the index and the counts."""

    pattern: str
    index: str
    samples: int
    shards: int
    bytes: int


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


class _Hashing(io.RawIOBase):
    """A file wrapper that counts and sha256-hashes what passes through (write or read)."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.size, self.sha = f, 0, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def tell(self) -> int:
        return self.size

    def drain(self) -> None:
        """Read to the end (the padding after the last member counts in the hash)."""
        while self.read(1 << 20):
            pass


class _ShardWriter:
    """One tar shard being written through :meth:`Location.open_atomic`."""

    def __init__(self, location: Location, name: str) -> None:
        self.name, self._stack = name, contextlib.ExitStack()
        self.out = _Hashing(self._stack.enter_context(location.open_atomic(name)))
        # The shard stays open across many add() calls: closed by close() or abort().
        self.tar = tarfile.open(fileobj=self.out, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.samples = 0

    def add(self, name: str, data: bytes) -> int:
        """Write member ``name``; returns the offset of its data in the shard."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.tar.addfile(info, io.BytesIO(data))
        return self.tar.offset - _padded(len(data))

    def close(self) -> ShardRecord:
        self.tar.close()  # the end blocks and the padding to tar's 10 KiB record
        self._stack.close()  # the file appears whole
        return ShardRecord(self.name, self.out.size, self.out.sha.hexdigest(), self.samples)

    def abort(self) -> None:
        self._stack.__exit__(*sys.exc_info())  # nothing of the shard appears


def _member_bytes(name: str, size: int) -> int:
    """What a member takes in a tar: header, data, padding (a PAX header for long names)."""
    long = len(name.encode("utf-8", "surrogateescape")) > 100 or not name.isascii()
    return _BLOCK + _padded(size) + (3 * _BLOCK if long else 0)


def _reads(source: ImageSource, threads: int) -> Iterator[tuple[int, bytes]]:
    """Every sample's bytes in order, read ahead by ``threads`` threads."""
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="pack-read") as pool:
        for start in range(0, len(source), _READ_AHEAD):
            span = range(start, min(len(source), start + _READ_AHEAD))
            yield from zip(span, pool.map(source.read, span), strict=True)


def _check_out(data: str, out: str, location: Location, overwrite: bool) -> None:
    from teacher_store.store.placement import overlap

    how = overlap(data, out)
    if how is not None:
        what = {"is": "is", "inside": "lies inside", "contains": "contains"}[how]
        raise PackError(
            f"OUT {out} {what} the image folder {data}: the shards would be part "
            "of the images; write them to a folder outside it"
        )
    if not overwrite and not location.is_empty():
        raise PackError(
            f"OUT {out} is not empty; pass an empty folder or prefix, or --overwrite "
            "to write the shards over what is there"
        )


def _stem(key: str, previous: str | None) -> str:
    """The WebDataset sample key of image ``key``: unique and groupable, or PackError."""
    parts = webdataset_key(key)
    if parts is None:
        raise PackError(
            f"image {printable_path(key)}: WebDataset cannot name a sample by it "
            "(its file name starts with a dot); rename it"
        )
    if parts[0] == previous:  # equal stems sort next to each other: one look back is enough
        raise PackError(
            f"image {printable_path(key)} and the one before it share the WebDataset sample "
            f"key {printable_path(parts[0])!r} (the name up to the first dot of the file name), "
            "so WebDataset readers would merge them; rename one"
        )
    return parts[0]


def pack_images(
    data: str,
    out: str,
    shard_bytes: int = 10**9,
    *,
    overwrite: bool = False,
    threads: int = 8,
    log: Callable[[str], None] | None = None,
) -> PackResult:
    """Pack the images of ``data`` into tar shards and their index under ``out`` (a folder or
    an fsspec URL prefix); ``log`` gets a line per shard written."""
    location = Location.at(out)
    _check_out(data, out, location, overwrite)
    source = open_images(data)
    location.makedirs("")
    builder, writer, previous = IndexBuilder(), None, None
    try:
        for i, blob in _reads(source, threads):
            key, label = source.key(i), source.label(i)
            previous = _stem(key, previous)
            cls_name, cls_data = f"{previous}.cls", str(label).encode()
            need = _member_bytes(key, len(blob)) + _member_bytes(cls_name, len(cls_data))
            if writer is not None and writer.out.size + need > shard_bytes and writer.samples:
                builder.add_shard(writer.close())
                _log(log, builder.shards[-1])
                writer = None
            if writer is None:
                writer = _ShardWriter(location, f"shard-{len(builder.shards):06d}.tar")
            offset = writer.add(key, blob)
            writer.add(cls_name, cls_data)
            writer.samples += 1
            builder.add(key, label, len(blob), content_digest(blob), offset)
        assert writer is not None, "open_images never gives an empty source"
        builder.add_shard(writer.close())
        _log(log, builder.shards[-1])
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    last = len(builder.shards) - 1
    pattern = ShardPattern.parse(f"{out.rstrip('/')}/shard-{{000000..{last:06d}}}.tar")
    index = builder.build(
        source.classes, pattern.name, "cls", lambda s: pattern.url(pattern.shards[s])
    )
    _write_index(location, pattern, index)
    total = sum(s.size for s in index.shards)
    return PackResult(pattern.text, pattern.url(pattern.index_name), len(index), last + 1, total)


def _log(log: Callable[[str], None] | None, record: ShardRecord) -> None:
    if log is not None:
        log(f"{record.name}: {record.samples} samples, {record.size:,} bytes")


def _write_index(location: Location, pattern: ShardPattern, index: ShardIndex) -> None:
    """The index and the class names JSON (for stock WebDataset users) beside the shards."""
    location.write_atomic(pattern.index_name, index.to_bytes())
    readme = (
        "label j of a sample's .cls member (ASCII digits) is classes[j]; distill's index of "
        f"these shards is {pattern.index_name}"
    )
    doc = {"classes": list(index.classes), "pattern": pattern.name, "about": readme}
    location.write_atomic(pattern.classes_name, (json.dumps(doc, indent=1) + "\n").encode())


# ---- indexing shards made elsewhere ---------------------------------------------------------


@dataclass
class _Group:
    """The members of one WebDataset sample, as they stream past."""

    key: str
    image: tuple[str, int, bytes] | None = None  # (member name, data offset, bytes)
    cls: bytes | None = None
    json: bytes | None = None


def _label(group: _Group, where: str) -> tuple[int, str]:
    """(label, where it came from) of a sample; ShardIndexError when it has none."""
    if group.cls is not None:
        text = group.cls.decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text), "cls"
        raise ShardIndexError(f"{where}: its .cls member holds {text[:20]!r}, not a label number")
    if group.json is not None:
        try:
            doc = json.loads(group.json)
        except ValueError:
            raise ShardIndexError(f"{where}: its .json member is not JSON") from None
        for field in ("label", "cls"):
            value = doc.get(field) if isinstance(doc, dict) else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value, f"json:{field}"
        raise ShardIndexError(f'{where}: its .json member has no integer "label" or "cls" field')
    raise ShardIndexError(f'{where}: no label (a .cls member, or a .json member with "label")')


def _scan_shard(
    location: Location, pattern: ShardPattern, name: str, builder: IndexBuilder, sources: set[str]
) -> ShardRecord:
    """Add one shard's samples to ``builder`` (one streamed pass); its record."""
    url = pattern.url(name)
    count = 0

    def flush(group: _Group | None) -> None:
        nonlocal count
        if group is None or group.image is None:
            return  # a sample without an image (captions only, say): not an image sample
        member, offset, data = group.image
        label, source = _label(group, f"{url}: {printable_path(group.key)}")
        if not 0 <= label <= MAX_LABEL:
            raise ShardIndexError(
                f"{url}: {printable_path(member)}: label {label} is out of range 0..{MAX_LABEL}"
            )
        sources.add(source)
        builder.add(member, label, len(data), content_digest(data), offset)
        count += 1

    try:
        raw = location.open(name)
    except FileNotFoundError:
        raise ShardIndexError(
            f"shard {url} is missing; restore it, or pass a pattern without it"
        ) from None
    with raw, contextlib.closing(_Hashing(raw)) as f:
        group: _Group | None = None
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    parts = webdataset_key(member.name) if member.isfile() else None
                    if parts is None:
                        continue
                    if group is None or parts[0] != group.key:
                        flush(group)
                        group = _Group(parts[0])
                    ext = parts[1].lower()
                    wanted = ext in ("cls", "json") or (
                        group.image is None and member.name.lower().endswith(IMAGE_EXTENSIONS)
                    )
                    if not wanted:
                        continue  # skipped unread: the stream moves past it
                    body = tar.extractfile(member)
                    data = body.read() if body is not None else b""
                    if ext == "cls":
                        group.cls = data
                    elif ext == "json":
                        group.json = data
                    else:
                        group.image = (member.name, member.offset_data, data)
                flush(group)
        except tarfile.TarError as e:
            raise ShardIndexError(f"shard {url} is not a readable tar file ({e})") from None
        f.drain()
    return ShardRecord(name, f.size, f.sha.hexdigest(), count)


def _classes_for(
    location: Location, pattern: ShardPattern, classes_file: str | None, top: int
) -> tuple[str, ...]:
    """Class names: the file's lines, else the classes JSON beside the shards, else numbers."""
    names: list[str] | None = None
    if classes_file is not None:
        try:
            with open(classes_file, encoding="utf-8") as f:
                names = [line.strip() for line in f.read().strip().splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise ShardIndexError(f"--classes {classes_file}: cannot read it ({e})") from None
        where = f"--classes {classes_file}"
    else:
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError, KeyError):
            names = [str(c) for c in json.loads(location.read(pattern.classes_name))["classes"]]
        where = pattern.url(pattern.classes_name)
    if names is None:
        return tuple(str(j) for j in range(top + 1))
    if len(set(names)) != len(names) or not all(names):
        raise ShardIndexError(f"{where}: class names must be distinct and not empty")
    if top >= len(names):
        raise ShardIndexError(
            f"{where} names {len(names)} classes, but a sample's label is "
            f"{top}; give a name for every label"
        )
    return tuple(names)


def index_shards(
    pattern: str,
    classes_file: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ShardIndex:
    """Build and write the index of the shards ``pattern`` names (beside them)."""
    parsed = ShardPattern.parse(pattern)
    location = Location.at(parsed.folder)
    builder, sources = IndexBuilder(), set[str]()
    for name in parsed.shards:
        builder.add_shard(_scan_shard(location, parsed, name, builder, sources))
        _log(log, builder.shards[-1])
    if not len(builder):
        raise ShardIndexError(
            f"no image samples in {pattern} (expected members such as "
            "KEY.jpg with KEY.cls or KEY.json)"
        )
    top = max(builder.labels())
    classes = _classes_for(location, parsed, classes_file, top)
    index = builder.build(
        classes, parsed.name, "+".join(sorted(sources)), lambda s: parsed.url(parsed.shards[s])
    )
    _write_index(location, parsed, index)
    return index
