"""Reliability: bad images in a dataset, end to end through `distill generate` (issue 16).

An ImageFolder of real demo photos (2 classes) plus six kinds of bad input: a zero-byte file,
text named ``.png``, a 1x1 image, real (valid, highly compressed) PNGs above Pillow's
decompression-bomb limit (20,000 x 20,000, which Pillow refuses itself, and 10,000 x 10,000,
which it would only warn about), names that are not UTF-8 (a photo and a
text file), and symlink loops (two file links pointing at each other, a folder link to its
parent). The job completes (exit 0); every unreadable file is named, as printable text, on
stdout and in the manifest's ``bad_samples``; every loop is named in the scan's warning on
stderr; the 1x1 image renders like any other; every view that uses no bad sample has targets;
`distill verify --fraction 1` re-runs the teacher on all of them and agrees; a second run into
another folder writes the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from teacher_store.cli import main
from teacher_store.images.dataset import DEFAULT_MAX_IMAGE_PIXELS, ImageFolder, printable_path
from teacher_store.store.arrays import BOOK, LocalStore
from teacher_store.views.codec import decode
from teacher_store.views.recipe import get_recipe
from tests.reliability import record
from tests.store_fixtures import file_digests

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
CLI = ["--views", "2", "--topk", "5", "--img-size", "64", "--batch-size", "4"]
CLI += ["--shard-samples", "8", "--chunk-samples", "4", "--shard-views", "1"]
CLI += ["--workers", "0", "--quiet"]
# Pillow's limit is 89,478,485 pixels: it warns above it and refuses twice as many itself.
BOMB_SIDE = 20_000  # 4e8 pixels: Pillow's own error
BIG_SIDE = 10_000  # 1e8 pixels: Pillow would only warn (and decode 300 MB); distill refuses

# Files that are samples but cannot be decoded: (relative path as bytes, what is wrong).
UNREADABLE = {
    b"cat/empty.jpg": "zero bytes",
    b"dog/notes.png": "text named .png",
    b"dog/bomb.png": "decompression bomb",
    b"cat/big.png": "decompression bomb that Pillow only warns about",
    b"cat/r\xe9sum\xe9.png": "text under a name that is not UTF-8",
}
LOOPS = ("cat/x.png", "cat/y.png", "dog/dirloop")


def _bomb_png(path: Path, side: int) -> None:
    """A valid 1-bit PNG of ``side`` x ``side`` black pixels: every row is all zeros, so it
    deflates about 1000:1 (a few tens of KiB on disk, ``side``**2 pixels when decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0, then the packed pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _write(root: Path, rel: bytes, data: bytes) -> None:
    with open(os.path.join(os.fsencode(root), rel), "wb") as f:
        f.write(data)


def _bad_dataset(demo_data: Path, root: Path) -> Path:
    """Two real photos per class, then the six kinds of bad input."""
    for cls, source in (("cat", "microscopy"), ("dog", "space")):
        (root / cls).mkdir(parents=True)
        for src in sorted((demo_data / source).iterdir())[:2]:
            shutil.copy(src, root / cls / src.name)
    _write(root, b"cat/empty.jpg", b"")
    _write(root, b"dog/notes.png", b"these are my notes, not a picture\n" * 4)
    Image.new("RGB", (1, 1), (200, 30, 90)).save(root / "cat" / "pixel.png")
    _bomb_png(root / "dog" / "bomb.png", BOMB_SIDE)
    _bomb_png(root / "cat" / "big.png", BIG_SIDE)
    photo = sorted((demo_data / "space").iterdir())[0].read_bytes()
    _write(root, b"dog/caf\xe9.jpg", photo)  # a good photo under a name that is not UTF-8
    _write(root, b"cat/r\xe9sum\xe9.png", b"not an image either")
    (root / "cat" / "x.png").symlink_to("y.png")
    (root / "cat" / "y.png").symlink_to("x.png")
    (root / "dog" / "dirloop").symlink_to("..", target_is_directory=True)
    return root


def _env() -> dict[str, str]:
    """One thread, offline, and this checkout's packages first (see test_disk_full.py)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _generate(data: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "distill"), "generate", "--data", str(data), "--out", str(out), *CLI]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def _views_with_targets(store: LocalStore, bad: set[int]) -> tuple[int, int, set[int]]:
    """(views that use no bad sample and have targets, views whose validity is wrong, the
    samples those good views show)."""
    a, recipe = store.attrs, get_recipe("default")
    good = wrong = 0
    shown: set[int] = set()
    for slot in range(a.views):
        block = store.read_block(slot, 0, a.num_samples)
        for i in range(a.num_samples):
            p = decode(a.store_seed, slot, i, a.num_samples, recipe, a.views)
            uses_bad = i in bad or (p.mix is not None and p.mix.partner in bad)
            wrong += int(bool(block.valid[i]) == uses_bad)
            if not uses_bad and block.valid[i]:
                good += 1
                shown |= {i} if p.mix is None else {i, p.mix.partner}
    return good, wrong, shown


def test_bad_images_are_named_and_the_job_completes(demo_data: Path, tmp_path: Path, capsys):
    data = _bad_dataset(demo_data, tmp_path / "data")
    assert (data / "dog" / "bomb.png").stat().st_size < 100_000
    out = tmp_path / "store"
    first = _generate(data, out)
    assert first.returncode == 0, first.stderr
    assert "complete" in first.stdout and "Traceback" not in first.stderr
    for loop in LOOPS:  # the scan skips and names each loop
        assert f"  {loop}: " in first.stderr, first.stderr

    folder = ImageFolder.scan(data)
    names = {printable_path(p): i for i, p in enumerate(folder.paths)}
    assert len(folder) == 11 and folder.max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    manifest = json.loads((out / BOOK / "manifest.json").read_text(encoding="utf-8"))
    listed = {b["path"]: b for b in manifest["bad_samples"]}
    want_bad = {printable_path(rel) for rel in UNREADABLE}
    assert set(listed) == want_bad, listed  # the 1x1 image and the odd-named photo are fine
    for path, b in listed.items():
        assert b["sample"] == names[path] and f": {path}: " in first.stdout, first.stdout
    assert "is too large to decode" in listed["dog/bomb.png"]["error"]
    assert "10000x10000 = 100,000,000 pixels, over the limit" in listed["cat/big.png"]["error"]
    assert "cat/r\\xe9sum\\xe9.png" in listed  # printable, as the name's bytes
    assert "\\udc" not in first.stdout + json.dumps(listed)  # and Pillow's quote of it too

    store = LocalStore(out)
    good, wrong, shown = _views_with_targets(store, {b["sample"] for b in listed.values()})
    assert wrong == 0 and good > 0
    # The 1x1 image and the odd-named photo are samples like any other: they are in views with
    # targets (as the sample or its mixing partner), which verify re-scores below.
    assert {names["cat/pixel.png"], names["dog/caf\\xe9.jpg"]} <= shown
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert all(f"sample {b['sample']}: {path}" in info for path, b in listed.items()), info
    assert main(["verify", str(out), "--data", str(data), "--fraction", "1"]) == 0
    assert "OK" in capsys.readouterr().out

    second = _generate(data, tmp_path / "again")
    assert second.returncode == 0, second.stderr
    lost = int(file_digests(tmp_path / "again") != file_digests(out))
    record(
        "bad images in a dataset",
        faults_survived=6 if lost == 0 else 0,
        inputs_tried=6,
        data_lost=lost,
        note=f"{len(listed)} unreadable files named, {len(LOOPS)} loops skipped; "
        f"{good} good views scored",
    )
    assert lost == 0
