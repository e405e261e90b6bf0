"""Every benchmark in bench/ at its documented size, one after another, into one page.

Runs each script of ``BENCHMARKS`` in its own process (``PYTHONPATH`` = the repository,
``HF_HUB_OFFLINE=1``), records the machine (CPU model, cores, RAM, GPU), the 1-minute load
average just before and just after it, its wall time and exit status, and picks its result lines
out of its output. Then writes the benchmarks page (default ``docs/benchmarks.md``): one row per
benchmark (command, machine, load at start and end, result) and each benchmark's last output
lines below. The page holds this run only: earlier figures are dropped, not merged.

``--quick`` runs every benchmark at a tiny size (seconds each; the figures mean nothing, it checks
that the page is made) and needs ``--out``; so does ``--only`` (a partial run is no full page).
Full logs go to ``--logs`` (default ``.bench/logs``).

Usage: ``.venv/bin/python bench/all.py [--quick] [--only NAME ...] [--out FILE]``
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"
OUTPUT_LINES = 60  # of each benchmark's stdout, on the page


@dataclass(frozen=True)
class Bench:
    """One benchmark script: its arguments at the documented size and at a tiny size, and the
    patterns of its result lines. ``{work}`` in arguments is a fresh folder for the run."""

    name: str  # bench/<name>.py, unless ``script`` names another
    what: str
    full: str = ""  # arguments, split on spaces
    quick: str = ""
    result: tuple[str, ...] = ()  # regexes; matching stdout lines are the row's result
    gpu: bool = False  # only with CUDA (else the row says skipped)
    script: str = ""  # bench/<script>.py when one script is two benchmarks (default: name)

    @property
    def file(self) -> str:
        """The script's file name stem under bench/."""
        return self.script or self.name


BENCHMARKS: tuple[Bench, ...] = (
    Bench(
        "store_size",
        "store bytes per view (K=10, K=100) against TinyViT's layout, real Lite0 teacher",
        quick="--views 2",
        result=(r"^\| layout", r"TinyViT raw", r"head-sorted-pad", r"writer"),
    ),
    Bench(
        "generate",
        "generation views/s against a bare teacher-forward loop, pair vs sample order",
        quick="--views 1 --repeats 1",
        result=(r"^pairs / sample", r"views per CPU-s, ratio", r"^goal"),
    ),
    Bench(
        "grow",
        "growing a store 8 -> 16 slots against generating 8 slots, end to end",
        quick="--views 1 --repeats 1 --img-size 64",
        result=(r"^\| run", r"^\|\s+(generate|grow)", r"^grow / generate"),
    ),
    Bench(
        "replay",
        "replay CPU ms per image against timm's train transform",
        quick="--rounds 1 --sizes 64",
        result=(r"^\| images", r"^\|\s+(demo|ImageNet)"),
    ),
    Bench(
        "serve",
        "block endpoint views/s against local reads; latency under concurrent clients",
        quick="--samples 8192 --block 2048 --clients 2 --requests 8 --lat-block 512",
        result=(r"^\| reader", r"^\| (local|service)", r"^latency"),
    ),
    Bench(
        "student",
        "student images/s: streaming from the service vs in-memory targets vs online KD vs "
        "two teachers' ensemble",
        quick="--copies 1 --epochs 2 --repeats 1 --no-breakdown --heavy-steps 0 --img-size 64 "
        "--batch-size 4 --workers 0",
        result=(r"^\((a|d|f)\)/",),
    ),
    Bench(
        "distill_quality",
        "held-out top-1 on real MNIST: store-distilled student vs online KD",
        full="--seeds 0 1 2 --topk5",
        quick="--n 300 --teacher-epochs 1 --epochs 1 --views 1",
        result=(r"^\| model", r"^\|\s+(teacher|student)", r"online KD:"),
    ),
    Bench(
        "curriculum",
        "curricula on real MNIST: progressive and EfficientTrain++ vs fixed resolution",
        full="--seeds 0 1",
        quick="--n 300 --teacher-epochs 1 --epochs 4 --img-size 32 --views 4",
        result=(r"^\| student", r"^\|\s+(fixed|progressive|efficientrain)", r"less wall"),
    ),
    Bench(
        "dashboard",
        "a view picture: the dashboard's endpoint vs distill show",
        quick="--repeat 1",
        result=(r"ms/view",),
    ),
    Bench(
        "s3_store",
        "store writes and reads on S3 (moto) vs local disk",
        quick="--views 1 --samples 2048",
        result=(r"^(write|resume scan|read) \(wall\)", r"identical"),
    ),
    Bench(
        "copy_store",
        "distill copy of a whole store through the service against cp -r of its files",
        quick="--views 2 --samples 4096 --rounds 1 --workers 2",
        result=(r"^\| round", r"^\|\s+\d", r"^median wall"),
    ),
    Bench(
        "load",
        "64 clients against distill serve for 60 s at 1 and 2 workers; RSS against the cache",
        full="--json {work}/load.json",
        quick="--clients 4 --seconds 2 --workers 1 --samples 16384 --views 4 --cache-mib 16 "
        "--json {work}/load.json",
        result=(r"^\| workers", r"^\|\s+\d"),
    ),
    Bench(
        "load-render-flood",
        "block reads beside 32, 60 and 80 clients rendering view PNGs (p99 against unloaded)",
        full="--scenario render-flood --seconds 20 --json {work}/flood.json",
        quick="--scenario render-flood --seconds 2 --render-clients 2 --views 2 --samples 8192 "
        "--json {work}/flood.json",
        result=(r"^\|", r"goal"),
        script="load",
    ),
    Bench(
        "reliability",
        "the reliability suite at full scale (pytest -m reliability) and the load run",
        quick="--no-tests --clients 4 --seconds 2 --load-views 4 --load-samples 16384",
        result=(r"pytest -m reliability", r"^\| test", r"^\| load:"),
    ),
    Bench(
        "scale",
        "ImageNet-scale simulation (N = 1,281,167 x R = 50 x K = 10) at a fifth of N",
        full="--fraction 0.2 --store-root {work}/stores --json {work}/scale.json",
        quick="--samples 300 --views 4 --files 300 --batch-size 32 --store-root {work}/stores "
        "--tree {work}/tree --json {work}/scale.json",
        result=(r"^\| step", r"^\|\s+(write|verify|serve|epoch_service|tree) "),
    ),
    Bench(
        "gpu_check",
        "the CUDA path in one run: generate, verify, train, views/s against bare forwards",
        full="--out {work}",
        quick="--device cpu --tiny --out {work}",
        result=(r"^\| step", r"^\|\s+\w+ \|\s+(ok|failed|skipped) "),
        gpu=True,
    ),
)
# bench/ files that are no benchmark of their own.
NOT_BENCHMARKS = frozenset({"_common", "all", "pictures", "scale_steps", "scale_teacher"})


def machine() -> str:
    """CPU model, cores, RAM and GPU of this machine, in one line (no torch import)."""
    model = platform.processor() or platform.machine()
    ram = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores{ram}, {gpu() or 'no GPU'}"


def gpu() -> str | None:
    """The first NVIDIA GPU's name (nvidia-smi), or None."""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    first = done.stdout.strip().splitlines()[:1]
    return first[0].split(" (UUID")[0] if done.returncode == 0 and first else None


def load_average() -> float:
    return os.getloadavg()[0]


@dataclass(frozen=True)
class Run:
    """What one benchmark run left: its command line, loads, wall time, status and output."""

    bench: Bench
    command: str
    machine: str
    load_start: float
    load_end: float
    wall_s: float
    status: str  # "ok", "failed (exit N)", "timed out after S s", "skipped: ..."
    stdout: str

    def result_lines(self) -> list[str]:
        """The stdout lines the benchmark's patterns select (else its last 3 lines)."""
        rule = re.compile(r"^\|[-:| ]+\|$")  # a Markdown table's header rule: no result
        lines = [x.rstrip() for x in self.stdout.splitlines() if x.strip() and not rule.match(x)]
        picked = [x for x in lines if any(re.search(p, x) for p in self.bench.result)]
        return (picked or lines[-3:])[:12]


def run_bench(bench: Bench, quick: bool, logs: Path, timeout_s: float) -> Run:
    """Run one benchmark in its own process; its stdout and stderr also go to ``logs``."""
    work = logs / bench.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    args = [a.replace("{work}", str(work)) for a in (bench.quick if quick else bench.full).split()]
    shown = " ".join(a.replace(str(work), "DIR") for a in args)
    command = f".venv/bin/python bench/{bench.file}.py {shown}".rstrip()
    where = machine()
    if bench.gpu and not quick and gpu() is None:
        load = load_average()
        return Run(bench, command, where, load, load, 0.0, "skipped: no GPU on this machine", "")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "bench" / f"{bench.file}.py"), *args]
    load_start, t0 = load_average(), time.perf_counter()
    stdout, stderr, status = run_command(cmd, env, timeout_s)
    wall, load_end = time.perf_counter() - t0, load_average()
    (logs / f"{bench.name}.out").write_text(stdout)
    (logs / f"{bench.name}.err").write_text(stderr)
    return Run(bench, command, where, load_start, load_end, wall, status, stdout)


def run_command(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[str, str, str]:
    """(stdout, stderr, status) of ``cmd`` in its own process group: on timeout the whole
    group goes (benchmarks start servers and helper processes of their own)."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return stdout, stderr, f"timed out after {timeout_s:.0f} s"
    finally:
        with contextlib.suppress(ProcessLookupError):  # helpers a finished benchmark left behind
            os.killpg(proc.pid, signal.SIGKILL)
    return stdout, stderr, "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"


def compact_line(line: str) -> str:
    """A table row as 'a · b · c'; runs of spaces squeezed (Markdown would squeeze them too)."""
    line = line.strip()
    if line.startswith("| ") and line.endswith(" |"):  # cells may hold "|Δp|": split on " | "
        return " · ".join(" ".join(c.split()) for c in line[2:-2].split(" | "))
    return " ".join(line.split())


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    status = ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
    head = done.stdout.strip() or "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def about(bench: Bench) -> str:
    """The first paragraph of the benchmark script's docstring: what it measures and how."""
    tree = ast.parse((REPO / "bench" / f"{bench.file}.py").read_text())
    doc = ast.get_docstring(tree) or bench.what
    return " ".join(doc.split("\n\n")[0].split())


def render(runs: list[Run], quick: bool, started: dt.datetime, wall_s: float) -> str:
    """The benchmarks page: one table row per run, then each run's last output lines."""
    kind = "a quick run (tiny sizes: the figures check the page, they measure nothing)"
    kind = kind if quick else "one full run at the documented sizes"
    lines = [
        "# Benchmarks",
        "",
        f"Every figure on this page comes from {kind} of `bench/all.py`, started "
        f"{started:%Y-%m-%d %H:%M} UTC at commit {_commit()}: each benchmark ran alone, one after "
        f"another, on the machine its row names ({wall_s / 60:.0f} min in all). The page holds "
        "the latest run only; `.venv/bin/python bench/all.py` rewrites it. Load is the 1-minute "
        "load average just before and just after the benchmark: other jobs on the machine show "
        "there. Ratios measured side by side in one run are what to read.",
        "",
        "| benchmark | command | machine | load at start → end | wall | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        result = "<br>".join(_cell(compact_line(x)) for x in r.result_lines())
        status = "" if r.status == "ok" else f"**{r.status}**" + ("<br>" if result else "")
        lines.append(
            f"| {r.bench.name}: {_cell(r.bench.what)} | `{_cell(r.command)}` | {_cell(r.machine)} "
            f"| {r.load_start:.2f} → {r.load_end:.2f} | {r.wall_s:.0f} s | {status}{result} |"
        )
    lines += ["", "## Outputs", ""]
    for r in runs:
        out = [x.rstrip() for x in r.stdout.splitlines()][-OUTPUT_LINES:]
        lines += [f"### {r.bench.name}", "", about(r.bench), "", f"`{r.command}`: {r.status}", ""]
        lines += ["```text", *(out or ["(no output)"]), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (needs --out)")
    p.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="these only")
    p.add_argument("--out", help=f"the page (default {PAGE.relative_to(REPO)}, full runs only)")
    p.add_argument("--logs", default=str(REPO / ".bench" / "logs"), help="full outputs here")
    p.add_argument("--timeout-s", type=float, help="per benchmark (default 3 h; quick 10 min)")
    args = p.parse_args(argv)
    if (args.quick or args.only) and not args.out:
        p.error("--quick and --only make no full page: pass --out FILE (not docs/benchmarks.md)")
    out = Path(args.out) if args.out else PAGE
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout_s or (600.0 if args.quick else 3 * 3600.0)
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    runs = []
    for bench in chosen:
        print(f"== {bench.name} (load {load_average():.2f})", flush=True)
        run = run_bench(bench, args.quick, logs, timeout)
        print(f"   {run.status}, {run.wall_s:.0f} s, load {run.load_end:.2f}", flush=True)
        runs.append(run)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(runs, args.quick, started, time.perf_counter() - t0) + "\n")
    print(f"wrote {out}")
    return 0 if all(r.status == "ok" or r.status.startswith("skipped") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
