"""Every benchmark in bench/ at its documented size, one after another, into one page.

Runs each script of ``BENCHMARKS`` in its own process (``PYTHONPATH`` = the repository,
``HF_HUB_OFFLINE=1``), records the machine (CPU model, cores, RAM, GPU), the 1-minute load
average just before and just after it, its wall time and exit status, and picks its result lines
out of its output. Then writes the benchmarks page (default ``docs/benchmarks.md``): one row per
benchmark (command, machine, load at start and end, result) and each benchmark's last output
lines below, and the runs' record beside it (``docs/benchmarks.json``). The page holds this run
only: earlier figures are dropped, not merged.

``--update NAME ...`` reruns the named benchmarks (a new one, or one whose script changed) and
replaces their rows in the page from its record; each such row says when and at which commit it
ran, so a page never passes a later figure off as part of the sitting.

``--quick`` runs every benchmark at a tiny size (seconds each; the figures mean nothing, it checks
that the page is made) and needs ``--out``; so does ``--only`` (a partial run is no full page).
Full logs go to ``--logs`` (default ``.bench/logs``).

Usage: ``.venv/bin/python bench/all.py [--quick] [--only NAME ... | --update NAME ...] [--out F]``
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"
OUTPUT_LINES = 60  # of each benchmark's stdout, on the page
RECORD_VERSION = 1  # of the runs' record beside the page (PAGE with .json)


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
        "images",
        "replay images/s from a local folder, tar shards (local, S3) and the folder on S3; "
        "generation views/s from S3 shards vs the folder",
        quick="--quick",
        result=(
            r"^\| replay source",
            r"^\|\s+\(",
            r"^replay \(c\)/\(a\)",
            r"^client CPU",
            r"^generation views/s",
        ),
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
        "ImageNet-scale simulation (N = 1,281,167 x R = 50 x K = 10) at a fifth of N; the image "
        "index (folder table, tar shard index) at ImageNet-22k's 14.2 M samples",
        full="--fraction 0.2 --store-root {work}/stores --json {work}/scale.json",
        quick="--samples 300 --views 4 --files 300 --batch-size 32 --store-root {work}/stores "
        "--tree {work}/tree --json {work}/scale.json",
        result=(
            r"^\| step",
            r"^\|\s+(write|verify|serve|epoch_service|tree|index|index_load|tar_index_load) ",
        ),
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
    started: str = ""  # UTC, minutes: when this benchmark started
    commit: str = ""  # the repository's commit it ran at
    rerun: bool = False  # made by ``--update``, after the page's sitting

    def to_dict(self) -> dict[str, object]:
        """The run as JSON-ready fields (the page's record, beside it)."""
        d = {k: v for k, v in vars(self).items() if k != "bench"}
        return {"version": RECORD_VERSION, "bench": self.bench.name, **d}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Run | None:
        """A recorded run, or None when its benchmark is no longer listed."""
        bench = {b.name: b for b in BENCHMARKS}.get(str(d["bench"]))
        if bench is None or d.get("version") != RECORD_VERSION:
            return None
        fields = {k: v for k, v in d.items() if k not in ("bench", "version")}
        return cls(bench, **fields)  # type: ignore[arg-type]

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
        skipped = "skipped: no GPU on this machine"
        return Run(bench, command, where, load, load, 0.0, skipped, "", _now(), _commit())
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "bench" / f"{bench.file}.py"), *args]
    load_start, t0, started = load_average(), time.perf_counter(), _now()
    stdout, stderr, status = run_command(cmd, env, timeout_s)
    wall, load_end = time.perf_counter() - t0, load_average()
    (logs / f"{bench.name}.out").write_text(stdout)
    (logs / f"{bench.name}.err").write_text(stderr)
    run = Run(bench, command, where, load_start, load_end, wall, status, stdout, started, _commit())
    return run


def _now() -> str:
    return f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}"


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


@dataclass(frozen=True)
class Sitting:
    """The full run a page comes from: when it started, at which commit, how long it took."""

    started: str
    commit: str
    wall_s: float
    quick: bool


def render(runs: list[Run], sitting: Sitting) -> str:
    """The benchmarks page: one table row per run, then each run's last output lines. A run
    made after the sitting (``--update``) says when and at which commit in its row."""
    kind = "a quick run (tiny sizes: the figures check the page, they measure nothing)"
    kind = kind if sitting.quick else "one full run at the documented sizes"
    later = [r for r in runs if r.rerun]
    lines = [
        "# Benchmarks",
        "",
        f"Every figure on this page comes from {kind} of `bench/all.py`, started "
        f"{sitting.started} UTC at commit {sitting.commit}: each benchmark ran alone, one after "
        f"another, on the machine its row names ({sitting.wall_s / 60:.0f} min in all). The page "
        "holds the latest run only; `.venv/bin/python bench/all.py` rewrites it. Load is the "
        "1-minute load average just before and just after the benchmark: other jobs on the "
        "machine show there. Ratios measured side by side in one run are what to read."
        + (
            f" {len(later)} row(s) were rerun later by `bench/all.py --update NAME`: their wall "
            "cell says when and at which commit."
            if later
            else ""
        ),
        "",
        "How each benchmark works, and what the GPU check and the ImageNet-scale simulation "
        "measure: [Benchmark methods](benchmark-methods.md).",
        "",
        "| benchmark | command | machine | load at start → end | wall | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        result = "<br>".join(_cell(compact_line(x)) for x in r.result_lines())
        status = "" if r.status == "ok" else f"**{r.status}**" + ("<br>" if result else "")
        when = f"<br>(rerun {r.started} UTC at {r.commit})" if r in later else ""
        lines.append(
            f"| {r.bench.name}: {_cell(r.bench.what)} | `{_cell(r.command)}` | {_cell(r.machine)} "
            f"| {r.load_start:.2f} → {r.load_end:.2f} | {r.wall_s:.0f} s{when} "
            f"| {status}{result} |"
        )
    lines += ["", "## Outputs", ""]
    for r in runs:
        out = [x.rstrip() for x in r.stdout.splitlines()][-OUTPUT_LINES:]
        lines += [f"### {r.bench.name}", "", about(r.bench), "", f"`{r.command}`: {r.status}", ""]
        lines += ["```text", *(out or ["(no output)"]), "```", ""]
    return "\n".join(lines)


def record_path(page: Path) -> Path:
    """The JSON record of a page's runs, beside it (``--update`` reads it)."""
    return page.with_suffix(".json")


def save(page: Path, runs: list[Run], sitting: Sitting) -> None:
    """Write the page and its record."""
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(runs, sitting) + "\n")
    record = {
        "version": RECORD_VERSION,
        "sitting": vars(sitting),
        "runs": [r.to_dict() for r in runs],
    }
    record_path(page).write_text(json.dumps(record, indent=1) + "\n")


def load_record(page: Path) -> tuple[list[Run], Sitting]:
    """The runs and sitting recorded beside ``page``; ValueError naming the file otherwise."""
    path = record_path(page)
    try:
        record = json.loads(path.read_text())
        if record.get("version") != RECORD_VERSION:
            raise ValueError(f"record version {record.get('version')!r}")
        sitting = Sitting(**record["sitting"])
        runs = [r for r in (Run.from_dict(d) for d in record["runs"]) if r is not None]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: no readable record of a full run ({e}); run bench/all.py "
                         "in full first") from None  # fmt: skip
    return runs, sitting


def merged(old: list[Run], new: list[Run]) -> list[Run]:
    """``old`` with ``new`` in place of the runs of the same benchmarks, in BENCHMARKS order."""
    by_name = {r.bench.name: r for r in old} | {r.bench.name: r for r in new}
    return [by_name[b.name] for b in BENCHMARKS if b.name in by_name]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [b.name for b in BENCHMARKS]
    p.add_argument("--quick", action="store_true", help="tiny sizes (needs --out)")
    p.add_argument("--only", nargs="+", choices=names, help="these only (needs --out)")
    again = "rerun these and replace their rows in the page (the rest is kept)"
    p.add_argument("--update", nargs="+", choices=names, metavar="NAME", help=again)
    p.add_argument("--out", help=f"the page (default {PAGE.relative_to(REPO)}, full runs only)")
    p.add_argument("--logs", default=str(REPO / ".bench" / "logs"), help="full outputs here")
    p.add_argument("--timeout-s", type=float, help="per benchmark (default 3 h; quick 10 min)")
    args = p.parse_args(argv)
    if (args.quick or args.only) and not args.out:
        p.error("--quick and --only make no full page: pass --out FILE (not docs/benchmarks.md)")
    if args.update and (args.quick or args.only):
        p.error("--update reruns benchmarks at the page's own sizes: not with --quick or --only")
    out = Path(args.out) if args.out else PAGE
    old: list[Run] = []
    quick = args.quick
    if args.update:
        try:
            old, sitting = load_record(out)
        except ValueError as e:
            p.error(str(e))
        quick = sitting.quick  # reruns at the page's sizes
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout_s or (600.0 if quick else 3 * 3600.0)
    wanted = args.update or args.only
    chosen = [b for b in BENCHMARKS if not wanted or b.name in wanted]
    started, t0 = _now(), time.perf_counter()
    runs = []
    for bench in chosen:
        print(f"== {bench.name} (load {load_average():.2f})", flush=True)
        run = run_bench(bench, quick, logs, timeout)
        print(f"   {run.status}, {run.wall_s:.0f} s, load {run.load_end:.2f}", flush=True)
        runs.append(replace(run, rerun=bool(args.update)))
    if not args.update:
        sitting = Sitting(started, _commit(), time.perf_counter() - t0, quick)
    save(out, merged(old, runs), sitting)
    print(f"wrote {out} and {record_path(out).name}")
    return 0 if all(r.status == "ok" or r.status.startswith("skipped") for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
