"""Demo dataset: real photos that ship inside registry packages, written as an ImageFolder.

No download: the files come from scikit-image's and scikit-learn's bundled data. The original
file bytes are copied, so names and bytes are identical on every machine with the same packages.
"""

from __future__ import annotations

import importlib
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
