"""`make docker-test` (docker/stack_test.py) where it cannot run: one line, exit 0, nothing started.

The test itself (images built, stack up, bytes compared) runs from `.ci/run` after the suite:
it needs root and minutes, so the suite only checks that it steps aside cleanly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "stack_test.py"


def _run(
    env: dict[str, str], user: int | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(SCRIPT)],
        env=env,
        user=user,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_skips_with_one_line_when_told():
    r = _run({**os.environ, "DISTILL_SKIP_DOCKER_TEST": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "docker-test: skipped: DISTILL_SKIP_DOCKER_TEST=1\n"


def test_skips_with_one_line_when_not_root():
    env = {k: v for k, v in os.environ.items() if k != "DISTILL_SKIP_DOCKER_TEST"}
    if os.geteuid() == 0:
        # Run it as nobody, with the system Python (the venv's may live under /root): the skip
        # path imports the standard library only and writes nothing.
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        try:
            r = _run({**env, "HOME": "/tmp"}, user=65534, python=python)
        except PermissionError:
            pytest.skip(f"uid 65534 cannot run {python}")
        if "Permission denied" in r.stderr:
            pytest.skip(f"uid 65534 cannot read {SCRIPT}")
    else:
        r = _run(env)
    assert r.returncode == 0, r.stderr
    (line,) = r.stdout.splitlines()
    assert line.startswith("docker-test: skipped: not root"), line
    assert not r.stderr, r.stderr
