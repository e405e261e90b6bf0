"""ImageFolder datasets: a sorted index, a fingerprint, and image loading with clear errors."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class CorruptImageError(ValueError):
    """An image file that cannot be decoded; names the file."""


@dataclass(frozen=True)
class DatasetFingerprint:
    """What identifies a dataset: sample count, hash of sorted relative paths and sizes, classes."""

    num_samples: int
    sha256: str
    classes: tuple[str, ...]
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "sha256": self.sha256,
            "classes": list(self.classes),
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetFingerprint:
        return cls(int(d["num_samples"]), str(d["sha256"]), tuple(d["classes"]), int(d["version"]))

    def mismatch(self, other: DatasetFingerprint) -> str | None:
        """A one-line description of how ``other`` differs, or None when they are the same."""
        if self.num_samples != other.num_samples:
            return f"{other.num_samples} samples instead of {self.num_samples}"
        if self.classes != other.classes:
            return "different class folders"
        if self.sha256 != other.sha256:
            return "different file names or sizes (same count)"
        return None


@dataclass(frozen=True)
class ImageFolder:
    """Sorted ``root/<class>/<file>`` index; sample i is ``paths[i]`` with label ``labels[i]``."""

    root: Path
    paths: tuple[str, ...]  # relative to root, '/'-separated, sorted
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    sizes: tuple[int, ...]

    @classmethod
    def scan(cls, root: str | os.PathLike[str]) -> ImageFolder:
        base = Path(root)
        if not base.is_dir():
            raise ValueError(
                f"dataset directory {base} does not exist (expected root/<class>/<img>)"
            )
        classes = tuple(sorted(p.name for p in base.iterdir() if p.is_dir()))
        items: list[tuple[str, int, int]] = []
        for label, cls_name in enumerate(classes):
            for dirpath, _, files in os.walk(base / cls_name, followlinks=True):
                for f in files:
                    if f.lower().endswith(IMAGE_EXTENSIONS):
                        full = Path(dirpath) / f
                        rel = full.relative_to(base).as_posix()
                        items.append((rel, label, full.stat().st_size))
        if not items:
            raise ValueError(f"no images found under {base} (expected root/<class>/<img>)")
        items.sort()
        paths, labels, sizes = zip(*items, strict=True)
        return cls(base, tuple(paths), tuple(labels), classes, tuple(sizes))

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> DatasetFingerprint:
        h = hashlib.sha256()
        for rel, size in zip(self.paths, self.sizes, strict=True):
            h.update(f"{rel}\0{size}\n".encode())
        return DatasetFingerprint(len(self.paths), h.hexdigest(), self.classes)

    def load(self, index: int) -> Image.Image:
        """Decode sample ``index`` as RGB; raise CorruptImageError naming the file."""
        return load_image(self.root / self.paths[index])


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(f"cannot decode image {path}: {e}") from None
