"""ImageFolder datasets (local or at an fsspec URL): a flat sample table in canonical order, a
fingerprint, and image loading with clear errors."""

from __future__ import annotations

import io
import operator
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from teacher_store.errors import StoreAccessError
from teacher_store.images.digests import SampleDigests, check_content
from teacher_store.images.scan import IMAGE_EXTENSIONS, list_location, printable_path, walk_local
from teacher_store.images.table import SampleTable
from teacher_store.storage.failures import storage_failure
from teacher_store.storage.provider import first_line

if TYPE_CHECKING:
    from teacher_store.storage import Location

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "ColumnSequence",
    "CorruptImageError",
    "DatasetFingerprint",
    "ImageFolder",
    "ImageFolderError",
    "KeySequence",
    "decode_image",
    "default_max_image_pixels",
    "load_image",
    "printable_path",
]
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


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


class ImageFolderError(ValueError):
    """A dataset folder (local, or at an fsspec URL) that cannot be indexed; names it."""


class KeySequence(Sequence[str]):
    """A :class:`SampleTable`'s keys as a read-only sequence of ``str`` (each decoded when it
    is read): what ``ImageFolder.paths`` was as a tuple, without an object per sample."""

    __slots__ = ("table",)

    def __init__(self, table: SampleTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        if isinstance(index, slice):
            return tuple(self.table.key(i) for i in range(*index.indices(len(self))))
        return self.table.key(_position(index, len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, KeySequence):
            a, b = self.table, other.table
            return np.array_equal(a.offsets, b.offsets) and np.array_equal(a.names, b.names)
        if isinstance(other, tuple | list):
            return len(other) == len(self) and all(x == y for x, y in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        return f"KeySequence({len(self)} keys)"


class ColumnSequence(Sequence[int]):
    """One integer column of a :class:`SampleTable` (labels, sizes) as a read-only sequence of
    ``int``; ``np.asarray`` gives the array itself (no copy)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> ColumnSequence: ...
    def __getitem__(self, index: int | slice) -> int | ColumnSequence:
        if isinstance(index, slice):
            return ColumnSequence(self.values[index])
        return int(self.values[_position(index, len(self))])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return self.values if dtype is None else self.values.astype(dtype)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ColumnSequence):
            return np.array_equal(self.values, other.values)
        if isinstance(other, tuple | list):
            return len(other) == len(self) and all(x == y for x, y in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ColumnSequence({len(self)} x {self.values.dtype})"


def _position(index: int, n: int) -> int:
    i = operator.index(index)
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"sample {index} out of range (0..{n - 1})")
    return i


@dataclass(frozen=True, eq=False)
class ImageFolder:
    """``root/<class>/<file>`` indexed in canonical order (keys sorted as ``str``), on local
    disk or at an fsspec URL (``s3://bucket/prefix/train/``).

    The samples are a :class:`SampleTable` (flat arrays: no Python object per file, so
    ImageNet-22k's 14.2 M files index in well under 1 GiB). ``origin``: the folder's
    :class:`~pathlib.Path`, or the :class:`~teacher_store.storage.Location` of a folder at a
    URL. Local keys are ``str`` as the OS gives them: a name that is not UTF-8 holds lone
    surrogates (``os.fsdecode``); :func:`printable_path` shows it. ``skipped`` lists the
    (printable path, reason) of entries the walk left out (links out of the root, link loops,
    broken links, unreadable folders); it is not part of the fingerprint.
    """

    origin: Path | Location
    table: SampleTable = field(repr=False)
    classes: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    max_image_pixels: int = field(default_factory=lambda: default_max_image_pixels())
    # The per-sample digests every read is checked against (:meth:`with_content`); None: the
    # bytes are not checked (a store made before digests were recorded: names and sizes only).
    content: SampleDigests | None = field(default=None, repr=False)

    @classmethod
    def scan(cls, root: str | os.PathLike[str], max_image_pixels: int | None = None) -> ImageFolder:
        """Index ``root`` (a folder, or an fsspec URL of one: ``s3://``, ``memory://``,
        ``file://``); images over ``max_image_pixels`` (default: the environment's
        ``DISTILL_MAX_IMAGE_PIXELS``, else Pillow's limit) load as corrupt."""
        limit = default_max_image_pixels() if max_image_pixels is None else max_image_pixels
        text = os.fspath(root)
        if isinstance(root, str) and "://" in text:
            loc = _url_location(text)
            if not loc.is_local:
                classes, table = _scan_url(loc)
                return cls(loc, table, classes, (), limit)
            root = loc.root
        base = Path(root)
        if not base.is_dir():
            raise ImageFolderError(f"dataset directory {printable_path(base)} does not exist "
                                   "(expected root/<class>/<img>)")  # fmt: skip
        classes = _class_folders(base)
        table, skipped = walk_local(base, classes)
        if not len(table):
            first = f"; skipped: {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
            raise ImageFolderError(f"no images found under {printable_path(base)} (expected "
                                   f"root/<class>/<img>){first}")  # fmt: skip
        # A class folder skipped whole keeps its name and label: labels stay the folder order.
        return cls(base, table, classes, tuple(sorted(skipped)), limit)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageFolder):
            return NotImplemented
        return (
            self.location == other.location
            and self.classes == other.classes
            and self.paths == other.paths
            and self.labels == other.labels
            and self.sizes == other.sizes
        )

    def __hash__(self) -> int:
        return hash((self.location, len(self), self.classes))

    def __repr__(self) -> str:
        return f"ImageFolder({self.location!r}, {len(self)} samples, {len(self.classes)} classes)"

    @property
    def root(self) -> Path:
        """The local folder; a folder at a URL has none (use :attr:`location`, :meth:`where`
        and :meth:`read`)."""
        if isinstance(self.origin, Path):
            return self.origin
        raise ImageFolderError(
            f"dataset {self.location} is not on local disk: it has no root path (name samples "
            "with where(i), read them with read(i))"
        )

    @property
    def paths(self) -> KeySequence:
        """Every sample's relative key, in order (a read-only view over the table)."""
        return KeySequence(self.table)

    @property
    def labels(self) -> ColumnSequence:
        """Every sample's label, in order (a read-only view over the table)."""
        return ColumnSequence(self.table.labels)

    @property
    def sizes(self) -> ColumnSequence:
        """Every sample's file size in bytes, in order (a read-only view over the table)."""
        return ColumnSequence(self.table.sizes)

    def skipped_summary(self, limit: int = 5) -> str | None:
        """One warning line (plus up to ``limit`` entries) about what the walk skipped."""
        if not self.skipped:
            return None
        lines = [
            f"warning: {len(self.skipped)} entries under {self.location} were "
            "skipped (not part of the dataset):"
        ]
        lines += [f"  {rel}: {reason}" for rel, reason in self.skipped[:limit]]
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def location(self) -> str:
        """The folder (or its URL), printable."""
        if isinstance(self.origin, Path):
            return printable_path(self.origin)
        return self.origin.display

    def label(self, index: int) -> int:
        """Sample ``index``'s class label."""
        return int(self.table.labels[index])

    def key(self, index: int) -> str:
        """Sample ``index``'s path relative to the root (the canonical order's key)."""
        return self.table.key(_position(index, len(self)))

    def where(self, index: int) -> str:
        """Sample ``index``'s file (or object URL), printable."""
        if isinstance(self.origin, Path):
            return printable_path(self.origin / self.key(index))
        return f"{self.origin.display}/{self.key(index)}"

    def fingerprint(self) -> DatasetFingerprint:
        """This folder's :class:`DatasetFingerprint` (sample count, keys and sizes, labels,
        classes: cheap, no image is read), and the content record if attached
        (:meth:`with_content`)."""
        content = self.content.record() if self.content is not None else None
        return DatasetFingerprint(
            len(self),
            self.table.names_sha256(),
            self.classes,
            content=content,
            labels_sha256=self.table.labels_sha256(),
        )

    def with_content(self, digests: SampleDigests) -> ImageFolder:
        """This folder, every read of it checked against ``digests`` (the store's record)."""
        if len(digests) != len(self):
            raise ValueError(f"{len(digests)} content digests for the {len(self)} samples of "
                             f"{self.location}")  # fmt: skip
        return replace(self, content=digests)

    def sample_digests(
        self, threads: int = 8, progress: Callable[[int], None] | None = None
    ) -> SampleDigests:
        """The content digest of every sample's file (reads each file once, in threads; an
        unreadable or missing file records UNREADABLE, an object store failing is an error)."""
        return SampleDigests.compute(self._raw, len(self), threads, progress)

    def _raw(self, index: int) -> bytes:
        """Sample ``index``'s bytes, unchecked: OSError when the file or object is missing or
        unreadable; a failing object store is a one-line StoreAccessError."""
        if isinstance(self.origin, Path):
            return (self.origin / self.key(index)).read_bytes()
        loc, key = self.origin, self.key(index)
        try:
            return loc.read(key)
        except FileNotFoundError:
            raise
        except Exception as e:  # botocore, aiohttp: the client library's own types
            why = storage_failure(loc, e)
            what, fix = why if why is not None else (first_line(e), "retry, or check the storage")
            raise StoreAccessError(f"dataset {loc.display}: reading {key}: {what}; {fix}") from None

    def read(self, index: int) -> bytes:
        """Sample ``index``'s file bytes: CorruptImageError when unreadable, ImageChangedError
        when they are not the bytes :attr:`content` records (checked on every read: the bytes
        are hashed where they are read anyway, ~5 us per 100 KB)."""
        try:
            data = self._raw(index)
        except OSError as e:
            why = e.strerror or ("no such object" if isinstance(e, FileNotFoundError) else e)
            raise CorruptImageError(f"cannot read image {self.where(index)}: {why}") from None
        check_content(self.content, index, data, self.where(index), self.location)
        return data

    def load(self, index: int, draft: DraftRule | None = None) -> Image.Image:
        """Decode sample ``index`` as RGB (bytes checked by :meth:`read`); CorruptImageError
        names an unreadable or undecodable file."""
        data = self.read(index)
        shown = (
            self.origin / self.key(index) if isinstance(self.origin, Path) else self.where(index)
        )
        return decode_image(data, shown, self.max_image_pixels, draft)


def _url_location(url: str) -> Location:
    """The :class:`Location` of a dataset URL; a scheme no reader supports is one line."""
    from teacher_store.storage import Location

    try:
        return Location.at(url)
    except ValueError as e:  # StoreAddressError: a scheme fsspec does not know here
        raise ImageFolderError(
            f"dataset {url} is not a folder or an fsspec URL of one ({e})"
        ) from None


def _scan_url(loc: Location) -> tuple[tuple[str, ...], SampleTable]:
    """(classes, table) of the folder at ``loc``: class folders are the first path component
    under it; a missing bucket or prefix, no class folder or no image is one line."""
    shown = loc.display
    expect = "expected URL/<class>/<img>"
    try:
        loc.probe("dataset")
        try:
            classes = tuple(loc.folders())
        except FileNotFoundError:
            raise ImageFolderError(
                f"dataset {shown} does not exist (nothing under that prefix; {expect})"
            ) from None
        if not classes:
            raise ImageFolderError(f"dataset {shown} has no class folders ({expect})")
        table = list_location(loc, classes)
    except ValueError:
        raise
    except Exception as e:  # botocore, aiohttp: the client library's own types
        why = storage_failure(loc, e) or (f"cannot list it ({first_line(e)})", "check the URL")
        raise StoreAccessError(f"dataset {shown}: {why[0]}; {why[1]}") from None
    if not len(table):
        raise ImageFolderError(f"no images found under {shown} ({expect})")
    return classes, table


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
