"""Scanning an ImageFolder into a :class:`SampleTable`: the core (listed entries -> table) and
the two listings that feed it (the local walk with its link rules, an object-store listing).

The canonical order is the relative keys sorted as ``str``. Class names hold no ``/``, so the
classes ordered by ``name + "/"`` list every key of one class before the next's in exactly that
order: the core sorts one class's entries at a time (a few thousand) and appends them to flat
growing buffers, never holding a Python object per file for the whole scan (14.2 M files at
ImageNet-22k). Only a class whose entries come in several batches (links followed after the
real folders) is merged again, that class alone.
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from teacher_store.images.table import SampleTable

if TYPE_CHECKING:
    from teacher_store.storage import Location

__all__ = [
    "IMAGE_EXTENSIONS",
    "TableBuilder",
    "class_order",
    "is_image_name",
    "list_location",
    "printable_path",
    "table_from_listing",
    "walk_local",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
_LIST_THREADS = 8  # class folders listed at once on an object store (one LIST each)


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as printable UTF-8 text: bytes that are not UTF-8 appear as ``\\xNN`` escapes.

    File names are bytes on POSIX; Python decodes undecodable bytes to lone surrogates, which
    cannot be printed or written as UTF-8 JSON. Use this for every message and record.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_image_name(name: str) -> bool:
    """Whether a file name has one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def class_order(classes: tuple[str, ...]) -> list[int]:
    """The labels in canonical key order: classes sorted by ``name + "/"`` (a class that is a
    prefix of another, ``a`` and ``a-b``, sorts after it, as ``a/x`` does after ``a-b/x``)."""
    return sorted(range(len(classes)), key=lambda j: classes[j] + "/")


class TableBuilder:
    """Samples appended in batches of one class each -> a :class:`SampleTable` in canonical
    order. Holds flat buffers only: key bytes, offsets, labels, sizes (~50 B per sample)."""

    def __init__(self) -> None:
        self.names = bytearray()
        self.offsets = array("q", [0])
        self.labels = array("i")
        self.sizes = array("q")
        self.batches: list[tuple[int, int, int]] = []  # (label, start, stop) in append order

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, label: int, entries: list[tuple[str, int]]) -> None:
        """Append one class's ``(relative key, size)`` entries (any order; sorted here as
        ``str``, keys unique). The list is sorted in place."""
        if not entries:
            return
        entries.sort()
        start = len(self.labels)
        encoded = [os.fsencode(key) for key, _ in entries]
        base = len(self.names)
        self.names += b"".join(encoded)
        self.offsets.extend(accumulate(map(len, encoded), initial=base))
        del self.offsets[start + 1]  # ``initial`` repeats the previous end
        self.labels.extend([label] * len(entries))
        self.sizes.extend(size for _, size in entries)
        self.batches.append((label, start, len(self.labels)))

    def entries(self, start: int, stop: int) -> list[tuple[str, int]]:
        """Samples ``[start, stop)`` as ``(key, size)`` (to merge one class again)."""
        o = self.offsets
        return [
            (os.fsdecode(bytes(self.names[o[i] : o[i + 1]])), self.sizes[i])
            for i in range(start, stop)
        ]

    def build(self, classes: tuple[str, ...]) -> SampleTable:
        """The table in canonical order. When the batches already are (one per class, classes
        in :func:`class_order`), the buffers become the table's arrays without a copy."""
        order = class_order(classes)
        rank = {label: r for r, label in enumerate(order)}
        labels = [label for label, _, _ in self.batches]
        if len(set(labels)) == len(labels) and labels == sorted(labels, key=rank.__getitem__):
            return SampleTable(
                np.frombuffer(self.names, np.uint8) if self.names else np.zeros(0, np.uint8),
                np.frombuffer(self.offsets, np.int64),
                np.frombuffer(self.labels, np.int32) if self.labels else np.zeros(0, np.int32),
                np.frombuffer(self.sizes, np.int64) if self.sizes else np.zeros(0, np.int64),
            )
        by_label: dict[int, list[tuple[int, int]]] = {}
        for label, start, stop in self.batches:
            by_label.setdefault(label, []).append((start, stop))
        again = TableBuilder()
        for label in order:
            merged = [
                e for start, stop in by_label.get(label, []) for e in self.entries(start, stop)
            ]
            again.add(label, merged)
        return again.build(classes)


class _Walk:
    """Walk the class folders once: no directory twice, no link out of the root, no loops.

    Real directories are walked first and marked visited, so a link to a folder of the dataset
    (including ``..`` or another class) is skipped instead of indexing its files a second time
    under another label; links are resolved afterwards, each against the dataset root.
    Entries found go to ``builder`` one class (or one link's findings) at a time.
    """

    def __init__(self, base: Path, builder: TableBuilder) -> None:
        self.base = base
        self.root = os.path.realpath(base)
        st = os.stat(base)
        self.seen = {(st.st_dev, st.st_ino)}
        self.builder = builder
        self.pending: list[tuple[str, int]] = []  # (relative path, size) of the current class
        self.skipped: list[tuple[str, str]] = []  # (printable relative path, reason)
        self.links: list[tuple[str, int]] = []  # (relative path, label), resolved last

    def skip(self, rel: str, reason: str) -> None:
        self.skipped.append((printable_path(rel), reason))

    def flush(self, label: int) -> None:
        self.builder.add(label, self.pending)
        self.pending = []

    def directory(self, rel: str, label: int) -> None:
        """Index the real tree under ``rel``; queue the links found in it."""
        stack = [rel]
        while stack:
            d = stack.pop()
            try:
                st = os.stat(self.base / d)
                if (st.st_dev, st.st_ino) in self.seen:
                    self.skip(d, "directory already indexed (a link loop or a second path to it)")
                    continue
                self.seen.add((st.st_dev, st.st_ino))
                entries = sorted(os.scandir(self.base / d), key=lambda e: e.name)
            except OSError as e:
                self.skip(d, f"unreadable directory: {e.strerror}")
                continue
            for entry in entries:
                child = f"{d}/{entry.name}"
                if entry.is_symlink():
                    self.links.append((child, label))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(child)
                elif is_image_name(entry.name) and entry.is_file():
                    self.pending.append((child, entry.stat(follow_symlinks=False).st_size))

    def link(self, rel: str, label: int) -> None:
        """Follow one link if it resolves, inside the root, to an image or an unvisited folder."""
        full = self.base / rel
        try:
            st = os.stat(full)
        except OSError as e:
            what = "symlink loop" if e.errno == errno.ELOOP else f"broken link ({e.strerror})"
            self.skip(rel, what)
            return
        target = os.path.realpath(full)
        if not _inside(target, self.root):
            self.skip(rel, f"link resolves outside the dataset root, to {printable_path(target)}")
        elif stat.S_ISDIR(st.st_mode):
            self.directory(rel, label)
        elif is_image_name(rel) and stat.S_ISREG(st.st_mode):
            self.pending.append((rel, st.st_size))
        self.flush(label)

    def run(self, classes: tuple[str, ...]) -> None:
        for label, name in enumerate(classes):
            if not (self.base / name).is_symlink():
                self.directory(name, label)
                self.flush(label)
        for label, name in enumerate(classes):
            if (self.base / name).is_symlink():
                self.links.append((name, label))
        while self.links:  # a followed link may queue more links
            self.link(*self.links.pop(0))


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_local(base: Path, classes: tuple[str, ...]) -> tuple[SampleTable, list[tuple[str, str]]]:
    """The table of the folder ``base`` with these class folders, and the (relative path,
    reason) of every entry the walk skipped (links out of the root, loops, broken links,
    unreadable folders)."""
    builder = TableBuilder()
    walk = _Walk(base, builder)
    walk.run(classes)
    return builder.build(classes), walk.skipped


def list_location(loc: Location, classes: tuple[str, ...]) -> SampleTable:
    """The table of the folder at ``loc`` (an object store: no links), listing each class
    folder recursively with sizes (one paginated LIST per class, a few classes at once; never
    a request per file), keeping only :func:`is_image_name` files."""

    def one(label: int) -> tuple[int, list[tuple[str, int]]]:
        found = loc.file_sizes(classes[label])
        return label, [(k, s) for k, s in found.items() if is_image_name(k.rsplit("/", 1)[-1])]

    builder = TableBuilder()
    with ThreadPoolExecutor(_LIST_THREADS) as pool:
        for label, entries in pool.map(one, class_order(classes)):
            builder.add(label, entries)
    return builder.build(classes)


def table_from_listing(
    listing: Iterable[tuple[int, list[tuple[str, int]]]], classes: tuple[str, ...]
) -> SampleTable:
    """The scan's core on any listing: ``(label, [(relative key, size), ...])`` per class
    (bench/scale.py feeds it a synthetic one)."""
    builder = TableBuilder()
    for label, entries in listing:
        builder.add(label, entries)
    return builder.build(classes)
