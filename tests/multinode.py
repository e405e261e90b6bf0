"""Multi-node jobs on one machine: one real torchrun launcher per node, c10d rendezvous on
127.0.0.1, as a cluster would start them (docs/cluster.md)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import fsspec

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(threads: int = 1, **extra: str) -> dict[str, str]:
    """A launcher's environment: offline hub, ``threads`` torch threads per process (torchrun
    sets OMP_NUM_THREADS=1 only when it starts several processes per node)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), **extra}


def run_nodes(
    argvs: Sequence[Sequence[str]], envs: Sequence[Mapping[str, str]], timeout: float = 240
) -> list[subprocess.CompletedProcess[str]]:
    """A job of ``len(argvs)`` nodes x 1 process: one torchrun launcher per node running
    ``distill argvs[i]`` with ``envs[i]``, meeting at a c10d rendezvous on a free local port.

    c10d gives global ranks in the order the launchers join, whatever ``--node-rank`` says.
    """
    endpoint = f"127.0.0.1:{free_port()}"
    procs = []
    for node, (argv, env) in enumerate(zip(argvs, envs, strict=True)):
        cmd = [
            str(BIN / "torchrun"), "--nnodes", str(len(argvs)), "--node-rank", str(node),
            "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
            "--rdzv-id", "distill-test", "--no-python", str(BIN / "distill"), *argv,
        ]  # fmt: skip
        procs.append(_start(cmd, env))
    try:
        return [_finish(proc, timeout) for proc in procs]
    finally:
        for proc in procs:
            _kill_group(proc)


def run_one_node(
    argv: Sequence[str], nproc: int, env: Mapping[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``distill argv`` as one node x ``nproc`` processes (torchrun --standalone)."""
    cmd = [
        str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(nproc), "--no-python",
        str(BIN / "distill"), *argv,
    ]  # fmt: skip
    proc = _start(cmd, env)
    try:
        return _finish(proc, timeout)
    finally:
        _kill_group(proc)


def _start(cmd: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    # A session of its own: a launcher that hangs is killed with its workers (killing torchrun
    # alone would leave them waiting in a collective).
    return subprocess.Popen(
        cmd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill what is left of a launcher's process group (nothing, after a clean exit)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def store_digest(address: str) -> dict[str, str]:
    """sha256 of every object under the store ``address`` (a folder or an fsspec URL), by key."""
    fs, root = fsspec.core.url_to_fs(address)
    root = root.rstrip("/")
    return {
        path[len(root) + 1 :]: hashlib.sha256(fs.cat_file(path)).hexdigest()
        for path in sorted(fs.find(root))
    }
