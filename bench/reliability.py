"""The reliability suite in one run, printed as the table of docs/reliability.md.

1. ``pytest -m reliability`` with ``DISTILL_RELIABILITY_SCALE=full`` (the issue's sizes: 4
   trainers under a service crash, thousands of fuzzed headers, ...) and
   ``DISTILL_RELIABILITY_OUT`` set: each reliability test appends its figures there
   (``tests/reliability.py``); rows of one test (e.g. one per damage) are summed.
2. ``bench/load.py``: ``--clients`` async clients for ``--seconds`` against ``distill serve`` at
   ``--workers 1`` and ``2``.

Prints one table (test, load held, faults survived, inputs tried, data lost) and the load's
p50/p99 by endpoint; exits 1 if a test failed or any data was lost.

Usage: ``.venv/bin/python bench/reliability.py [--seconds 60] [--clients 64] [--no-load]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import REPO, load, table

COLUMNS = ["test", "load held", "faults survived", "inputs tried", "data lost"]


def run_tests(out: Path, extra: list[str]) -> tuple[int, str]:
    """pytest -m reliability at full scale; (exit status, its summary line)."""
    env = {**os.environ, "DISTILL_RELIABILITY_SCALE": "full", "DISTILL_RELIABILITY_OUT": str(out),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider",
           "--durations=15", *extra]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    print(done.stdout[-6000:], done.stderr[-2000:], sep="\n", flush=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    return done.returncode, lines[-1].strip("= ") if lines else "no output"


def merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per test name: counts summed, loads and notes listed once each."""
    merged: dict[str, dict[str, Any]] = {}
    for r in rows:
        m = merged.setdefault(r["test"], {"test": r["test"], "load_held": [], "note": [],
                                          "faults_survived": 0, "inputs_tried": 0,
                                          "data_lost": 0, "runs": 0})  # fmt: skip
        for k in ("faults_survived", "inputs_tried", "data_lost"):
            m[k] += int(r.get(k) or 0)
        m["runs"] += 1
        for k in ("load_held", "note"):
            if r.get(k) and r[k] not in m[k]:
                m[k].append(r[k])
    return list(merged.values())


def run_load(
    out: Path, clients: int, seconds: float, store: list[str]
) -> tuple[list[dict[str, Any]], int]:
    """bench/load.py at --workers 1 and 2; ``store``: more load.py arguments (its store size)."""
    cmd = [sys.executable, str(REPO / "bench" / "load.py"), "--clients", str(clients),
           "--seconds", str(seconds), "--workers", "1", "2", "--json", str(out)]  # fmt: skip
    cmd += store
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return (json.loads(out.read_text()) if out.exists() else []), done.returncode


def load_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for r in results:
        growth = max(r["rss_growth_mib"], default=0.0)
        rows.append({
            "test": f"load: {r['clients']} clients x {r['seconds']:g} s, --workers {r['workers']}",
            "load_held": [f"{r['requests'] / r['seconds']:.0f} req/s, {r['busy_503']} deliberate "
                          f"503s, cache {r['cache_bytes'] / 2**20:.0f} MiB, RSS +{growth:.1f} MiB "
                          f"(bound {r['rss_bound_mib']:.1f})"],
            "faults_survived": 0, "inputs_tried": r["requests"],
            "data_lost": r["data_lost"] + r["errors"], "note": [], "runs": 1,
        })  # fmt: skip
    return rows


def render(rows: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    body = [[r["test"] + (f" ({r['runs']} cases)" if r["runs"] > 1 else ""),
             "; ".join(r["load_held"]) or "-", r["faults_survived"], r["inputs_tried"],
             r["data_lost"]] for r in rows]  # fmt: skip
    text = [table(COLUMNS, body)]
    notes = [f"- {r['test']}: {'; '.join(r['note'])}" for r in rows if r["note"]]
    if notes:
        text += ["", *notes]
    if results:
        kinds = sorted({k for r in results for k in r["latency_ms"]})
        lat = [[f"--workers {r['workers']}", *(
            "{:.0f} / {:.0f}".format(*r["latency_ms"][k]) if k in r["latency_ms"] else "-"
            for k in kinds)] for r in results]  # fmt: skip
        text += ["", "p50 / p99 ms by endpoint under load:", "",
                 table(["server", *kinds], lat)]  # fmt: skip
    return "\n".join(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="load run length")
    p.add_argument("--clients", type=int, default=64, help="concurrent load clients")
    p.add_argument("--no-load", action="store_true", help="only the pytest part")
    p.add_argument("--no-tests", action="store_true", help="only the load part")
    p.add_argument("--load-views", type=int, help="R of the load's store (load.py's default)")
    p.add_argument("--load-samples", type=int, help="N of the load's store (load.py's default)")
    p.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = p.parse_args()
    print(f"reliability suite, {load()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file, load_file = Path(tmp) / "rows.jsonl", Path(tmp) / "load.json"
        status, summary = (
            (0, "skipped") if args.no_tests else run_tests(rows_file, args.pytest_args)
        )
        rows = []
        if rows_file.exists():
            rows = [json.loads(x) for x in rows_file.read_text().splitlines() if x.strip()]
        store = [f"--{k}={v}" for k, v in (("views", args.load_views),
                                             ("samples", args.load_samples)) if v]  # fmt: skip
        results, load_status = ([], 0) if args.no_load else run_load(
            load_file, args.clients, args.seconds, store)  # fmt: skip
    merged = merge(rows) + load_rows(results)
    print(f"\npytest -m reliability (full scale): {summary}; {load()}\n")
    print(render(merged, results))
    lost = sum(r["data_lost"] for r in merged)
    sys.exit(1 if status or load_status or lost else 0)


if __name__ == "__main__":
    main()
