import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from student.config import TrainConfig
from student.data import TargetCache, split_samples
from student.loader import StoreLoader
from student.train import _build_run, _Ctx, _step, run_train
from teacher_store.cli import main
from teacher_store.images.dataset import ImageFolder
from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import store_identity
from tests.store_fixtures import copy_store, replace_same_size, student_config


def _cfg(store, data, out, **kw) -> TrainConfig:
    return student_config(store, data, out, **{"epochs": 2, **kw})


def test_loss_decreases_on_a_fixed_batch(small_store, demo_data, tmp_path):
    cfg = _cfg(small_store, demo_data, tmp_path, lr=3e-3, warmup_epochs=0, sched="constant")
    reader = LocalStore(small_store)
    folder = ImageFolder.scan(demo_data)
    targets = TargetCache(reader, 8)
    loader = StoreLoader(targets, folder, img_size=64, batch_size=4, workers=0)
    batch = next(iter(loader))
    run = _build_run(cfg, reader.attrs.num_classes, 64, torch.device("cpu"))
    m = run.model.pretrained_cfg
    ctx = _Ctx(cfg, torch.device("cpu"), (m["mean"], m["std"]), targets, 100, 0)
    losses = [_step(run, ctx, batch) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses


def _weights(path):
    state = torch.load(path, map_location="cpu", weights_only=False)
    return state["model"], state["step"], state["cursor"]


def _same_threads_env() -> dict[str, str]:
    """The child computes with this process's thread count: float sums differ across counts."""
    threads = str(torch.get_num_threads())
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}


def test_resume_after_sigkill_matches_uninterrupted_run(small_store, demo_data, tmp_path):
    full = tmp_path / "full"
    run_train(_cfg(small_store, demo_data, full, epochs=3, checkpoint_every=1))
    killed = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "teacher_store.cli", "train", "--store", str(small_store),
        "--data", str(demo_data), "--model", "tf_efficientnetv2_b0", "--out", str(killed),
        "--epochs", "3", "--batch-size", "4", "--img-size", "64", "--workers", "0",
        "--val-fraction", "0.2", "--checkpoint-every", "1", "--quiet",
    ]  # fmt: skip
    env = _same_threads_env()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pth").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = _weights(killed / "last.pth")[1]
    assert step_at_kill >= 1
    run_train(_cfg(small_store, demo_data, killed, epochs=3, checkpoint_every=1, resume=True))
    a, step_a, cur_a = _weights(full / "last.pth")
    b, step_b, cur_b = _weights(killed / "last.pth")
    assert step_a == step_b and cur_a == cur_b
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_changed_options(small_store, demo_data, tmp_path):
    run_train(_cfg(small_store, demo_data, tmp_path, epochs=1))
    with pytest.raises(ValueError, match="lr"):
        run_train(_cfg(small_store, demo_data, tmp_path, epochs=1, lr=0.5, resume=True))


def _identity(store) -> str:
    return store_identity((store / "_distill" / "manifest.json").read_bytes())


def test_resume_on_another_store_is_refused(small_store, other_store, demo_data, tmp_path, capsys):
    """A run begun on one store never finishes on another teacher's targets: every checkpoint
    (mid-epoch ones too) records the store's identity and the dataset's fingerprint."""
    run = tmp_path / "run"
    run_train(_cfg(small_store, demo_data, run, epochs=2, max_steps=1, checkpoint_every=1))
    state = torch.load(run / "last.pth", map_location="cpu", weights_only=False)
    assert state["store"]["identity"] == _identity(small_store)
    assert state["store"]["dataset"] == ImageFolder.scan(demo_data).fingerprint().to_dict()
    assert state["cursor"]["store"] == _identity(small_store)
    before = (run / "last.pth").read_bytes()
    args = ["train", "--store", str(other_store), "--data", str(demo_data), "--model"]
    args += ["tf_efficientnetv2_b0", "--out", str(run), "--epochs", "2", "--batch-size", "4"]
    args += ["--img-size", "64", "--workers", "0", "--val-fraction", "0.2", "--quiet"]
    assert main([*args, "--resume", "--checkpoint-every", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"store {small_store} (identity {_identity(small_store)})" in err, err
    assert f"--store {other_store} is another store (identity {_identity(other_store)})" in err
    assert (run / "last.pth").read_bytes() == before  # nothing trained on the other store
    # The same store under another address (moved, or a copy) has the same identity: resumes.
    moved = copy_store(small_store, tmp_path / "moved")
    out = run_train(_cfg(moved, demo_data, run, epochs=2, checkpoint_every=1, resume=True))
    assert out["step"] > 1


def test_eval_replays_only_the_images_the_store_was_built_from(
    small_store, demo_data, tmp_path, capsys
):
    run = tmp_path / "run"
    run_train(_cfg(small_store, demo_data, run, epochs=1, max_steps=1))
    data = shutil.copytree(demo_data, tmp_path / "data")
    folder = ImageFolder.scan(data)
    held = int(split_samples(folder.labels, 0.2, 0)[1][0])  # eval replays held-out views
    path = data / folder.paths[held]
    replace_same_size(path)
    args = ["eval", "--checkpoint", str(run / "last.pth"), "--data", str(data)]
    assert main([*args, "--store", str(small_store)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"image {path} (sample {held})" in err, err


def test_metrics_config_and_eval(small_store, demo_data, tmp_path, capsys):
    s = run_train(_cfg(small_store, demo_data, tmp_path, epochs=1, ema=True))
    assert 0.0 <= s["teacher_agreement"] <= 100.0 and s["eval_samples"] > 0
    assert 0.0 <= s["train_agreement"] <= 100.0 and s["train_agreement_views"] > 0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"] == "tf_efficientnetv2_b0" and saved["ema"] is True
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == s["step"]
    assert main(["eval", "--checkpoint", str(tmp_path / "last.pth"), "--data", str(demo_data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["eval_samples"] == s["eval_samples"]
    assert out["teacher_agreement"] == pytest.approx(s["teacher_agreement"])


def test_mismatched_dataset_is_a_clear_error(small_store, demo_data, tmp_path, capsys):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(demo_data, other)
    shutil.copy(other / "cat" / "chelsea.png", other / "cat" / "chelsea2.png")
    args = ["train", "--store", str(small_store), "--data", str(other), "--model",
            "tf_efficientnetv2_b0", "--out", str(tmp_path / "r"), "--img-size", "64"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not the dataset the store was built from" in err and "Traceback" not in err
    assert "--allow-dataset-mismatch" in err


@pytest.mark.slow
def test_torchrun_two_ranks_see_disjoint_samples(small_store, demo_data, tmp_path):
    bindir = os.path.dirname(sys.executable)
    out = tmp_path / "ddp"
    cmd = [
        os.path.join(bindir, "torchrun"), "--nproc_per_node", "2", "--no-python",
        os.path.join(bindir, "distill"),
        "train", "--store", str(small_store), "--data", str(demo_data),
        "--model", "tf_efficientnetv2_b0", "--out", str(out), "--epochs", "1",
        "--batch-size", "2", "--img-size", "64", "--workers", "0", "--record-samples", "--quiet",
        "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    a = np.load(out / "samples" / "epoch0-rank0.npy")
    b = np.load(out / "samples" / "epoch0-rank1.npy")
    assert len(a) == len(b) > 0
    assert not set(a.tolist()) & set(b.tolist())
    assert (out / "last.pth").exists()


def test_sigkill_after_a_mid_epoch_checkpoint_resumes_exactly(small_store, demo_data, tmp_path):
    """--checkpoint-every N: a crash mid-epoch costs at most N steps, and the resumed run ends
    with the weights of an uninterrupted one (dropout on: the RNG stream must match too)."""
    kw = {"epochs": 2, "batch_size": 2, "checkpoint_every": 2, "drop_rate": 0.2}
    full = tmp_path / "full"
    run_train(_cfg(small_store, demo_data, full, **kw))
    killed = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "teacher_store.cli", "train", "--store", str(small_store),
        "--data", str(demo_data), "--model", "tf_efficientnetv2_b0", "--out", str(killed),
        "--epochs", "2", "--batch-size", "2", "--img-size", "64", "--workers", "0",
        "--val-fraction", "0.2", "--checkpoint-every", "2", "--drop-rate", "0.2", "--quiet",
    ]  # fmt: skip
    env = _same_threads_env()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pth").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, step_at_kill, cursor = _weights(killed / "last.pth")
    assert step_at_kill % 2 == 0 and cursor["epoch"] == 0 and cursor["position"] > 0, cursor
    assert not (killed / "metrics.jsonl").exists()  # killed before its first epoch ended
    run_train(_cfg(small_store, demo_data, killed, resume=True, **kw))
    a, step_a, cur_a = _weights(full / "last.pth")
    b, step_b, cur_b = _weights(killed / "last.pth")
    assert step_a == step_b > step_at_kill and cur_a == cur_b
    for k in a:
        assert torch.equal(a[k], b[k]), k
