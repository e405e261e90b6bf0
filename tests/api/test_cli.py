"""`distill serve` as users run it: a subprocess with uvicorn workers and settings from env."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from teacher_store.client import StoreClient

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _distill(*args: str) -> list[str]:
    return [sys.executable, "-m", "teacher_store.cli", *args]


def _listening(port: int) -> set[str]:
    """The IPv4/IPv6 addresses a socket listens on at ``port`` (from /proc/net/tcp*)."""
    import ipaddress

    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if int(hexport, 16) == port and state == "0A":  # 0A: LISTEN
                    raw = bytes.fromhex(addr)
                    # /proc prints each 32-bit word in host (little-endian) order
                    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                    found.add(str(ipaddress.ip_address(raw)))
    return found


def test_serve_binds_loopback_unless_told() -> None:
    from teacher_store.cli import build_parser

    args = build_parser().parse_args(["serve", "--root", "."])
    assert args.host == "127.0.0.1"
    assert (
        build_parser().parse_args(["serve", "--root", ".", "--host", "0.0.0.0"]).host == "0.0.0.0"
    )


@pytest.mark.slow
def test_distill_serve_with_workers_and_token(served: dict[str, Path], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("cli-token\n")
    port = _free_port()
    cmd = _distill("serve", "--root", str(served["root"]), "--port", str(port), "--workers", "2",
                   "--token-file", str(token_file), "--max-block", "100")  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        assert requests.get(f"{base}/v1/stores", timeout=5).status_code == 401
        assert _listening(port) == {"127.0.0.1"}  # loopback only, unless --host says otherwise
        detail = requests.get(
            f"{base}/v1/stores/demo", headers={"Authorization": "Bearer cli-token"}, timeout=5
        ).json()
        assert detail["max_block"] == 100  # settings reached the workers through the env
        client = StoreClient(f"{base}/v1/stores/demo", token="cli-token")
        want = StoreClient(served["demo"]).read_block(2, 0, 1000)
        np.testing.assert_array_equal(client.read_block(2, 0, 1000).values, want.values)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()


def test_distill_serve_bad_root(tmp_path: Path) -> None:
    r = subprocess.run(
        _distill("serve", "--root", str(tmp_path / "missing")),
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "is not a directory" in r.stderr
    r = subprocess.run(
        _distill("serve", "--root", str(tmp_path), "--token-file", str(tmp_path / "nope")),
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "token file" in r.stderr
    for data, words in (("demo", "write NAME=DIR"), (f"demo={tmp_path / 'no'}", "not a directory")):
        r = subprocess.run(
            _distill("serve", "--root", str(tmp_path), "--data", data),
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2 and words in r.stderr and "--data" in r.stderr, r.stderr


def _serve_fails(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _distill("serve", *args), cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_distill_serve_bad_options_are_one_line(served: dict[str, Path], tmp_path: Path) -> None:
    """Bad ports, worker counts, limits, hosts and levels: one line naming the option, exit
    2, no traceback (``--port 70000`` printed three tracebacks and exited 1)."""
    from concurrent.futures import ThreadPoolExecutor

    root = ["--root", str(served["root"])]
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = {
        "--port 70000": ["--port 70000", "1 to 65535"],
        "--port 0": ["--port 0", "1 to 65535"],
        "--port -1": ["--port -1"],
        "--port abc": ["--port", "invalid int value"],
        "--workers 0": ["--workers 0"],
        "--workers 1.5": ["--workers", "invalid int value"],
        # a typo that forked until the machine stalled
        "--workers 100000": ["--workers 100000", "1 to 256"],
        "--render-workers 100000": ["--render-workers 100000"],
        "--max-block -5": ["--max-block -5: must be an integer in [1, 4194304]"],
        "--cache-bytes -1": ["--cache-bytes -1"],
        "--timeout-keep-alive -1": ["--timeout-keep-alive -1"],
        "--render-workers 0": ["--render-workers 0"],
        "--log-level loud": ["--log-level", "invalid choice"],
        "--host no-such-host.invalid": ["cannot listen on --host no-such-host.invalid"],
        f"--port {busy.getsockname()[1]}": ["cannot listen", "in use"],
    }
    with busy, ThreadPoolExecutor(4) as pool:
        runs = {k: pool.submit(_serve_fails, [*root, *k.split()]) for k in cases}
        for flags, words in cases.items():
            r = runs[flags].result()
            lines = r.stderr.strip().splitlines()
            assert r.returncode == 2 and len(lines) == 1, (flags, r.stderr)
            assert "Traceback" not in r.stderr and lines[0].startswith("distill serve: error:")
            for w in words:
                assert w in lines[0], (flags, w, lines[0])


def test_distill_serve_data_flags_are_checked(served: dict[str, Path], tmp_path: Path) -> None:
    """A repeated ``--data NAME`` and a NAME the service cannot serve are refused in one line;
    a NAME with no store under the root (yet) is warned about in one line."""
    root = ["--root", str(served["root"])]
    images = tmp_path / "images"
    images.mkdir()
    r = _serve_fails([*root, "--data", f"demo={images}", "--data", f"demo={tmp_path}"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--data demo is given twice" in r.stderr
    r = _serve_fails([*root, "--data", f"my store={images}"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot serve a store so named" in r.stderr and "' '" in r.stderr
    # The warning comes before the start: a bad --max-block stops it there, for the test.
    r = _serve_fails([*root, "--data", f"ghost={images}", "--max-block", "0"])
    warning, error = r.stderr.strip().splitlines()
    assert (
        r.returncode == 2 and "warning: --data ghost=" in warning and "no store 'ghost'" in warning
    )
    assert "--max-block 0" in error
