"""Decode paths: batched torchvision JPEG decode (CPU here, nvJPEG on CUDA) beside Pillow."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from teacher_store.images.dataset import CorruptImageError, ImageFolder, load_image
from teacher_store.images.decode import DecodeDeviceError, check_decode, decode_images

LIMIT = 10**8


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def test_batched_decode_matches_pillow_in_order(demo_data) -> None:
    folder = ImageFolder.scan(demo_data)
    paths = [folder.root / p for p in folder.paths]
    assert {p.suffix for p in paths} >= {".jpg", ".png"}  # both kinds in one batch
    got = decode_images(paths, torch.device("cpu"), LIMIT)
    assert len(got) == len(paths)
    for path, img in zip(paths, got, strict=True):
        assert isinstance(img, Image.Image) and img.mode == "RGB", path
        np.testing.assert_array_equal(_pixels(img), _pixels(load_image(path, LIMIT)), str(path))


def test_bad_files_are_named_and_the_rest_of_the_batch_survives(demo_data, tmp_path) -> None:
    jpg = next(p for p in sorted(demo_data.rglob("*.jpg")))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)  # JPEG magic, nothing after
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image at all")
    missing = tmp_path / "gone.jpg"
    got = decode_images([jpg, garbage, text, missing, jpg], torch.device("cpu"), LIMIT)
    for bad, name in ((got[1], "garbage.jpg"), (got[2], "notes.jpg"), (got[3], "gone.jpg")):
        assert isinstance(bad, CorruptImageError) and name in str(bad)
    np.testing.assert_array_equal(_pixels(got[0]), _pixels(load_image(jpg, LIMIT)))
    np.testing.assert_array_equal(_pixels(got[4]), _pixels(got[0]))


def test_pixel_limit_applies_to_batched_jpegs(demo_data) -> None:
    jpg = next(p for p in sorted(demo_data.rglob("*.jpg")))
    w, h = Image.open(jpg).size
    (bad,) = decode_images([jpg], torch.device("cpu"), w * h - 1)
    assert isinstance(bad, CorruptImageError) and "over the limit" in str(bad)


def test_gpu_decode_needs_cuda() -> None:
    check_decode("cpu", torch.device("cpu"))
    with pytest.raises(DecodeDeviceError, match="--decode gpu needs a CUDA device"):
        check_decode("gpu", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown decode path"):
        check_decode("nvjpeg", torch.device("cpu"))


def test_cli_refuses_gpu_decode_on_cpu_with_one_line(demo_data, tmp_path) -> None:
    distill = shutil.which("distill") or str(sys.executable).replace("python", "distill")
    cmd = [
        distill, "generate", "--data", str(demo_data), "--out", str(tmp_path / "s"),
        "--device", "cpu", "--decode", "gpu", "--views", "1", "--quiet",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--decode gpu needs a CUDA device" in lines[0], r.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_decode_store_verifies_and_differs_little_from_pillow(demo_data, tmp_path) -> None:
    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.verify import verify_store

    folder = ImageFolder.scan(demo_data)
    paths = [folder.root / p for p in folder.paths]
    got = decode_images(paths, torch.device("cuda"), LIMIT)
    worst = max(
        int(np.abs(_pixels(g).astype(int) - _pixels(load_image(p, LIMIT))).max())
        for g, p in zip(got, paths, strict=True)
    )
    assert worst <= 16  # nvJPEG vs libjpeg-turbo: IDCT / upsampling rounding only
    kw = dict(data=str(demo_data), views=2, topk=5, img_size=64, batch_size=8, workers=2)
    s = run_generate(GenerateConfig(out=str(tmp_path / "g"), device="cuda", decode="gpu", **kw))
    assert s["complete"]
    report = verify_store(str(tmp_path / "g"), str(demo_data), fraction=1.0, device="cuda")
    assert report.ok, report.reason
