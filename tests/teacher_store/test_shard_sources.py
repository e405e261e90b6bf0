"""Tar shards as every command's ``--data``, end to end: the demo photos packed by
``distill images pack`` (locally and onto a real S3 server, moto on 127.0.0.1) are the same
dataset as the folder they came from.

`distill generate` from the shards writes shard files byte-identical to the folder's store; the
folder's store trains from the S3 shards (content decides) with the same batches through
:class:`~student.StoreLoader` and `distill train`, and a store made from the shards trains from
the folder. A replaced image inside a shard is refused naming its shard and key; a missing or
truncated shard and a wrong index stop generate and train with one line naming the shard or
index, never wrong pixels.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from student import StoreBatch, StoreLoader
from teacher_store.cli import main
from teacher_store.images.pack import pack_images
from teacher_store.images.shard_index import ShardPattern
from teacher_store.images.shards import TarShards
from tests.s3_fixtures import S3Server
from tests.store_fixtures import (
    assert_same_batch,
    file_digests,
    generate_small,
    student_config,
    trained_batches,
)

pytestmark = pytest.mark.usefixtures("one_thread")
SHARD_BYTES = 2_000_000  # the 17 demo photos (5 MB) make 3 shards
LOADER = {"img_size": 48, "batch_size": 4, "val_fraction": 0.2, "epochs": 2, "workers": 0}


@pytest.fixture(scope="module")
def local_store(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_small(demo_data, tmp_path_factory.mktemp("local") / "store", progress=False)


@pytest.fixture(scope="module")
def local_shards(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("packed") / "shards"
    return pack_images(str(demo_data), str(out), SHARD_BYTES).pattern


@pytest.fixture(scope="module")
def s3_shards(s3_server: S3Server, demo_data: Path) -> str:
    """The demo photos packed onto S3 by the CLI: ``s3://bucket/shards-N/shard-{...}.tar``."""
    url = s3_server.url("shards")
    assert main(["images", "pack", str(demo_data), url, "--shard-bytes", "2e6", "--quiet"]) == 0
    return f"{url}/shard-{{000000..000002}}.tar"


def _batches(store: Path, data: str | Path, read_threads: int) -> list[StoreBatch]:
    with StoreLoader(str(store), data, read_threads=read_threads, **LOADER) as loader:
        got = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            got += list(loader)
    return got


@pytest.mark.parametrize("where", ["local", "s3"])
def test_generate_from_shards_writes_the_folders_bytes(
    where, local_shards, s3_shards, local_store, tmp_path
):
    pattern = local_shards if where == "local" else s3_shards
    out = generate_small(pattern, tmp_path / "store", progress=False, read_threads=4)
    assert file_digests(out) == file_digests(local_store)


def test_generate_cli_from_s3_shards_in_workers(s3_shards, local_store, tmp_path):
    out = tmp_path / "store"
    flags = {
        "views": 2, "topk": 5, "img-size": 64, "batch-size": 4, "shard-samples": 8,
        "chunk-samples": 4, "shard-views": 1, "workers": 2, "read-threads": 2,
    }  # fmt: skip
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    assert main(["generate", "--data", s3_shards, "--out", str(out), *args, "--quiet"]) == 0
    assert file_digests(out) == file_digests(local_store)


def test_distill_train_from_s3_shards_sees_the_folders_batches(
    s3_shards, local_store, demo_data, tmp_path, monkeypatch
):
    local, s3 = (
        trained_batches(student_config(local_store, data, tmp_path / name, epochs=1, workers=1),
                        monkeypatch)
        for name, data in (("local", demo_data), ("s3", s3_shards))
    )  # fmt: skip
    assert len(local) == len(s3)
    for a, b in zip(local, s3, strict=True):
        assert_same_batch(a, b)


def test_a_store_from_the_shards_trains_from_the_folder(local_shards, demo_data, tmp_path):
    """The other way round: generated from the shards (content known), read with the folder
    (names and sizes decide, every read checked against the store's digests)."""
    store = generate_small(local_shards, tmp_path / "store", progress=False)
    want = _batches(store, local_shards, 0)
    got = _batches(store, demo_data, 0)
    assert len(got) == len(want) >= 4
    for a, b in zip(want, got, strict=True):
        assert_same_batch(a, b)


def _copy_shards(pattern: str, out: Path) -> tuple[str, ShardPattern]:
    parsed = ShardPattern.parse(pattern)
    shutil.copytree(parsed.folder, out)
    return f"{out}/{parsed.name}", parsed


def test_a_replaced_image_in_a_shard_is_refused_with_its_key(
    demo_data, local_store, tmp_path, capsys
):
    """Sample 4's image replaced by another real photo and the shards packed again (their
    index agrees with them): the folder's store refuses them by content, in one line naming
    the first changed sample's shard and key (``distill train`` and ``StoreLoader``)."""
    copy = tmp_path / "copy"
    shutil.copytree(demo_data, copy)
    keys = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file())
    (copy / keys[4]).write_bytes((copy / keys[3]).read_bytes())
    pattern = pack_images(str(copy), str(tmp_path / "shards"), SHARD_BYTES).pattern
    rc = main(["train", "--store", str(local_store), "--data", pattern, "--model", "resnet18",
               "--out", str(tmp_path / "run"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "different image content" in err and keys[4] in err, err
    assert "sample 4, " in err and f"shard-000000.tar: {keys[4]}" in err, err
    with pytest.raises(ValueError, match="different image content: sample 4, "):
        StoreLoader(str(local_store), pattern, **LOADER)
    # verify and show name it too (the dashboard: tests/api/test_view_sources.py)
    show = ["show", str(local_store), "--data", pattern, "--sample", "0", "--view", "0"]
    for args in (
        ["verify", str(local_store), "--data", pattern],
        [*show, "--out", str(tmp_path / "v.png")],
    ):
        rc = main(args)
        out = capsys.readouterr()
        said = [x for x in (out.out + out.err).splitlines() if keys[4] in x]
        assert rc != 0 and "Traceback" not in out.err and len(said) == 1, (args[0], out)
        assert f"sample 4, {tmp_path / 'shards'}/shard-000000.tar: {keys[4]}" in said[0]
    assert not (tmp_path / "v.png").exists()


def _run(args: list[str], capsys) -> str:
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc in (1, 2) and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("damage", ["missing", "truncated", "wrong index", "rewritten"])
@pytest.mark.parametrize("command", ["generate", "train"])
def test_a_damaged_shard_set_is_one_line_naming_it(
    damage, command, local_shards, local_store, tmp_path, capsys
):
    """A missing or truncated shard and a wrong index are refused when the shards open; a
    shard rewritten in place (same size) when an image of it is read: one line naming the
    shard (or index) and the fix, from generate and from train, and no store written."""
    pattern, parsed = _copy_shards(local_shards, tmp_path / "shards")
    folder = tmp_path / "shards"
    shard = folder / parsed.shards[1]
    if damage == "missing":
        shard.unlink()
        named = str(shard)
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10240])
        named = str(shard)
    elif damage == "rewritten":  # same size, other bytes inside an image: found when read
        index = TarShards.open(pattern).index
        first = int(np.flatnonzero(index.shard == 1)[0])  # shard 1's first image
        data = bytearray(shard.read_bytes())
        data[int(index.data_offset[first]) + 100] ^= 0xFF
        shard.write_bytes(bytes(data))
        named = str(shard)
    else:  # the index of the first two shards only, under this pattern's name
        two = f"{folder}/shard-{{000000..000001}}.tar"
        assert main(["images", "index", two, "--quiet"]) == 0
        (folder / ShardPattern.parse(two).index_name).replace(folder / parsed.index_name)
        named = str(folder / parsed.index_name)
    if command == "generate":
        out = tmp_path / "o"
        err = _run(["generate", "--data", pattern, "--out", str(out), "--quiet"], capsys)
        assert not out.exists()
    else:
        args = ["train", "--store", str(local_store), "--data", pattern, "--model", "resnet18"]
        args += ["--batch-size", "4", "--img-size", "32", "--epochs", "1", "--workers", "0"]
        args += ["--quiet"]
        err = _run([*args, "--out", str(tmp_path / "run"), "--device", "cpu"], capsys)
    assert named in err and "distill images" in err, err
