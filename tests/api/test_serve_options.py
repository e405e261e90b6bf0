"""`distill serve` option errors: checked in the launching process, one line per bad setting
(flag or DISTILL_ variable), exit 2, before uvicorn starts a worker (each of which printed a
traceback)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args, env, want",
    [
        (
            ["--max-block", "0", "--max-header-bytes", "5", "--header-timeout", "0"],
            {},
            [
                "--max-block 0: must be an integer in [1, 4194304]",
                "--header-timeout 0.0: must be a number > 0",
                "--max-header-bytes 5: must be an integer in [1024, 1048576]",
            ],
        ),
        (
            ["--max-block", "100000000000"],
            {},
            ["--max-block 100000000000: must be an integer in [1, 4194304]"],
        ),
        # set by a variable, not a flag: the message names the variable
        (
            [],
            {"DISTILL_MAX_BLOCK": "0"},
            ["DISTILL_MAX_BLOCK 0: must be an integer in [1, 4194304]"],
        ),
        (
            [],
            {"DISTILL_RETRY_AFTER_S": "-1"},
            ["DISTILL_RETRY_AFTER_S -1: must be an integer >= 0"],
        ),
    ],
)
def test_serve_bad_settings_are_one_line_each_before_any_worker(tmp_path, args, env, want):
    cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root", str(tmp_path), *args]
    r = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [f"distill serve: error: {w}" for w in want]
