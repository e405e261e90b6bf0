"""Image sources: where a dataset's images live, behind one interface.

Every reader of images (generation, the student's data path, ``verify``, ``show``, the
dashboard) takes an :class:`ImageSource` from :func:`open_images` (the ``--data`` of every
command). Sources:

- :class:`~teacher_store.images.dataset.ImageFolder`: ``root/<class>/<image>`` on local disk
  or at any fsspec URL (``s3://bucket/imagenet/train/``);
- :class:`~teacher_store.images.shards.TarShards`: WebDataset tar shards, local or on object
  storage, named by a brace pattern (``s3://b/in22k/shard-{000000..001023}.tar``), read by
  byte ranges through the index ``distill images index`` (or ``pack``) wrote beside them.

Samples are numbered in one canonical order, their relative keys sorted (a folder's
``class/file.jpg``; a packed shard keeps that key), so a folder and the shards packed from it
have the same sample i. A source's identity is its :class:`DatasetFingerprint`: when both sides
know the per-sample content digests, content decides (names may differ), else names and sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

# check_content lives beside the digests (every source imports it; this module imports the
# sources): re-exported here.
from teacher_store.images.digests import SampleDigests, check_content

if TYPE_CHECKING:
    from PIL import Image

    from teacher_store.images.dataset import DatasetFingerprint, DraftRule

__all__ = ["ImageSource", "check_content", "is_shard_pattern", "labels_of", "open_images"]


@runtime_checkable
class ImageSource(Protocol):
    """A dataset of N images with labels, in canonical sample order, read by index."""

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names; label j is ``classes[j]``."""
        ...

    @property
    def max_image_pixels(self) -> int:
        """Larger images load as corrupt."""
        ...

    @property
    def content(self) -> SampleDigests | None:
        """The digests every read is checked against (:meth:`with_content`), or None."""
        ...

    @property
    def location(self) -> str:
        """Where the images are, printable: the folder, URL or shard pattern."""
        ...

    def __len__(self) -> int: ...

    def label(self, index: int) -> int:
        """Sample ``index``'s class label."""
        ...

    def key(self, index: int) -> str:
        """Sample ``index``'s relative key (``class/file.jpg``), the canonical order's key."""
        ...

    def where(self, index: int) -> str:
        """Sample ``index`` as messages name it (printable): the file's path or URL, or
        ``shard-000003.tar: class/file.jpg``."""
        ...

    def read(self, index: int) -> bytes:
        """Sample ``index``'s image bytes, checked against :attr:`content` when attached
        (:class:`ImageChangedError`); ``CorruptImageError`` when unreadable."""
        ...

    def load(self, index: int, draft: DraftRule | None = None) -> Image.Image:
        """Sample ``index`` decoded as RGB (bytes from :meth:`read`)."""
        ...

    def fingerprint(self) -> DatasetFingerprint:
        """What identifies the dataset (count, classes, labels, names and sizes, and the
        content record when the digests are known)."""
        ...

    def with_content(self, digests: SampleDigests) -> ImageSource:
        """This source, every read checked against ``digests`` (the store's record)."""
        ...

    def sample_digests(
        self, threads: int = 8, progress: Callable[[int], None] | None = None
    ) -> SampleDigests:
        """Every sample's content digest (known ones as they are; else read every image)."""
        ...

    def skipped_summary(self, limit: int = 5) -> str | None:
        """One warning about entries the listing left out, or None."""
        ...


def labels_of(source: ImageSource, count: int | None = None) -> np.ndarray:
    """The labels of samples ``0..count-1`` (default: all) as int64 ``[count]``: from the
    source's flat ``labels`` array when it has one (no Python int per sample: 14 M samples),
    else :meth:`ImageSource.label` one by one."""
    n = len(source) if count is None else min(count, len(source))
    flat = getattr(source, "labels", None)
    if flat is not None:
        return np.asarray(flat, np.int64)[:n]
    return np.fromiter((source.label(i) for i in range(n)), np.int64, n)


def is_shard_pattern(data: str) -> bool:
    """Whether ``data`` names tar shards (a ``.tar`` file or a brace pattern of them)."""
    name = data.rstrip("/")
    return name.endswith(".tar") or ("{" in name and ".." in name)


def open_images(
    data: str | os.PathLike[str] | ImageSource,
    max_image_pixels: int | None = None,
    *,
    cache_dir: str | None = None,
) -> ImageSource:
    """The image source ``data`` names: tar shards (a ``.tar`` or a brace pattern of them,
    with their index beside them), else an ImageFolder (a folder, or an fsspec URL of one).
    ``cache_dir``: where shard byte ranges are cached (shards only; default: none kept)."""
    if isinstance(data, ImageSource):
        return data
    text = os.fspath(data)
    if is_shard_pattern(text):
        from teacher_store.images.shards import TarShards

        return TarShards.open(text, max_image_pixels, cache_dir=cache_dir)
    from teacher_store.images.dataset import ImageFolder

    return ImageFolder.scan(text if "://" in text else Path(text), max_image_pixels)
