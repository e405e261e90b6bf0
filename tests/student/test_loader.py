"""The public loader: the same batches as `distill train`, the documented loop, the split."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import student.train
from student import Cursor, StoreBatch, StoreLoader, store_loader
from student.cli import agreement_line
from student.data import ReplayDataset, split_samples
from student.loader_config import LoaderConfig
from student.train import run_train
from teacher_store.cli import main
from teacher_store.errors import ImageChangedError, StoreMismatch
from teacher_store.store.blockfmt import store_identity
from teacher_store.views.codec import mix64
from tests.store_fixtures import V1_FIXTURE, assert_same_batch, replace_same_size, student_config

TRAINING_PAGE = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def _split_reference(labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """The held-out ids by the definition, class by class (O(N x classes): small N only)."""
    n = len(labels)
    total = min(n - 1, max(1, round(val_fraction * n)))
    key = mix64(seed ^ 0x5EED5EED)
    rank = np.array([mix64(key ^ i) for i in range(n)], dtype=np.uint64)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * (total / n)
    quota = np.minimum(np.floor(share).astype(np.int64), counts - 1)
    keeps = (counts - quota) > 1
    for c in np.lexsort((classes, -(share - quota), ~keeps))[: total - int(quota.sum())]:
        quota[c] += 1
    held = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == c)
        held.append(members[np.argsort(rank[members], kind="stable")[:q]])
    return np.sort(np.concatenate(held))


def test_split_is_vectorized_but_picks_what_the_definition_picks():
    rng = np.random.default_rng(0)
    for n, classes, frac, seed in ((7, 2, 0.3, 0), (1000, 17, 0.1, 3), (20000, 300, 0.25, 1)):
        labels = np.sort(rng.integers(0, classes, n))
        train, held = split_samples(labels, frac, seed)
        assert np.array_equal(held, _split_reference(labels, frac, seed))
        assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(n))


def test_split_is_exact_stratified_and_never_empty():
    labels = [0] * 10 + [1] * 6 + [2] * 4
    train, held = split_samples(labels, 0.25, seed=3)
    assert len(held) == 5 and len(train) == 15
    assert sorted(np.concatenate([train, held]).tolist()) == list(range(20))
    counts = np.bincount(np.asarray(labels)[held], minlength=3)
    assert counts.tolist() == [3, 1, 1]  # shares 2.5 / 1.5 / 1: the tie goes to class 0
    again = split_samples(labels, 0.25, seed=3)
    assert np.array_equal(again[1], held)
    assert not np.array_equal(split_samples(labels, 0.25, seed=4)[1], held)
    for n in (2, 3, 5):  # the old hash split could hold out nothing on small folders
        tr, ho = split_samples(list(range(n)), 0.1, seed=0)
        assert len(ho) == 1 and len(tr) == n - 1
    assert len(split_samples([0, 0, 1], 0.0, 0)[1]) == 0
    # A class's only sample stays in training while another class can give one.
    _, ho = split_samples([0, 0, 0, 0, 1], 0.2, seed=0)
    assert ho.tolist() != [4] and len(ho) == 1


def test_loader_yields_the_batches_distill_train_sees(
    small_store, demo_data, tmp_path, monkeypatch
):
    seen: list[StoreBatch] = []
    step = student.train._step

    def record(run, ctx, batch):  # observes what the trainer consumes, then trains on it
        seen.append(batch)
        return step(run, ctx, batch)

    monkeypatch.setattr(student.train, "_step", record)
    cfg = student_config(small_store, demo_data, tmp_path / "run", epochs=2, workers=1)
    summary = run_train(cfg)
    steps = len(seen) // 2
    assert steps >= 2 and summary["step"] == 2 * steps

    opts = {"img_size": 64, "batch_size": 4, "workers": 0, "val_fraction": 0.2, "epochs": 2}
    with store_loader(str(small_store), demo_data, **opts) as loader:
        assert loader.steps_per_epoch == steps and len(loader.held_out) == summary["eval_samples"]
        mine = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            mine += list(loader)
        assert loader.cursor == Cursor(2, 0)
    assert len(mine) == len(seen)
    for a, b in zip(mine, seen, strict=True):
        assert_same_batch(a, b)
    assert {b.slot for b in mine} == {0, 1}
    assert all(b.topk_ids.shape == (4, 10) and b.valid.dtype == torch.bool for b in mine)

    # A resume cursor continues mid-epoch with the same batches.
    with StoreLoader(str(small_store), demo_data, cursor=Cursor(1, 1), **opts) as loader:
        rest = list(loader)
    for a, b in zip(rest, seen[steps + 1 :], strict=True):
        assert_same_batch(a, b)

    # The trainer's own LoaderConfig (TrainConfig.loader_config) is the keywords' config, and
    # a loader given it yields the same batches.
    from_train = cfg.loader_config(img_size=64)
    assert dataclasses.replace(from_train, workers=0) == LoaderConfig(**opts)
    with StoreLoader(str(small_store), demo_data, from_train, epoch=1) as loader:
        assert loader.config == from_train
        again = list(loader)
    for a, b in zip(again, seen[steps:], strict=True):
        assert_same_batch(a, b)


def test_a_cursor_taken_on_another_store_is_refused(small_store, other_store, demo_data):
    opts = {"img_size": 64, "batch_size": 4, "workers": 0, "val_fraction": 0.2}
    with StoreLoader(str(small_store), demo_data, **opts) as loader:
        next(iter(loader))
        cursor = loader.cursor
    identity = store_identity((small_store / "_distill" / "manifest.json").read_bytes())
    assert cursor == Cursor(0, 1) and cursor.store == identity
    saved = Cursor.from_dict(cursor.to_dict())  # as a checkpoint keeps it
    with pytest.raises(StoreMismatch) as e:
        StoreLoader(str(other_store), demo_data, cursor=saved, **opts)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and identity in msg and str(other_store) in msg
    assert e.value.new in msg and e.value.new != identity
    # The same store takes it; a cursor saved before cursors kept the store is taken too.
    with StoreLoader(str(small_store), demo_data, cursor=saved, **opts) as loader:
        assert loader.position == 1
    legacy = {"epoch": 0, "position": 1, "version": 1}
    with StoreLoader(str(other_store), demo_data, cursor=Cursor.from_dict(legacy), **opts):
        pass


def test_an_image_replaced_by_one_of_the_same_size_is_never_trained_on(
    small_store, demo_data, tmp_path, capsys
):
    """The student checks each image's bytes against the store's digest where it reads them
    (in a DataLoader worker here); the fingerprint (names, sizes) cannot tell."""
    import shutil

    data = Path(shutil.copytree(demo_data, tmp_path / "data"))
    opts = {"img_size": 64, "batch_size": 4, "val_fraction": 0.2}
    with StoreLoader(str(small_store), data, workers=0, **opts) as loader:
        i = int(loader.train_samples[0])
        path = data / loader.folder.paths[i]
    replace_same_size(path)
    with (
        StoreLoader(str(small_store), data, workers=1, **opts) as loader,
        pytest.raises(ImageChangedError) as e,
    ):
        list(loader)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and f"image {path} (sample {i})" in msg, msg
    assert (e.value.sample, e.value.path) == (i, str(path))
    args = ["train", "--store", str(small_store), "--data", str(data), "--model"]
    args += ["tf_efficientnetv2_b0", "--out", str(tmp_path / "run"), "--epochs", "1"]
    args += ["--batch-size", "4", "--img-size", "64", "--workers", "1", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"distill train: error: {msg}"], err


def test_a_store_made_before_content_digests_loads_with_a_note(demo_data, caplog):
    with StoreLoader(str(V1_FIXTURE), demo_data, batch_size=4, workers=0) as loader:
        assert loader.folder.content is None
        batch = next(iter(loader))
    assert batch.valid.any()
    notes = [r.getMessage() for r in caplog.records if "content digests" in r.getMessage()]
    assert len(notes) == 1 and "checked by name and size only" in notes[0]


def test_online_baseline_renders_the_teacher_input_at_the_teacher_size(small_store, demo_data):
    with StoreLoader(
        str(small_store), demo_data, img_size=48, batch_size=4, workers=0, teacher_size=80,
        with_targets=False,
    ) as loader:  # fmt: skip
        batch = next(iter(loader))
        assert batch.images.shape == (4, 3, 48, 48) and batch.topk_ids.shape == (4, 0)
        assert batch.teacher_images is not None and batch.teacher_images.shape == (4, 3, 80, 80)
        big = ReplayDataset(loader.folder, loader.attrs, 80)
        for i, s in enumerate(batch.samples.tolist()):
            assert torch.equal(batch.teacher_images[i], big[(batch.slot, s)]["image"])


def _documented_loop() -> str:
    text = TRAINING_PAGE.read_text()
    m = re.search(r"<!-- store-loader-loop -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/training.md lost its store-loader loop"
    return m.group(1)


def test_documented_loop_runs_as_written(small_store, demo_data, tmp_path, monkeypatch):
    code = _documented_loop()
    assert len(code.splitlines()) <= 35
    for name, value in (
        ("STORE", repr(str(small_store))),
        ("DATA", repr(str(demo_data))),
        ("EPOCHS, IMG_SIZE, BATCH", "2, 64, 4"),
    ):
        code, n = re.subn(rf"^{re.escape(name)} = .*$", f"{name} = {value}", code, flags=re.M)
        assert n == 1, name
    monkeypatch.chdir(tmp_path)
    env: dict = {}
    exec(compile(code, str(TRAINING_PAGE), "exec"), env)  # the page's code, only the paths changed
    assert math.isfinite(float(env["loss"].detach()))
    ckpt = torch.load(tmp_path / "ckpt.pth", weights_only=False)
    assert Cursor.from_dict(ckpt["cursor"]) == Cursor(2, 0)


def test_train_prints_agreement_on_training_and_held_out_views(
    small_store, demo_data, tmp_path, capsys
):
    args = ["train", "--store", str(small_store), "--data", str(demo_data), "--model"]
    args += ["tf_efficientnetv2_b0", "--out", str(tmp_path), "--epochs", "1", "--batch-size", "4"]
    args += ["--img-size", "64", "--workers", "0", "--val-fraction", "0.2", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("agreement with the teacher"))
    assert re.search(r"% on 14 training views \(view slot 0", line), line
    assert re.search(r"% on 3 held-out views", line), line
    assert "no held-out views" in agreement_line({"eval_samples": 0})


@pytest.mark.parametrize("bad", [{"batch_size": 64}, {"view_schedule": "stretch"}])
def test_loader_refuses_bad_options(small_store, demo_data, bad):
    with pytest.raises(ValueError, match=r"batch size|needs epochs"):
        StoreLoader(str(small_store), demo_data, img_size=64, workers=0, **bad)


_MISUSE = [
    ({"world_size": 0}, "world_size 0: must be an integer in [1, 65536]"),
    ({"world_size": -1}, "world_size -1: must be an integer in [1, 65536]"),
    ({"world_size": 2, "rank": 2}, "rank 2: must be an integer in [0, 1] (world_size 2)"),
    ({"rank": -1}, "rank -1: must be an integer in [0, 0] (world_size 1)"),
    ({"img_size": 0}, "img_size 0: must be an integer in [8, 4096]"),
    ({"img_size": 100000}, "img_size 100000: must be an integer in [8, 4096]"),
    ({"teacher_size": 5}, "teacher_size 5: must be an integer in [8, 4096]"),
    ({"val_fraction": -0.5}, "val_fraction -0.5: must be a number in [0, 1)"),
    ({"val_fraction": math.nan}, "val_fraction nan: must be a number in [0, 1)"),
    ({"val_fraction": 1.0}, "val_fraction 1.0: must be a number in [0, 1)"),
    ({"seed": 2**70}, f"seed {2**70}: must be an integer in [0, 2**64 - 1]"),
    ({"seed": -1}, "seed -1: must be an integer in [0, 2**64 - 1]"),
    ({"batch_size": 0}, "batch_size 0: must be an integer in [1, 8192]"),
    ({"workers": -1}, "workers -1: must be an integer in [0, 256]"),
    ({"epoch": -1}, "epoch -1: must be an integer in [0, 2147483647]"),
    ({"epoch": 3, "epochs": 3}, "epoch 3: must be an integer in [0, 2]"),
    ({"cursor": Cursor(-1, 0)}, "cursor epoch -1: must be an integer in [0, 2147483647]"),
    ({"cursor": Cursor(0, -2)}, "cursor position -2: must be an integer in [0, 2147483648]"),
]


@pytest.mark.parametrize("kw, want", _MISUSE)
def test_loader_misuse_is_a_one_line_error_naming_the_argument(small_store, demo_data, kw, want):
    """Checked before the folder is scanned: a missing folder is never reached."""
    from student import LoaderArgumentError

    with pytest.raises(LoaderArgumentError) as e:
        StoreLoader(str(small_store), demo_data / "never-scanned", **{"workers": 0, **kw})
    assert isinstance(e.value, ValueError) and str(e.value) == want


@pytest.mark.parametrize(
    "kw, want", [(k, w) for k, w in _MISUSE if not {"epoch", "cursor"} & set(k)]
)
def test_loader_config_refuses_what_the_loader_refuses(kw, want):
    """The same checks on the torch-free LoaderConfig (TrainConfig.loader_config builds one)."""
    from student import LoaderArgumentError, LoaderConfig

    with pytest.raises(LoaderArgumentError) as e:
        LoaderConfig(**kw)
    assert str(e.value) == want


def test_loader_refuses_a_cursor_past_the_epochs_end(small_store, demo_data):
    """Cursor(3, 1000) used to yield nothing and silently skip epoch 3."""
    from student import LoaderArgumentError

    kw = {"img_size": 64, "batch_size": 4, "workers": 0}
    with StoreLoader(str(small_store), demo_data, **kw) as loader:
        steps = loader.steps_per_epoch
        with pytest.raises(LoaderArgumentError, match=rf"^start {steps + 1}: .*\[0, {steps}\]"):
            loader.set_epoch(0, steps + 1)
        assert loader.plan.start == 0  # a refused start leaves the loader as it was
    for bad in (Cursor(3, 1000), Cursor(0, steps + 1)):
        with pytest.raises(LoaderArgumentError) as e:
            StoreLoader(str(small_store), demo_data, cursor=bad, **kw)
        msg = str(e.value)
        assert msg.startswith(f"cursor position {bad.position}: must be an integer in [0, {steps}]")
        assert "batch_size 4, world_size 1" in msg and "\n" not in msg
    # The end of an epoch (a checkpoint after its last batch) is still a valid cursor.
    with StoreLoader(str(small_store), demo_data, cursor=Cursor(1, steps), **kw) as loader:
        assert list(loader) == [] and loader.cursor == Cursor(2, 0)
    with StoreLoader(str(small_store), demo_data, cursor=Cursor(1, steps - 1), **kw) as loader:
        assert len(list(loader)) == 1
