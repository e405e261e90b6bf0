"""Each compose service's command, run for real outside Docker with its volumes remapped.

The commands come from the real Compose binary's resolved model (so the environment variables
are proven to reach them); every named volume becomes a folder under tmp_path shared by the
services that mount it, every bind mount keeps its host source: exactly Docker's mapping. The
demo-store job runs to completion, the API command serves its output and its own healthcheck
reaches /readyz, and the train service streams a short run from that API.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docker.test_compose import _commands, compose, compose_binary

pytestmark = pytest.mark.skipif(compose_binary() is None, reason="no Compose v2 binary")

SMALL = {
    "DISTILL_DEMO_DEVICE": "cpu",
    "DISTILL_DEMO_VIEWS": "2",
    "DISTILL_DEMO_IMG_SIZE": "64",
    "DISTILL_GEN_WORKERS": "0",
    "DISTILL_GEN_BATCH_SIZE": "8",
    "DISTILL_EPOCHS": "1",
    "DISTILL_TRAIN_BATCH_SIZE": "4",
    "DISTILL_TRAIN_IMG_SIZE": "64",
}
BIN = Path(sys.executable).parent


def _mounts(service: dict, tmp: Path) -> list[tuple[str, str]]:
    """(container target, host path) pairs, longest target first."""
    out = []
    for v in service.get("volumes", []):
        host = tmp / v["source"] if v["type"] == "volume" else Path(v["source"])
        host.mkdir(parents=True, exist_ok=True)
        out.append((v["target"], str(host)))
    return sorted(out, key=lambda m: -len(m[0]))


def _remap(token: str, mounts: list[tuple[str, str]]) -> str:
    for target, host in mounts:
        if token == target or token.startswith(target + "/"):
            return host + token[len(target) :]
    return token


def _argv(argv: list[str], mounts: list[tuple[str, str]]) -> list[str]:
    argv = [_remap(t, mounts) for t in argv]
    if argv[0] == "distill":
        return [str(BIN / "distill"), *argv[1:]]
    if argv[0] == "uvicorn":
        return [sys.executable, "-m", "uvicorn", *argv[1:]]
    return argv


def _env(service: dict, mounts: list[tuple[str, str]]) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for k, v in (service.get("environment") or {}).items():
        if k.startswith("DISTILL_") and v:
            # A path, or NAME=PATH pairs (DISTILL_DATA): each path is remapped.
            pairs = [p.partition("=") for p in v.split(",")]
            env[k] = ",".join(n + eq + _remap(path, mounts) if eq else _remap(n, mounts)
                              for n, eq, path in pairs)  # fmt: skip
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_compose_commands_run_outside_docker(tmp_path: Path) -> None:
    import json

    r = compose("config", "--format", "json", profiles=("train",), env=SMALL)
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]

    job = services["demo-store"]
    mounts = _mounts(job, tmp_path)
    for argv in _commands(job):
        done = subprocess.run(
            _argv(argv, mounts), env=_env(job, mounts), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    assert (tmp_path / "stores" / "demo" / "_distill" / "manifest.json").is_file()

    api, port = services["api"], _free_port()
    mounts = _mounts(api, tmp_path)
    argv = _argv(api["command"], mounts)
    argv[argv.index("0.0.0.0")] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    server = subprocess.Popen(argv, env=_env(api, mounts), stderr=subprocess.PIPE, text=True)
    try:
        probe = [sys.executable if t == "python" else t for t in api["healthcheck"]["test"][1:]]
        probe = [t.replace(":8000/", f":{port}/") for t in probe]
        deadline = time.time() + 60
        while subprocess.run(probe, capture_output=True).returncode != 0:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.time() < deadline, "API never became ready"
            time.sleep(0.3)

        train = services["train"]
        mounts = _mounts(train, tmp_path)
        argv = [t.replace("http://api:8000", f"http://127.0.0.1:{port}") for t in train["command"]]
        done = subprocess.run(
            _argv(argv, mounts), env=_env(train, mounts), capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "trained tiny_vit_5m_224" in done.stdout
        assert (tmp_path / "runs" / "demo" / "last.pth").is_file()
    finally:
        server.terminate()
        server.wait(timeout=30)
