"""ImageFolder.scan on hostile trees (real symlinks, real non-UTF-8 names) and the pixel limit."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image

from teacher_store.images.dataset import (
    DEFAULT_MAX_IMAGE_PIXELS,
    CorruptImageError,
    ImageFolder,
    default_max_image_pixels,
    load_image,
    printable_path,
)


def _folder(root: Path, per_class: int = 3) -> Path:
    """root/a/0..n.png and root/b/0..n.png: tiny real PNGs, distinct bytes per class."""
    for c, shade in (("a", 30), ("b", 200)):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (shade, i * 40, 0)).save(root / c / f"{i}.png")
    return root


def big_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width`` x ``height`` (1-bit grey) with one tiny IDAT: Pillow
    reads the size from the header, so no giant buffer is ever made to write or test it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def test_directory_link_loop_neither_multiplies_nor_relabels(tmp_path):
    """The issue's case: `ln -s .. DATA/b/dirloop` made 6 files 246 samples, a's labelled b."""
    data = _folder(tmp_path / "DATA")
    (data / "b" / "dirloop").symlink_to("..", target_is_directory=True)
    folder = ImageFolder.scan(data)
    assert len(folder) == 6
    assert folder.classes == ("a", "b")
    assert folder.paths == tuple(f"{c}/{i}.png" for c in "ab" for i in range(3))
    assert folder.labels == (0, 0, 0, 1, 1, 1)
    assert folder.skipped == (("b/dirloop", folder.skipped[0][1]),)
    assert "already indexed" in folder.skipped[0][1]
    summary = folder.skipped_summary()
    assert summary is not None and "b/dirloop" in summary
    # The same tree without the link has the same fingerprint: the skipped link is not data.
    (data / "b" / "dirloop").unlink()
    clean = ImageFolder.scan(data)
    assert clean.fingerprint() == folder.fingerprint() and clean.skipped_summary() is None


def test_links_to_another_class_or_out_of_the_root_are_skipped(tmp_path):
    data = _folder(tmp_path / "DATA")
    outside = _folder(tmp_path / "elsewhere", per_class=2)
    (data / "a" / "also_b").symlink_to(data / "b", target_is_directory=True)  # would relabel
    (data / "a" / "far.png").symlink_to(outside / "a" / "0.png")
    (data / "c").symlink_to(outside / "b", target_is_directory=True)  # a class folder link
    (data / "b" / "same.png").symlink_to(Path("..") / "a" / "0.png")  # a file inside the root
    folder = ImageFolder.scan(data)
    assert folder.classes == ("a", "b", "c")  # a skipped class keeps its name and label
    assert folder.paths == ("a/0.png", "a/1.png", "a/2.png", "b/0.png", "b/1.png", "b/2.png",
                            "b/same.png")  # fmt: skip
    assert folder.labels == (0, 0, 0, 1, 1, 1, 1)
    reasons = dict(folder.skipped)
    assert set(reasons) == {"a/also_b", "a/far.png", "c"}
    assert "already indexed" in reasons["a/also_b"]
    assert "outside the dataset root" in reasons["a/far.png"]
    assert str(outside / "b") in reasons["c"]
    summary = folder.skipped_summary()
    assert summary is not None and summary.startswith("warning: 3 entries")
    assert all(name in summary for name in reasons)


def test_file_symlink_loop_and_broken_link_are_skipped_not_fatal(tmp_path):
    data = _folder(tmp_path / "DATA")
    (data / "a" / "x.png").symlink_to("y.png")
    (data / "a" / "y.png").symlink_to("x.png")
    (data / "b" / "gone.png").symlink_to("missing.png")
    folder = ImageFolder.scan(data)
    assert len(folder) == 6 and folder.labels == (0, 0, 0, 1, 1, 1)
    reasons = dict(folder.skipped)
    assert reasons["a/x.png"] == reasons["a/y.png"] == "symlink loop"
    assert reasons["b/gone.png"].startswith("broken link")


def test_non_utf8_file_name_is_indexed_named_and_fingerprinted_by_its_bytes(tmp_path):
    data = _folder(tmp_path / "DATA")
    raw = os.path.join(os.fsencode(data / "a"), b"bad\xff.png")
    with open(raw, "wb") as f:
        f.write((data / "a" / "0.png").read_bytes())
    folder = ImageFolder.scan(data)
    assert len(folder) == 7
    i = folder.paths.index(os.fsdecode(b"a/bad\xff.png"))
    assert folder.labels[i] == 0
    assert folder.load(i).size == (8, 8)  # loads through the surrogate-escaped str path
    shown = printable_path(folder.paths[i])
    assert shown == "a/bad\\xff.png"
    json.dumps({"path": shown}, ensure_ascii=False).encode("utf-8")  # JSON- and UTF-8-safe
    # The fingerprint hashes the raw name bytes: recomputed by hand, and stable across scans.
    h = hashlib.sha256()
    for rel, size in zip(folder.paths, folder.sizes, strict=True):
        h.update(os.fsencode(rel) + f"\0{size}\n".encode())
    assert folder.fingerprint().sha256 == h.hexdigest()
    assert ImageFolder.scan(data).fingerprint() == folder.fingerprint()
    # A different undecodable byte is a different dataset.
    os.rename(raw, os.path.join(os.fsencode(data / "a"), b"bad\xfe.png"))
    assert ImageFolder.scan(data).fingerprint().sha256 != folder.fingerprint().sha256


def test_non_utf8_class_folder_is_refused_naming_it(tmp_path):
    data = _folder(tmp_path / "DATA")
    cls = os.path.join(os.fsencode(data), b"cl\xe9s")
    os.mkdir(cls)
    Image.new("RGB", (8, 8)).save(os.fsdecode(os.path.join(cls, b"0.png")))
    with pytest.raises(ValueError, match=r"cl\\xe9s.*not UTF-8.*rename") as e:
        ImageFolder.scan(data)
    str(e.value).encode("utf-8")  # printable


def test_pixel_limit_is_per_call_and_leaks_no_pillow_state(tmp_path):
    normal = tmp_path / "n.png"
    Image.new("RGB", (20, 10)).save(normal)
    between = big_png_header(tmp_path / "between.png", 10_000, 10_000)  # 1e8: Pillow warns
    bomb = big_png_header(tmp_path / "bomb.png", 20_000, 20_000)  # 4e8: Pillow raises
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any DecompressionBombWarning leaking fails the test
        assert load_image(normal, max_pixels=200).size == (20, 10)
        with pytest.raises(CorruptImageError, match=r"20x10 = 200 pixels, over the limit of 199"):
            load_image(normal, max_pixels=199)
        with pytest.raises(CorruptImageError, match=r"between\.png is 10000x10000"):
            load_image(between)
        with pytest.raises(CorruptImageError, match=r"bomb\.png is too large"):
            load_image(bomb)
    assert before == Image.MAX_IMAGE_PIXELS
    data = _folder(tmp_path / "DATA")
    strict = ImageFolder.scan(data, max_image_pixels=63)  # the 8 x 8 images are over it
    assert strict.max_image_pixels == 63 and strict == ImageFolder.scan(data)
    with pytest.raises(CorruptImageError, match="over the limit of 63"):
        strict.load(0)


def test_pixel_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv("DISTILL_MAX_IMAGE_PIXELS", raising=False)
    assert default_max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 89_478_485
    monkeypatch.setenv("DISTILL_MAX_IMAGE_PIXELS", "1_000_000")
    assert default_max_image_pixels() == 1_000_000
    monkeypatch.setenv("DISTILL_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="DISTILL_MAX_IMAGE_PIXELS='lots' must be an integer"):
        default_max_image_pixels()
