"""Images on object storage: an ImageFolder at an ``s3://`` URL (a real S3 server, moto on
127.0.0.1) is the same dataset as the folder on local disk, for every reader of ``--data``.

`distill generate` from it writes shard files byte-identical to the local folder's store;
`distill train` and :class:`~student.StoreLoader` from it see the same batches; a URL that
names nothing is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from student import StoreLoader
from teacher_store.cli import main
from teacher_store.images.source import open_images
from tests.s3_fixtures import S3Server
from tests.store_fixtures import (
    assert_same_batch,
    file_digests,
    generate_small,
    student_config,
    trained_batches,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def s3_photos(s3_server: S3Server, demo_data: Path) -> str:
    """The demo photos as an ImageFolder on S3: ``s3://bucket/photos-N/<class>/<file>``."""
    url = s3_server.url("photos")
    fs, root = s3_server.fs(), url.removeprefix("s3://")
    for path in sorted(demo_data.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(demo_data).as_posix()}", path.read_bytes())
    return url + "/"


@pytest.fixture(scope="module")
def local_store(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_small(demo_data, tmp_path_factory.mktemp("local") / "store", progress=False)


def test_the_s3_folder_is_the_local_folder(s3_photos, demo_data):
    remote, local = open_images(s3_photos), open_images(demo_data)
    assert len(remote) == len(local) and remote.classes == local.classes
    assert remote.fingerprint() == local.fingerprint()
    for i in (0, len(local) // 2, len(local) - 1):
        assert remote.key(i) == local.key(i) and remote.label(i) == local.label(i)
        assert remote.read(i) == local.read(i)
        assert remote.where(i).startswith("s3://") and remote.where(i).endswith(local.key(i))


def test_generate_from_an_s3_folder_writes_the_local_folders_bytes(
    s3_photos, local_store, tmp_path
):
    out = generate_small(s3_photos, tmp_path / "store", progress=False)
    assert file_digests(out) == file_digests(local_store)


def test_generate_cli_from_an_s3_folder_with_read_ahead_in_workers(
    s3_photos, local_store, tmp_path
):
    out = tmp_path / "store"
    flags = {
        "views": 2, "topk": 5, "img-size": 64, "batch-size": 4, "shard-samples": 8,
        "chunk-samples": 4, "shard-views": 1, "workers": 2, "read-threads": 4,
    }  # fmt: skip
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    assert main(["generate", "--data", s3_photos, "--out", str(out), *args, "--quiet"]) == 0
    assert file_digests(out) == file_digests(local_store)


def test_store_loader_from_the_s3_folder_gives_the_local_batches(s3_photos, local_store, demo_data):
    opts = {"img_size": 48, "batch_size": 4, "val_fraction": 0.2, "epochs": 2}
    runs = []
    for data, threads in ((demo_data, 0), (s3_photos, 0), (s3_photos, 4)):
        with StoreLoader(str(local_store), data, read_threads=threads, workers=0, **opts) as ld:
            batches = []
            for epoch in range(2):
                ld.set_epoch(epoch)
                batches += list(ld)
            runs.append(batches)
    assert len(runs[0]) >= 4
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other, strict=True):
            assert_same_batch(a, b)


def test_distill_train_from_the_s3_folder_sees_the_local_batches(
    s3_photos, local_store, demo_data, tmp_path, monkeypatch
):
    local, s3 = (
        trained_batches(student_config(local_store, data, tmp_path / name, epochs=1, workers=1),
                        monkeypatch)
        for name, data in (("local", demo_data), ("s3", s3_photos))
    )  # fmt: skip
    assert len(local) == len(s3)
    for a, b in zip(local, s3, strict=True):
        assert_same_batch(a, b)


@pytest.mark.parametrize("command", ["generate", "verify", "show", "train"])
def test_an_s3_url_that_names_nothing_is_one_line(
    s3_server, local_store, tmp_path, command, capsys
):
    nothing = s3_server.url("nothing") + "/"
    if command == "generate":
        args = ["generate", "--data", nothing, "--out", str(tmp_path / "o"), "--quiet"]
    elif command == "verify":
        args = ["verify", str(local_store), "--data", nothing, "--fraction", "0"]
    elif command == "show":
        args = ["show", str(local_store), "--data", nothing, "--sample", "0", "--view", "0"]
        args += ["--out", str(tmp_path / "v.png")]
    else:
        args = ["train", "--store", str(local_store), "--data", nothing, "--model", "resnet18"]
        args += ["--out", str(tmp_path / "run"), "--device", "cpu"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc in (1, 2) and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and nothing.rstrip("/") in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_shard_pattern_that_names_nothing_is_one_line(s3_server, tmp_path, where, capsys):
    base = str(tmp_path / "shards") if where == "local" else s3_server.url("noshards")
    pattern = f"{base}/train-{{000000..000003}}.tar"
    args = ["generate", "--data", pattern, "--out", str(tmp_path / "o"), "--quiet"]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc in (1, 2) and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and base in err, err
    assert not (tmp_path / "o").exists()


def test_a_remote_location_reads_in_a_forked_child(s3_photos, demo_data):
    """A DataLoader worker is a fork: the parent's s3fs client refuses to run there ("not
    fork-safe"); the child gets its own client on first use, and reads the same bytes."""
    import os

    folder = open_images(s3_photos)
    want = folder.read(0)  # the parent's client is in use (its loop thread running)
    pid = os.fork()
    if pid == 0:
        ok = folder.read(0) == want and folder.read(1) == (demo_data / folder.key(1)).read_bytes()
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert folder.read(0) == want  # the parent's client still works


def test_store_loader_from_packed_shards_on_s3_gives_the_local_folders_batches(
    s3_server, local_store, demo_data
):
    """The store was made from the local folder; the student reads the shards packed from it
    on S3 (another location, names through their index): the same batches, read ahead."""
    from teacher_store.images.pack import pack_images

    packed = pack_images(str(demo_data), s3_server.url("packed"), shard_bytes=200_000)
    assert packed.shards >= 2
    opts = {"img_size": 48, "batch_size": 4, "val_fraction": 0.2, "epochs": 1, "workers": 0}
    runs = []
    for data, threads in ((demo_data, 0), (packed.pattern, 0), (packed.pattern, 3)):
        with StoreLoader(str(local_store), data, read_threads=threads, **opts) as ld:
            runs.append(list(ld))
            assert ld.folder.content is not None  # every read checked against the store's
    assert len(runs[0]) >= 2
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for a, b in zip(runs[0], other, strict=True):
            assert_same_batch(a, b)
