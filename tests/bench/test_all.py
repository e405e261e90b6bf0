"""bench/all.py: every benchmark script is listed, a quick run writes the page from the run's
own output, and a benchmark past its time limit is stopped with every process it started."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import all as bench_all  # noqa: E402

sys.path.remove(str(REPO / "bench"))


def test_every_script_in_bench_is_a_listed_benchmark_or_a_known_helper() -> None:
    scripts = {p.stem for p in (REPO / "bench").glob("*.py")}
    listed = {b.file for b in bench_all.BENCHMARKS}
    assert scripts == listed | bench_all.NOT_BENCHMARKS
    assert not listed & bench_all.NOT_BENCHMARKS
    names = [b.name for b in bench_all.BENCHMARKS]
    assert len(names) == len(set(names))


def _row(page: str, name: str) -> list[str]:
    (line,) = [x for x in page.splitlines() if x.startswith(f"| {name}: ")]
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_quick_run_writes_the_page_from_the_run(tmp_path: Path) -> None:
    page, logs = tmp_path / "bench.md", tmp_path / "logs"
    cmd = [sys.executable, str(REPO / "bench" / "all.py"), "--quick", "--only", "load", "serve"]
    cmd += ["--out", str(page), "--logs", str(logs)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    text = page.read_text()
    assert "quick run" in text and text.count("\n| load: ") == 1 and text.count("\n| serve: ") == 1
    cpu = next(
        x.split(":", 1)[1].strip()
        for x in Path("/proc/cpuinfo").read_text().splitlines()
        if x.startswith("model name")
    )
    for name in ("load", "serve"):
        _what, command, machine, loads, wall, result = _row(text, name)
        assert command.startswith(f"`.venv/bin/python bench/{name}.py ")
        assert machine.startswith(f"{cpu}, {os.cpu_count()} cores, ") and "GiB RAM" in machine
        start, end = (float(x) for x in loads.split(" → "))
        assert 0 <= start < 1000 and 0 <= end < 1000 and wall.endswith(" s")
        out = (logs / f"{name}.out").read_text()  # the benchmark's own stdout
        for line in result.split("<br>"):
            compact = line.replace("\\|", "|")
            assert any(bench_all.compact_line(x) == compact for x in out.splitlines()), line
        assert f"### {name}" in text and out.strip().splitlines()[-1] in text
    (res,) = json.loads((logs / "load" / "load.json").read_text())
    cells = _row(text, "load")[5].split("<br>")[1].split(" · ")
    assert [int(cells[1]), int(cells[3])] == [res["clients"], res["requests"]]
    assert int(cells[7]) == res["data_lost"] == 0

    # --update reruns one benchmark into the page: its row says so, the other row stays as it was
    load_row = _row(text, "load")
    cmd = [sys.executable, str(REPO / "bench" / "all.py"), "--update", "serve", "--out", str(page)]
    done = subprocess.run([*cmd, "--logs", str(logs)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    updated = page.read_text()
    assert _row(updated, "load") == load_row and "quick run" in updated
    assert "(rerun " in _row(updated, "serve")[4] and "(rerun " not in load_row[4]
    record = json.loads(page.with_suffix(".json").read_text())
    assert [(r["bench"], r["rerun"]) for r in record["runs"]] == [("serve", True), ("load", False)]


def test_update_needs_the_record_of_a_full_run(tmp_path: Path) -> None:
    page = tmp_path / "bench.md"
    page.write_text("# Benchmarks\n")  # a page without its record
    cmd = [sys.executable, str(REPO / "bench" / "all.py"), "--update", "serve", "--out", str(page)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bench.json: no readable record of a full run" in done.stderr
    assert page.read_text() == "# Benchmarks\n"


def test_quick_or_partial_runs_never_write_the_docs_page(tmp_path: Path) -> None:
    for extra in (["--quick"], ["--only", "serve"]):
        cmd = [sys.executable, str(REPO / "bench" / "all.py"), *extra, "--logs", str(tmp_path)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "pass --out FILE" in done.stderr
    assert not list(tmp_path.iterdir())


def test_a_benchmark_past_its_limit_is_stopped_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); "
        "time.sleep(120)"
    )
    t0 = time.monotonic()
    stdout, _, status = bench_all.run_command([sys.executable, "-c", script], dict(os.environ), 3.0)
    assert status == "timed out after 3 s" and stdout.strip() == "started"
    assert time.monotonic() - t0 < 30
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a zombie (killed, not yet reaped by init) counts as gone
        stat = Path(f"/proc/{grandchild}/stat")
        if stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"grandchild {grandchild} of the timed-out benchmark still runs")
