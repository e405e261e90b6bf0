"""ImageFolder datasets: a sorted index, a fingerprint, and image loading with clear errors."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from teacher_store.errors import ImageChangedError
from teacher_store.images.digests import UNREADABLE, SampleDigests, content_digest

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
# Pillow's own default (Image.MAX_IMAGE_PIXELS): about a 9459 x 9459 image, 256 MiB as RGB.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Image.open itself refuses images over twice Pillow's global limit, before we see the size.
PILLOW_HARD_LIMIT = 2 * DEFAULT_MAX_IMAGE_PIXELS


class CorruptImageError(ValueError):
    """An image file that cannot be decoded; names the file."""


@dataclass(frozen=True)
class DatasetFingerprint:
    """What identifies a dataset: sample count, classes, labels, names and sizes, content.

    ``sha256``: of the sorted relative keys and sizes (cheap: no image is read).
    ``labels_sha256``: of the labels in sample order (little-endian int32); None in stores
    made before it was recorded. ``content``: the record of the per-sample content digests
    (:meth:`~teacher_store.images.digests.SampleDigests.record`) when they are known (a store
    made by generation keeps it; a tar shard index holds them; a folder's cheap fingerprint has
    none: its reads are checked one by one against the store's digests instead).

    Samples are identified by content: when both sides know it, the content and the labels
    decide, whatever the names (a folder and the tar shards packed from it, or the same images
    under another root); otherwise the names and sizes do.
    """

    num_samples: int
    sha256: str
    classes: tuple[str, ...]
    version: int = 1
    content: dict[str, Any] | None = None
    labels_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fingerprint as JSON-ready fields (stored in the attrs and the manifest)."""
        out: dict[str, Any] = {
            "num_samples": self.num_samples,
            "sha256": self.sha256,
            "classes": list(self.classes),
            "version": self.version,
        }
        if self.content is not None:  # absent, not null: cheap fingerprints stay as they were
            out["content"] = dict(self.content)
        if self.labels_sha256 is not None:
            out["labels_sha256"] = self.labels_sha256
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetFingerprint:
        """The fingerprint from :meth:`to_dict`'s fields."""
        content = d.get("content")
        labels = d.get("labels_sha256")
        return cls(
            int(d["num_samples"]),
            str(d["sha256"]),
            tuple(d["classes"]),
            int(d["version"]),
            dict(content) if isinstance(content, dict) else None,
            str(labels) if labels is not None else None,
        )

    def mismatch(self, other: DatasetFingerprint) -> str | None:
        """A one-line description of how ``other`` differs, or None when they are the same
        dataset: by content and labels when both know them, else by names and sizes."""
        if self.num_samples != other.num_samples:
            return f"{other.num_samples} samples instead of {self.num_samples}"
        if self.classes != other.classes:
            return "different class folders"
        if self.labels_sha256 and other.labels_sha256 and self.labels_sha256 != other.labels_sha256:
            return "different labels (same classes and count)"
        if self.content and other.content:
            if self.content != other.content:
                return "different image content"
            return None  # the same images in the same order: names may differ
        if self.sha256 != other.sha256:
            return "different file names or sizes (same count)"
        return None


def default_max_image_pixels() -> int:
    """``DISTILL_MAX_IMAGE_PIXELS`` from the environment, else Pillow's default limit."""
    raw = os.environ.get("DISTILL_MAX_IMAGE_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if not 1 <= value <= PILLOW_HARD_LIMIT:
        raise ValueError(
            f"DISTILL_MAX_IMAGE_PIXELS={raw!r} must be an integer in [1, {PILLOW_HARD_LIMIT}]"
        )
    return value


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as printable UTF-8 text: bytes that are not UTF-8 appear as ``\\xNN`` escapes.

    File names are bytes on POSIX; Python decodes undecodable bytes to lone surrogates, which
    cannot be printed or written as UTF-8 JSON. Use this for every message and record.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _Walk:
    """Walk the class folders once: no directory twice, no link out of the root, no loops.

    Real directories are walked first and marked visited, so a link to a folder of the dataset
    (including ``..`` or another class) is skipped instead of indexing its files a second time
    under another label; links are resolved afterwards, each against the dataset root.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = os.path.realpath(base)
        st = os.stat(base)
        self.seen = {(st.st_dev, st.st_ino)}
        self.items: list[tuple[str, int, int]] = []
        self.skipped: list[tuple[str, str]] = []
        self.links: list[tuple[str, int]] = []  # (relative path, label), resolved last

    def skip(self, rel: str, reason: str) -> None:
        self.skipped.append((printable_path(rel), reason))

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
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
                    self.items.append((child, label, entry.stat(follow_symlinks=False).st_size))

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
        elif rel.lower().endswith(IMAGE_EXTENSIONS) and stat.S_ISREG(st.st_mode):
            self.items.append((rel, label, st.st_size))

    def run(self, classes: tuple[str, ...]) -> None:
        for label, name in enumerate(classes):
            if not (self.base / name).is_symlink():
                self.directory(name, label)
        for label, name in enumerate(classes):
            if (self.base / name).is_symlink():
                self.links.append((name, label))
        while self.links:  # a followed link may queue more links
            self.link(*self.links.pop(0))


def _class_folders(base: Path) -> tuple[str, ...]:
    """Sorted class folder names; a class folder whose name is not UTF-8 is refused."""
    names = []
    for p in base.iterdir():
        if p.is_dir():
            if not _is_utf8(p.name):
                raise ValueError(
                    f"class folder {printable_path(p)} has a name that is not UTF-8: class "
                    "names are recorded in the store as text; rename the folder"
                )
            names.append(p.name)
    return tuple(sorted(names))


@dataclass(frozen=True)
class ImageFolder:
    """Sorted ``root/<class>/<file>`` index; sample i is ``paths[i]`` with label ``labels[i]``.

    Paths are ``str`` as the OS gives them: a name that is not UTF-8 holds lone surrogates
    (``os.fsdecode``); :func:`printable_path` shows it. ``skipped`` lists the (printable path,
    reason) of entries the walk left out (links out of the root, link loops, broken links,
    unreadable folders); it is not part of the fingerprint.
    """

    root: Path
    paths: tuple[str, ...]  # relative to root, '/'-separated, sorted
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    sizes: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    max_image_pixels: int = field(default_factory=lambda: default_max_image_pixels(), compare=False)
    # The per-sample digests every read is checked against (:meth:`with_content`); None: the
    # bytes are not checked (a store made before digests were recorded: names and sizes only).
    content: SampleDigests | None = field(default=None, compare=False, repr=False)

    @classmethod
    def scan(cls, root: str | os.PathLike[str], max_image_pixels: int | None = None) -> ImageFolder:
        """Index ``root``; images over ``max_image_pixels`` (default: the environment's
        ``DISTILL_MAX_IMAGE_PIXELS``, else Pillow's limit) load as corrupt."""
        base = Path(root)
        if not base.is_dir():
            raise ValueError(
                f"dataset directory {printable_path(base)} does not exist "
                "(expected root/<class>/<img>)"
            )
        classes = _class_folders(base)
        walk = _Walk(base)
        walk.run(classes)
        if not walk.items:
            raise ValueError(
                f"no images found under {printable_path(base)} (expected root/<class>/<img>)"
                + (
                    f"; skipped: {walk.skipped[0][0]} ({walk.skipped[0][1]})"
                    if walk.skipped
                    else ""
                )
            )
        walk.items.sort()
        paths, labels, sizes = zip(*walk.items, strict=True)
        limit = default_max_image_pixels() if max_image_pixels is None else max_image_pixels
        # A class folder skipped whole keeps its name and label: labels stay the folder order.
        return cls(
            base,
            tuple(paths),
            tuple(labels),
            classes,
            tuple(sizes),
            tuple(sorted(walk.skipped)),
            limit,
        )

    def skipped_summary(self, limit: int = 5) -> str | None:
        """One warning line (plus up to ``limit`` entries) about what the walk skipped."""
        if not self.skipped:
            return None
        lines = [
            f"warning: {len(self.skipped)} entries under {printable_path(self.root)} were "
            "skipped (not part of the dataset):"
        ]
        lines += [f"  {rel}: {reason}" for rel, reason in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def location(self) -> str:
        """The folder, printable."""
        return printable_path(self.root)

    def label(self, index: int) -> int:
        """Sample ``index``'s class label."""
        return self.labels[index]

    def key(self, index: int) -> str:
        """Sample ``index``'s path relative to the root (the canonical order's key)."""
        return self.paths[index]

    def where(self, index: int) -> str:
        """Sample ``index``'s file, printable."""
        return printable_path(self.root / self.paths[index])

    def fingerprint(self) -> DatasetFingerprint:
        """This folder's :class:`DatasetFingerprint` (sample count, paths and sizes, classes:
        cheap, no image is read), and the content record if attached (:meth:`with_content`)."""
        h = hashlib.sha256()
        for rel, size in zip(self.paths, self.sizes, strict=True):
            # The name's raw bytes (os.fsencode): equal to its UTF-8 text for every UTF-8 name, and
            # still deterministic for names that are not UTF-8.
            h.update(os.fsencode(rel) + f"\0{size}\n".encode())
        content = self.content.record() if self.content is not None else None
        return DatasetFingerprint(len(self.paths), h.hexdigest(), self.classes, content=content)

    def with_content(self, digests: SampleDigests) -> ImageFolder:
        """This folder, every read of it checked against ``digests`` (the store's record)."""
        if len(digests) != len(self):
            raise ValueError(f"{len(digests)} content digests for the {len(self)} samples of "
                             f"{printable_path(self.root)}")  # fmt: skip
        return replace(self, content=digests)

    def sample_digests(
        self, threads: int = 8, progress: Callable[[int], None] | None = None
    ) -> SampleDigests:
        """The content digest of every sample's file (reads each file once, in threads)."""
        return SampleDigests.compute(
            lambda i: (self.root / self.paths[i]).read_bytes(), len(self), threads, progress
        )

    def read(self, index: int) -> bytes:
        """Sample ``index``'s file bytes: CorruptImageError when unreadable, ImageChangedError
        when they are not the bytes :attr:`content` records (checked on every read: the bytes
        are hashed where they are read anyway, ~5 us per 100 KB)."""
        path = self.root / self.paths[index]
        try:
            data = path.read_bytes()
        except OSError as e:
            shown = printable_path(path)
            raise CorruptImageError(f"cannot read image {shown}: {e.strerror or e}") from None
        if self.content is not None:
            want = self.content.of(index)
            have = content_digest(data)
            if want != UNREADABLE and have != want:
                raise ImageChangedError(
                    f"image {printable_path(path)} (sample {index}) is not the image the store "
                    f"was built from: its content digest ({self.content.algorithm} {have:016x}) "
                    f"differs from the store's ({want:016x}); restore the image, or regenerate "
                    "the store from the folder as it is now",
                    printable_path(path),
                    index,
                )
        return data

    def load(self, index: int, draft: DraftRule | None = None) -> Image.Image:
        """Decode sample ``index`` as RGB (bytes checked by :meth:`read`); CorruptImageError
        names an unreadable or undecodable file."""
        data = self.read(index)
        return decode_image(data, self.root / self.paths[index], self.max_image_pixels, draft)


# (width, height) of the stored image -> the least size a JPEG may be DCT-scaled down to
# (Pillow's draft mode: 1/2, 1/4 or 1/8 while both sides stay at least that), or None.
DraftRule = Callable[[int, int], "tuple[int, int] | None"]


def load_image(
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    draft: DraftRule | None = None,
) -> Image.Image:
    """Decode ``path`` as RGB (see :func:`decode_image`); CorruptImageError names the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        shown = printable_path(path)
        raise CorruptImageError(f"cannot read image {shown}: {e.strerror or e}") from None
    return decode_image(data, path, max_pixels, draft)


class _NamedBytes(io.BytesIO):
    """A file's bytes that Pillow's messages name as the file (it quotes ``repr(fp)``), as when
    it opens the path itself: a message, recorded in a store, must not hold a memory address."""

    def __init__(self, data: bytes, path: str | os.PathLike[str]) -> None:
        super().__init__(data)
        self._shown = repr(os.fsdecode(path))

    def __repr__(self) -> str:
        return self._shown


def decode_image(
    data: bytes,
    path: str | os.PathLike[str],
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    draft: DraftRule | None = None,
) -> Image.Image:
    """Decode the bytes of image file ``path`` as RGB; an image over ``max_pixels`` is refused
    before it is decoded.

    The limit is checked here, per call, rather than through Pillow's global
    ``Image.MAX_IMAGE_PIXELS``, so callers with other limits do not affect each other.
    ``draft`` lets a JPEG decode at a reduced scale (other formats ignore it).
    """
    shown = printable_path(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns from Image.open between its limit and twice it; we decide below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(_NamedBytes(data, path)) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise CorruptImageError(
                        f"image {shown} is {w}x{h} = {w * h:,} pixels, over the limit of "
                        f"{max_pixels:,} (--max-image-pixels / DISTILL_MAX_IMAGE_PIXELS)"
                    )
                least = draft(w, h) if draft is not None and im.format == "JPEG" else None
                if least is not None:
                    im.draft(im.mode, least)  # JPEG DCT scaling: 1/2, 1/4 or 1/8
                im.load()
                return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise CorruptImageError(f"image {shown} is too large to decode: {e}") from None
    except CorruptImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        # Pillow quotes the path with repr(): a name that is not UTF-8 would read as surrogate
        # escapes (\udce9) there; show it as everywhere else (\xe9).
        detail = str(e).replace(repr(os.fsdecode(path)), f"'{shown}'")
        raise CorruptImageError(f"cannot decode image {shown}: {detail}") from None
