"""bench/images.py at its quick size: the four sources replay the same images through the
student's path, generation from the S3 shards writes the folder's store byte for byte, and the
printed figures are the run's own (each row the best of its rounds, each ratio their quotient)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a moto server and two generations with the real Lite0 teacher
def test_images_bench_quick(tmp_path: Path) -> None:
    out = tmp_path / "images.json"
    cmd = [sys.executable, str(REPO / "bench" / "images.py"), "--quick", "--json", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["images"] == 34 and rec["shards"] >= 2 and rec["identical"] is True
    best = {name: max(r[0] for r in rounds) for name, rounds in rec["replay"].items()}
    assert len(best) == 5 and all(v > 0 for v in best.values())
    for name, ips in best.items():  # each row: the best round of that source
        rows = [x for x in done.stdout.splitlines() if re.match(rf"\|\s+\(\S+\) {name} \|", x)]
        assert len(rows) == 1, (name, done.stdout)
        assert rows[0].split("|")[2].strip() == f"{ips:.1f}", (name, rows[0])
    a = best["folder"]
    want = (
        f"replay (c)/(a) {best['tar on S3'] / a:.2f} (goal >= 0.8: "
        f"{'met' if best['tar on S3'] / a >= 0.8 else 'NOT met'}), (b)/(a) {best['tar'] / a:.2f}, "
        f"(d)/(a) {best['folder on S3'] / a:.2f}"
    )
    assert want in done.stdout, done.stdout
    cpu = {name: min(r[1] for r in rounds) for name, rounds in rec["replay"].items()}
    line = next(x for x in done.stdout.splitlines() if x.startswith("client CPU per image"))
    assert f"(c) {cpu['tar on S3'] / cpu['folder']:.2f}" in line, line
    assert f"(d) {cpu['folder on S3'] / cpu['folder']:.2f}" in line, line
    g = {name: max(v) for name, v in rec["generation"].items()}
    ratio = g["tar on S3"] / g["folder"]
    assert f"(c)/(a) {ratio:.2f} (goal >= 0.9" in done.stdout
    assert "stores byte-identical: True" in done.stdout
