"""bench/gpu_check.py end to end on CPU at tiny sizes (its --device cpu --tiny mode), so that
the GPU check is known to run before it first meets a GPU."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"
pytestmark = pytest.mark.slow  # subprocesses: generate, verify, serve, three training runs
STEPS = ("setup", "generate", "bare", "busy", "train", "cuda_tests", "cpu_vs_device", "decode")


def _check(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--budget-s", "240"]
    r = subprocess.run(
        [*cmd, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    js = out / "gpu_check.json"
    assert js.is_file(), r.stderr[-2000:]
    return r, json.loads(js.read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    r, report = _check(out)
    return r, report, out


def _md_rows(md: str) -> dict[str, dict[str, str]]:
    """step -> {figure: value} from the Markdown table."""
    rows: dict[str, dict[str, str]] = {}
    step = ""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("step",) or set(cells[0]) == {"-"}:
            continue
        step = cells[0] or step
        rows.setdefault(step, {})[cells[3]] = cells[4]
    return rows


def test_every_step_runs_and_reports_positive_figures(tiny):
    r, report, out = tiny
    steps = report["steps"]
    assert r.returncode == 0, r.stderr[-2000:]
    assert tuple(steps) == STEPS
    for name, s in steps.items():
        if name == "cuda_tests":
            assert s["status"] == "skipped" and s["reason"].startswith("no CUDA"), s
            continue
        assert s["status"] == "ok", (name, s)
        assert s["figures"], name
        for k, v in s["figures"].items():
            assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, (name, k, v)
    f = {n: s["figures"] for n, s in steps.items()}
    assert f["generate"]["views"] == 17 * 2 and f["generate"]["views_per_s"] > 0
    assert f["bare"]["bare_fp32_cl_views_per_s"] > 0 and f["bare"]["generate_over_bare"] > 0
    assert 0 < f["busy"]["teacher_busy"] <= 1.01 and f["busy"]["forwards"] >= 1
    for k in ("service", "memory", "online"):
        assert f["train"][f"img_per_s_{k}"] > 0
    assert f["train"]["block_requests"] > 0  # the service really fed the (a) run
    # Two CPU stores of one config on one machine: the same bytes, so full agreement.
    cmp = f["cpu_vs_device"]
    assert cmp["views_compared"] == 34 and cmp["ids_agreement"] == 1.0
    assert cmp["max_abs_dp_shared_ids"] == 0.0
    # torchvision's CPU JPEG decoder gives Pillow's pixels on these photos.
    dec = f["decode"]
    assert dec["images"] == 17 and dec["max_abs_pixel_diff"] == 0
    assert dec["pillow_img_per_s"] > 0 and dec["batched_img_per_s"] > 0
    assert f"figures: {out / 'gpu_check.json'}" in r.stdout


def test_markdown_table_lists_every_figure(tiny):
    _, report, out = tiny
    rows = _md_rows((out / "gpu_check.md").read_text())
    assert set(rows) == set(STEPS)
    for name, s in report["steps"].items():
        for k, v in s["figures"].items():
            assert k in rows[name], (name, k)
            assert float(rows[name][k]) == pytest.approx(v, rel=1e-3, abs=1e-9), (name, k)
    assert rows["cuda_tests"] == {"-": "-"}


def test_a_failing_step_is_reported_and_fails_the_run(tmp_path):
    r, report = _check(tmp_path, "--teacher", "no_such_timm_model")
    steps = report["steps"]
    assert r.returncode == 1
    assert steps["setup"]["status"] == "failed"
    assert "no_such_timm_model" in steps["setup"]["reason"]
    assert "\n" not in steps["setup"]["reason"]
    for name in ("generate", "bare", "busy", "train", "cpu_vs_device", "decode"):
        assert steps[name]["status"] == "skipped", name
        assert steps[name]["reason"].startswith("needs "), name
    assert "FAILED steps: setup" in r.stderr
    assert "no_such_timm_model" in (tmp_path / "gpu_check.md").read_text()
