"""`distill generate --like A --teacher B`: a second teacher on exactly A's views.

A: the real Lite0 teacher on the 17 demo photos (64 px, K=5). B: a second real network,
``resnet10t`` with random weights (timm init, seed 0: a teacher whose outputs differ from A's),
loaded from a checkpoint file like any non-builtin teacher. Local disk, a service URL as the
source, and moto's S3 (where the two stores then train a student as an ensemble).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from teacher_store.cli import main
from teacher_store.store.arrays import LocalStore
from teacher_store.store.schema import view_identity
from tests.s3_fixtures import S3Server, local_objects
from tests.store_fixtures import LiveServer, generate_small, student_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def second_teacher(tmp_path_factory) -> Path:
    import timm
    import torch

    path = tmp_path_factory.mktemp("teacher") / "resnet10t-random.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet10t", num_classes=1000).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def store_a(one_thread, tmp_path_factory, demo_data) -> Path:
    return generate_small(demo_data, tmp_path_factory.mktemp("like") / "a")


def _like_args(data: Path, like: str, out: str, ckpt: Path, *extra: str) -> list[str]:
    # float16 log-probs: a random network's small probabilities stay non-zero
    flags = ["--topk", "5", "--batch-size", "4", "--workers", "0", "--quiet"]
    flags += ["--value-encoding", "logprob-f16"]
    teacher = ["--teacher", "resnet10t", "--checkpoint", str(ckpt)]
    return ["generate", "--data", str(data), "--like", like, "--out", out, *teacher, *flags, *extra]


def _same_views(a: LocalStore, b: LocalStore, data: Path) -> None:
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.views.replay import Replayer

    folder = ImageFolder.scan(data)
    ra, rb = Replayer(folder, a.attrs), Replayer(folder, b.attrs)
    for slot, sample in ((0, 0), (1, 7), (1, 16)):
        assert ra.params(slot, sample) == rb.params(slot, sample)
        pa, pb = ra.render(slot, sample, 64).pixels, rb.render(slot, sample, 64).pixels
        assert bool((pa == pb).all())


def test_like_writes_a_views_with_the_other_teachers_targets(
    store_a, second_teacher, demo_data, tmp_path
):
    from teacher_store.verify import verify_store

    out = tmp_path / "b"
    assert main(_like_args(demo_data, str(store_a), str(out), second_teacher)) == 0
    a, b = LocalStore(store_a), LocalStore(out)
    assert view_identity(b.attrs) == view_identity(a.attrs)
    assert b.attrs.like == {
        "view_identity": view_identity(a.attrs),
        "teacher": "efficientnet_lite0",
    }
    for field in ("dataset", "store_seed", "recipe", "views", "base_views", "num_samples"):
        assert getattr(b.attrs, field) == getattr(a.attrs, field), field
    assert b.attrs.teacher["input_size"] == a.attrs.teacher["input_size"]  # A's 64 px
    assert b.attrs.teacher["name"] == "resnet10t"
    _same_views(a, b, demo_data)
    from teacher_store.info import format_info, store_info

    info = store_info(str(out))
    assert info["views_of"]["view_identity"] == view_identity(a.attrs)
    assert "the views of a store of teacher efficientnet_lite0 (--like)" in format_info(info)
    for slot in range(2):
        ba, bb = a.read_block(slot, 0, 17), b.read_block(slot, 0, 17)
        np.testing.assert_array_equal(ba.valid, bb.valid)
        assert (ba.ids[:, 0] != bb.ids[:, 0]).any()  # another teacher's targets
    report = verify_store(str(out), str(demo_data), fraction=0.5, checkpoint=str(second_teacher))
    assert report.ok, report.reason  # B's teacher, re-run on the replayed views, agrees


def test_like_refuses_other_views_in_one_line(store_a, second_teacher, demo_data, tmp_path, capsys):
    out = tmp_path / "b"
    args = _like_args(demo_data, str(store_a), str(out), second_teacher, "--seed", "3")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seed 3 is not the store's 0; drop --seed" in err
    other = tmp_path / "other-data"
    shutil.copytree(demo_data, other)
    next(p for p in sorted(other.rglob("*.*"))).unlink()  # one image fewer: another dataset
    assert main(_like_args(other, str(store_a), str(out), second_teacher)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data is not the dataset of the --like store" in err
    assert "16 samples instead of 17" in err
    assert not (out / "_distill" / "manifest.json").exists()


def test_like_from_a_service_onto_s3_then_train_the_ensemble_from_s3(
    store_a, second_teacher, demo_data, tmp_path, s3_server: S3Server
):
    """The source read through the service, the new store written on S3; both stores then
    read from S3 by `distill train --store A --store B` (two steps)."""
    from api.main import create_app
    from api.settings import Settings
    from student.train import run_train

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(store_a, root / "a")
    fs = s3_server.fs()
    url_a, url_b = s3_server.url("like-a"), s3_server.url("like-b")
    for key, data in local_objects(store_a).items():
        fs.pipe_file(f"{url_a.removeprefix('s3://')}/{key}", data)
    with LiveServer(create_app(Settings(root=root))) as live:
        src = f"{live.url}/v1/stores/a"
        assert main(_like_args(demo_data, src, url_b, second_teacher)) == 0
    got = s3_server.objects(url_b)
    assert "_distill/manifest.json" in got
    attrs_b = json.loads(got["zarr.json"])["attributes"]
    assert attrs_b["like"]["view_identity"] == view_identity(LocalStore(store_a).attrs)
    run = tmp_path / "run"
    cfg = student_config(url_a, demo_data, run, epochs=1, max_steps=2)
    cfg = cfg.model_copy(update={"store": [url_a, url_b]})
    summary = run_train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["loss"])
    assert json.loads((run / "config.json").read_text())["store"] == [url_a, url_b]
