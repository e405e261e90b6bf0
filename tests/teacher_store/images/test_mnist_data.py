import hashlib

import numpy as np
import pytest
from PIL import Image

from teacher_store.images.dataset import ImageFolder
from teacher_store.images.demo_data import MNIST_CLASSES, write_mnist


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_write_mnist_is_a_deterministic_imagefolder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files = write_mnist(a, n=200)
    write_mnist(b, n=200)
    assert _digest(a) == _digest(b)
    assert files["test"] == [] and len(files["train"]) == 200
    assert sorted(p.name for p in a.iterdir()) == list(MNIST_CLASSES)
    for d in MNIST_CLASSES:
        assert len(list((a / d).glob("*.png"))) == 20  # class-balanced
    folder = ImageFolder.scan(a)
    assert len(folder) == 200 and folder.classes == MNIST_CLASSES
    for p in files["train"][::37]:
        with Image.open(p) as im:
            assert im.size == (28, 28) and im.mode == "L"
            pixels = np.asarray(im)
        assert pixels.max() > 128 and pixels.min() == 0  # a real digit, not a blank
    rgb = folder.load(0)
    assert rgb.mode == "RGB" and rgb.size == (28, 28)


def test_write_mnist_split_is_stratified_disjoint_and_deterministic(tmp_path):
    files = write_mnist(tmp_path / "tr", n=103, split=0.2, test_out=tmp_path / "te")
    again = write_mnist(tmp_path / "tr2", n=103, split=0.2, test_out=tmp_path / "te2")
    assert len(files["train"]) + len(files["test"]) == 103
    assert [p.name for p in files["test"]] == [p.name for p in again["test"]]
    assert _digest(tmp_path / "te") == _digest(tmp_path / "te2")
    train_names = {p.relative_to(tmp_path / "tr") for p in files["train"]}
    test_names = {p.relative_to(tmp_path / "te") for p in files["test"]}
    assert not train_names & test_names
    # 11 digits of classes 0-2 and 10 of the others; 2 (of 10 or 11) of each class held out
    for d in MNIST_CLASSES:
        assert len(list((tmp_path / "te" / d).glob("*.png"))) == 2
    assert ImageFolder.scan(tmp_path / "te").classes == MNIST_CLASSES


def test_write_mnist_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="test_out"):
        write_mnist(tmp_path / "x", n=100, split=0.2)
    with pytest.raises(ValueError, match="n must be"):
        write_mnist(tmp_path / "x", n=5001)
    with pytest.raises(ValueError, match="split"):
        write_mnist(tmp_path / "x", n=100, split=1.0)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        write_mnist(f, n=100)
