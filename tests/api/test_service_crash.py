"""SIGKILL `distill serve` while `distill train` processes stream from it, then restart it: every
trainer rides out the outage (its reads retry within ``--retry-budget-s``) and ends with weights
identical to an uninterrupted run of the same config.

The normal suite runs 2 trainers; ``full_scale()`` (bench/reliability.py) runs the issue's 4.
All trainers share one config (only their run folders differ), so one uninterrupted run, streaming
at the same time from a second service that is never killed, is the reference for all of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch

from tests.reliability import full_scale, record

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["--model", "tf_efficientnetv2_b0", "--epochs", "2", "--batch-size", "4",
         "--img-size", "64", "--workers", "0", "--val-fraction", "0.2", "--checkpoint-every", "1",
         "--retry-budget-s", "180", "--quiet"]  # fmt: skip
RETRY_LINE = "retrying in"  # teacher_store.retry logs this line at each wait


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    # One thread in every process: bitwise-equal weights need equal thread counts.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO)}  # fmt: skip


def _serve(root: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root", str(root),
           "--port", str(port), "--workers", "1", "--log-level", "warning"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=out,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "distill serve did not become ready"
        time.sleep(0.1)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's whole process group (the one this test started)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _train(url: str, data: Path, out: Path) -> tuple[subprocess.Popen[bytes], Path]:
    err = out.with_suffix(".log")
    cmd = [sys.executable, "-m", "teacher_store.cli", "train", "--store", url,
           "--data", str(data), "--out", str(out), *TRAIN]  # fmt: skip
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
    return proc, err


def _wait_for(what: str, cond: object, procs: list[subprocess.Popen[bytes]], s: float) -> None:
    deadline = time.monotonic() + s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _weights(run: Path) -> tuple[dict[str, torch.Tensor], int]:
    state = torch.load(run / "last.pth", map_location="cpu", weights_only=False)
    return state["model"], state["step"]


@pytest.mark.slow
@pytest.mark.reliability
def test_service_sigkill_and_restart_under_trainers(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    n = 4 if full_scale() else 2
    port_ref, port = _free_port(), _free_port()
    servers = [_serve(photo_root, port_ref, tmp_path / "ref-serve.log")]
    servers.append(_serve(photo_root, port, tmp_path / "serve.log"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ref, _ = _train(f"http://127.0.0.1:{port_ref}/v1/stores/demo", demo_data, tmp_path / "ref")
        procs.append(ref)
        runs = [tmp_path / f"trainer{i}" for i in range(n)]
        logs = []
        for run in runs:
            proc, log = _train(f"http://127.0.0.1:{port}/v1/stores/demo", demo_data, run)
            procs.append(proc)
            logs.append(log)
        trainers = procs[1:]
        # Kill once every trainer has trained a step (it streams its targets from the service).
        started = lambda: all(  # noqa: E731
            (r / "last.pth").exists() or p.poll() is not None
            for r, p in zip(runs, trainers, strict=True)
        )
        _wait_for("every trainer's first step", started, procs, 300)
        assert all(p.poll() is None for p in trainers), "a trainer ended before the crash"
        _kill(servers[1])
        # Stay down until each trainer has hit the outage (or finished without needing it).
        felt = lambda: all(  # noqa: E731
            RETRY_LINE in log.read_text(errors="replace") or p.poll() is not None
            for log, p in zip(logs, trainers, strict=True)
        )
        _wait_for("the trainers to hit the outage", felt, procs, 300)
        servers[1] = _serve(photo_root, port, tmp_path / "serve.log")  # restart, same port
        for p in procs:
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for s in servers:
            _kill(s)
    retried = sum(RETRY_LINE in log.read_text(errors="replace") for log in logs)
    for p, log in zip(trainers, logs, strict=True):
        assert p.returncode == 0, log.read_text()[-2000:]
    assert ref.returncode == 0, (tmp_path / "ref.log").read_text()[-2000:]
    want, want_step = _weights(tmp_path / "ref")
    lost = 0
    for run in runs:
        got, step = _weights(run)
        lost += (step != want_step) + sum(not torch.equal(got[k], want[k]) for k in want)
    record(
        "service SIGKILL + restart under trainers",
        load_held=f"{n} `distill train` streaming",
        faults_survived=retried,
        inputs_tried=n,
        data_lost=lost,
        note=f"{retried} of {n} trainers retried through the outage; weights == uninterrupted",
    )
    assert retried >= 1, "no trainer needed the service while it was down"
    assert lost == 0
