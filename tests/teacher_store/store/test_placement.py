"""`distill generate --out` never onto, inside or around its `--data` (links resolved first),
refused before anything is created or deleted (real photos)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.store.placement import OutputOverlapsData, check_apart
from tests.store_fixtures import SMALL_GENERATE, file_digests


def _generate_cli(data: Path, out: Path, *extra: str) -> int:
    args = ["generate", "--data", str(data), "--out", str(out), "--views", "1", "--topk", "5"]
    args += ["--img-size", "64", "--workers", "0", "--quiet", *extra]
    return main(args)


@pytest.fixture
def data(tmp_path: Path, demo_data: Path) -> Path:
    copy = tmp_path / "photos"
    shutil.copytree(demo_data, copy)
    return copy


def _one_line_refusal(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def test_out_is_data_with_overwrite_deletes_nothing(data, capsys):
    before = file_digests(data)
    assert _generate_cli(data, data, "--overwrite") == 2
    _one_line_refusal(capsys, "--out", "is the dataset folder", str(data))
    assert file_digests(data) == before  # not one image deleted, nothing added


def test_symlinked_out_to_data_is_refused(data, tmp_path, capsys):
    link = tmp_path / "store-link"
    link.symlink_to(data, target_is_directory=True)
    before = file_digests(data)
    assert _generate_cli(data, link, "--overwrite") == 2
    err = _one_line_refusal(capsys, "is the dataset folder", "resolved")
    assert str(data) in err
    assert file_digests(data) == before


def test_out_a_parent_of_data_is_refused(data, tmp_path, capsys):
    before = file_digests(tmp_path)
    assert _generate_cli(data, tmp_path, "--overwrite") == 2
    _one_line_refusal(capsys, "contains the dataset folder")
    assert file_digests(tmp_path) == before


def test_out_inside_data_is_refused_without_overwrite(data, capsys):
    before = file_digests(data)
    assert _generate_cli(data, data / "store") == 2
    _one_line_refusal(capsys, "lies inside the dataset folder", "class folders")
    assert not (data / "store").exists()
    assert file_digests(data) == before


def test_out_inside_data_through_a_linked_parent(data, tmp_path):
    """--out names the dataset's own folder by another path (a link to its parent)."""
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path, target_is_directory=True)
    cfg = GenerateConfig(data=str(data), out=str(alias / "photos" / "cat" / "s"), **SMALL_GENERATE)
    with pytest.raises(OutputOverlapsData, match="lies inside"):
        run_generate(cfg)  # the API entry refuses too, before any work
    assert not (data / "cat" / "s").exists()


def test_neighbours_and_urls():
    check_apart("/data/images", "/data/images-store")  # a shared name prefix is no overlap
    check_apart("/data/images", "/data/stores/a")
    check_apart("/data/images", "s3://bucket/data/images")  # other storage
    check_apart("s3://bucket/imagenet", "s3://bucket/imagenet-store")
    check_apart("s3://bucket/imagenet", "s3://other/imagenet")
    with pytest.raises(OutputOverlapsData, match="lies inside"):
        check_apart("s3://bucket/imagenet/", "s3a://bucket/imagenet/store")
    with pytest.raises(OutputOverlapsData, match="contains"):
        check_apart("s3://bucket/in/train", "s3://bucket/in")
    with pytest.raises(OutputOverlapsData, match="is the dataset folder"):
        check_apart("s3://bucket/in/train", "s3://bucket/in/train/")


def test_relative_and_file_url_spellings(data, monkeypatch):
    monkeypatch.chdir(data.parent)
    with pytest.raises(OutputOverlapsData, match="is the dataset folder"):
        check_apart("photos", f"file://{data}")
    with pytest.raises(OutputOverlapsData, match="lies inside"):
        check_apart(f"./{data.name}/", "photos/../photos/dog/x")


def test_tar_shards_are_placed_at_their_folder(tmp_path, capsys):
    """A shard pattern's dataset lies in the shards' folder (their index beside them): a store
    there, inside it or around it is refused; a neighbour is not."""
    shards = tmp_path / "shards"
    shards.mkdir()
    pattern = f"{shards}/train-{{000000..000003}}.tar"
    with pytest.raises(OutputOverlapsData, match="is the dataset folder"):
        check_apart(pattern, str(shards))
    with pytest.raises(OutputOverlapsData, match="lies inside"):
        check_apart(pattern, str(shards / "store"))
    with pytest.raises(OutputOverlapsData, match="contains"):
        check_apart(str(shards / "one.tar"), str(tmp_path))
    check_apart(pattern, str(tmp_path / "store"))
    check_apart("s3://b/in22k/shard-{000000..001023}.tar", "s3://b/in22k-store")
    with pytest.raises(OutputOverlapsData, match="lies inside"):
        check_apart("s3://b/in22k/shard-{000000..001023}.tar", "s3://b/in22k/store")
    with pytest.raises(OutputOverlapsData, match="is the dataset folder"):
        check_apart("s3://b/in22k/shard-{000000..001023}.tar", "s3a://b/in22k/")
    # Through the command: one line, before anything is read or created.
    assert _generate_cli(pattern, shards / "store") == 2  # type: ignore[arg-type]
    _one_line_refusal(capsys, "--out", "lies inside", "--data")
    assert not (shards / "store").exists()
