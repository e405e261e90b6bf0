"""`distill images pack` and `distill images index`: what they print, what they write, and
one line with exit status 2 for bad options and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.images.dataset import ImageFolder
from teacher_store.images.source import open_images


def _one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, out.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_pack_then_index_from_the_command_line(
    demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "shards"
    assert main(["images", "pack", str(demo_data), str(out), "--shard-bytes", "2e6"]) == 0
    got = capsys.readouterr()
    pattern = f"{out}/shard-{{000000..000002}}.tar"
    assert "packed 17 images into 3 shards" in got.out and f"--data {pattern}" in got.out
    assert got.err.count("samples,") == 3  # a progress line per shard, on stderr
    index = out / "shard-{000000..000002}.tar.index.npz"
    before = index.read_bytes()
    assert main(["images", "index", pattern, "--quiet"]) == 0
    got = capsys.readouterr()
    assert "indexed 17 samples in 3 shards, 8 classes (labels from cls)" in got.out and not got.err
    assert index.read_bytes() == before
    folder = ImageFolder.scan(demo_data)
    shards = open_images(pattern)
    assert [shards.read(i) for i in range(17)] == [folder.read(i) for i in range(17)]


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "abc", "1e13"])
def test_bad_shard_bytes(
    value: str, demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["images", "pack", str(demo_data), str(tmp_path / "o"), "--shard-bytes", value])
    assert isinstance(e.value.code, int)
    _one_line_error(capsys, e.value.code, "--shard-bytes", "whole number of bytes")
    assert not (tmp_path / "o").exists()


def test_bad_inputs_are_one_line(
    demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["images", "pack", str(demo_data), str(demo_data / "inside")])
    _one_line_error(capsys, code, "distill images: error:", "lies inside the image folder")
    assert not (demo_data / "inside").exists()
    code = main(["images", "pack", str(tmp_path / "nothing"), str(tmp_path / "o")])
    _one_line_error(capsys, code, "does not exist")
    code = main(["images", "index", str(tmp_path / "shard-{0..2}.tar")])
    _one_line_error(capsys, code, f"shard {tmp_path}/shard-0.tar is missing")
    code = main(["images", "index", str(tmp_path / "x.zip")])
    _one_line_error(capsys, code, "is not a .tar file name")
    (tmp_path / "bad.tar").write_bytes(b"\x01" * 2048)
    code = main(["images", "index", str(tmp_path / "bad.tar")])
    _one_line_error(capsys, code, f"shard {tmp_path}/bad.tar is not a readable tar file")


def test_images_help_in_a_subprocess(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "teacher_store.cli", "images", "pack", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "--shard-bytes" in run.stdout
