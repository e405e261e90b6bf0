"""bench/scale.py end to end at a tiny N: every step's code path (real writer, real CLI, real
uvicorn and HTTP client, the trainer's epoch plan and block cache, a real file tree) runs in its
own process and reports a time and a peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "scale.py"


@pytest.mark.slow  # seven subprocesses, one of them a uvicorn server
def test_scale_bench_runs_every_step_at_a_tiny_n(tmp_path):
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(SCRIPT), "--samples", "300", "--views", "4", "--files", "300",
           "--batch-size", "32", "--store-root", str(tmp_path / "stores"),
           "--tree", str(tmp_path / "tree"), "--json", str(out),
           # epoch_service is _epoch (the epoch step) through _start_server (the serve step)
           "--steps", "write,info,verify,serve,epoch,order,tree"]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=240, cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads(out.read_text())
    res = rep["results"]
    assert set(res) == {"write", "info", "verify", "serve", "epoch", "order", "tree"}
    for step, got in res.items():
        assert got["ok"], (step, got.get("error"))
        assert got["seconds"] > 0 and got["peak_rss"] > 10 << 20, step
    w = res["write"]
    assert w["views"] == 300 * 4 and w["files"] == 3  # one unit: one shard file per array
    # Lite0-like synthetic targets compress like the real ones (17-19 B/view), not like
    # random ids (36-41 B) nor to nothing.
    assert 12 < w["bytes_per_view"] < 30
    assert "1 shard units complete, 3 shard files match" in res["verify"]["note"]
    assert res["serve"]["server_peak_rss"] > 10 << 20
    assert res["epoch"]["views"] == 288  # 270 training samples padded to 9 batches of 32
    assert res["tree"]["files"] == 300 and res["tree"]["rss_per_file"] >= 0
    cal = rep["calibration"]
    for k in ("topk_mass", "entropy", "overlap"):  # the fit matches the real teacher's stats
        assert abs(cal["synthetic"][k] - cal["real"][k]) < 0.15 * abs(cal["real"][k]) + 0.02, k
    assert "N = 300 samples x R = 4 x K = 10" in r.stdout
    assert "ImageNet-22k projection" in r.stdout


def test_scale_bench_layout_is_generates_default():
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from scale_steps import LAYOUT
    finally:
        sys.path.remove(str(REPO / "bench"))
    from teacher_store.generate import GenerateConfig

    fields = GenerateConfig.model_fields
    assert {k: fields[k].default for k in LAYOUT} == LAYOUT


def test_scale_bench_index_steps_quick_mode(tmp_path):
    """The index rows at a tiny N: the scan's core on the synthetic listing gives the table a
    sorted list of the same entries gives, saved and loaded in their own processes."""
    out = tmp_path / "scale.json"
    cmd = [sys.executable, str(SCRIPT), "--steps",
           "index,index_load,index_tuples,tar_index,tar_index_load", "--index-samples", "3000",
           "--index-classes", "7", "--index-tuple-samples", "1000", "--tar-shards", "4",
           "--json", str(out)]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    for step in ("index", "index_load", "index_tuples", "tar_index", "tar_index_load"):
        assert res[step]["ok"], (step, res[step].get("error"))
        assert res[step]["peak_rss"] > 10 << 20, step
    assert res["index"]["samples"] == res["index_load"]["samples"] == 3000
    # The tar index of the same listing, opened by TarShards (every check, the shards listed).
    tar = res["tar_index_load"]
    assert (
        tar["samples"] == 3000
        and tar["content"]
        and "shard-{000000..000003}.tar" in (res["tar_index"]["pattern"])
    )
    assert 3000 * 40 < tar["held_bytes"] < 3000 * 70  # flat arrays: ~28 B of key + 28 B
    assert "tar_index_load: peak RSS" in r.stdout
    assert res["index_tuples"]["samples"] >= 1000 and res["index_tuples"]["rss_per_sample"] > 0
    sys.path.insert(0, str(REPO / "bench"))
    try:
        from scale_steps import synthetic_listing
    finally:
        sys.path.remove(str(REPO / "bench"))
    from teacher_store.images.table import SampleTable

    names, listing = synthetic_listing(3000, 7)
    items = sorted((key, label, size) for label, entries in listing for key, size in entries)
    assert len(items) == 3000 and items[0][0].startswith(names[0] + "/")
    want = SampleTable.from_items(*(list(col) for col in zip(*items, strict=True)))
    assert res["index"]["sha256"] == want.names_sha256()
    assert res["index"]["labels_sha256"] == want.labels_sha256()
    assert "index steps: N = 3,000 files in 7 classes" in r.stdout
