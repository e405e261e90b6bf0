"""The GPU path, checked in one short run: generation, serving and training, with figures.

Steps (each ends ok, failed with one line, or skipped with the reason; one failing step does not
lose the others' figures; the exit status is 1 when any step failed):

  setup          demo photos copied under new names; a random-weight teacher (timm init, seed 0)
  generate       `distill generate` with that teacher (ConvNeXt-B; bf16 autocast on CUDA is
                 generate's default), then `distill verify`; the job's views/s, wall incl. start
  bare           a bare teacher-forward loop on the same pre-rendered batches (bf16 autocast on
                 CUDA, with and without channels_last); generate views/s over bare views/s
  busy           generate again in a child whose global forward hooks time each teacher forward
                 (CUDA events on CUDA): teacher forward time over the job loop's wall time
  train          `distill train` of tiny_vit_5m_224 (bf16 + channels_last on CUDA) streaming from
                 a live `distill serve`, from the store in fsspec's memory filesystem (the
                 ceiling), and online KD with the same teacher; img/s after the first epoch
  cuda_tests     pytest on the skip-unless-CUDA tests (skipped without CUDA)
  cpu_vs_device  one store config generated on the device and on CPU: ids agreement, max |Δp|
                 on the ids both top-K lists hold (reported, not asserted)
  decode         image decode img/s: Pillow one by one vs torchvision's batched decode on the
                 device (nvJPEG on CUDA), max pixel difference; on CUDA also `generate --decode
                 gpu` views/s and its agreement with the Pillow-decoded store of the same config

Each step gets a share of the time left of --budget-s (default 300) and checks the clock: fewer
repeats, or "skipped: budget"; its commands run with the step's remaining time as timeout.
Writes gpu_check.json and gpu_check.md to --out (default: a new temporary folder), with each
command's output under OUT/logs.

Usage: ``python bench/gpu_check.py [--device cuda] [--budget-s 300] [--out DIR]``; with
``--device cpu --tiny`` every step runs on CPU at tiny sizes (the CI test).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import REPO, machine, table

STUDENT = "tiny_vit_5m_224"
# Time shares of the budget; a step gets its share of what is left when it starts.
SHARES = dict(setup=0.05, generate=0.2, bare=0.1, busy=0.15, train=0.3, cuda_tests=0.08)
SHARES.update(cpu_vs_device=0.12, decode=0.03)
# ... but generate, which most steps need, may take up to this share of what is left.
_GENERATE_CAP = 0.5
_RESERVE_S = 2.0  # writing the reports


@dataclass(frozen=True)
class Sizes:
    """Workload sizes: the GPU check proper, or --tiny for CPU CI."""

    teacher: str
    copies: int  # copies of each of the 17 demo photos (steps generate..train)
    views: int
    img_size: int  # teacher (store) and student resolution
    gen_batch: int
    train_batch: int
    epochs: int  # the first one is warm-up, left out of img/s
    workers: int  # DataLoader workers for generate and train
    repeats: int  # bare passes / interleaved training rounds, at most
    bare_batches: int
    cmp_views: int  # cpu_vs_device: views of the 17 photos (not copied)


def sizes(tiny: bool, teacher: str | None = None) -> Sizes:
    if tiny:
        return Sizes(teacher or "resnet10t", 1, 2, 32, 16, 8, 2, 0, 1, 2, 2)
    workers = max(1, min(16, (os.cpu_count() or 2) - 2))
    return Sizes(teacher or "convnext_base", 16, 8, 224, 64, 64, 3, workers, 3, 6, 2)


class _Skip(Exception):
    """A step that does not run: the message says why."""


class StepError(Exception):
    """A step that failed: the message is the one line to report."""


@dataclass
class Step:
    name: str
    status: str = "pending"
    reason: str = ""
    seconds: float = 0.0
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    deadline: float = field(default=0.0, repr=False)

    def left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class Ctx:
    """Settings, paths and the clock of one check."""

    device: str
    sizes: Sizes
    work: Path
    out: Path
    budget_s: float
    t0: float = field(default_factory=time.monotonic)
    steps: dict[str, Step] = field(default_factory=dict)
    _logs: int = 0

    def __post_init__(self) -> None:
        w = self.work
        self.data, self.cmp_data, self.stores = w / "photos", w / "photos17", w / "stores"
        self.ckpt, self.train_yaml = w / "teacher.pth", w / "train.yaml"

    def left(self) -> float:
        return self.budget_s - _RESERVE_S - (time.monotonic() - self.t0)

    def log(self, label: str) -> Path:
        self._logs += 1
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        return self.out / "logs" / f"{self._logs:02d}-{label}.log"

    def gen_args(self, data: Path, out: Path, device: str, views: int) -> list[str]:
        s = self.sizes
        return [
            *("--data", str(data), "--out", str(out), "--teacher", s.teacher),
            *("--checkpoint", str(self.ckpt), "--views", str(views), "--topk", "10"),
            *("--batch-size", str(s.gen_batch), "--workers", str(s.workers)),
            *("--img-size", str(s.img_size), "--chunk-samples", "64", "--shard-samples", "256"),
            *("--device", device, "--overwrite", "--quiet"),
        ]


def _bench(name: str) -> ModuleType:
    """bench/NAME.py as a module (bench/student.py would clash with the student package)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        sys.modules[key] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]


def _distill() -> list[str]:
    exe = Path(sys.executable).with_name("distill")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "teacher_store.cli"]


def _run(ctx: Ctx, step: Step, cmd: list[str], label: str) -> str:
    """Run ``cmd`` under the step's remaining time; its output goes to a log; stdout back."""
    log = ctx.log(label)
    timeout = max(1.0, step.left())
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        log.write_text(f"$ {' '.join(cmd)}\n(killed after {timeout:.0f} s)\n{out or ''}")
        raise StepError(f"{label} ran past the step's time ({timeout:.0f} s; {log.name})") from None
    log.write_text(f"$ {' '.join(cmd)}\n(exit {r.returncode})\n{r.stdout}\n--- stderr\n{r.stderr}")
    if r.returncode != 0:
        lines = [x for x in (r.stderr + r.stdout).splitlines() if x.strip()]
        last = lines[-1].strip() if lines else "no output"
        raise StepError(f"{label} exited {r.returncode}: {last[:300]} (log {log.name})")
    return r.stdout


def _cli(ctx: Ctx, step: Step, argv: list[str]) -> str:
    return _run(ctx, step, [*_distill(), *argv], f"distill-{argv[0]}")


def _child(ctx: Ctx, step: Step, kind: str, argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Run ``distill ARGV`` in a child of this script that adds ``kind``; (stdout, its JSON)."""
    res = ctx.work / f"child-{kind}.json"
    res.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-out", str(res)]
    text = _run(ctx, step, [*cmd, "--", *argv], f"{kind}-{argv[0]}")
    return text, json.loads(res.read_text()) if res.is_file() else {}


def _views_per_s(text: str) -> tuple[int, float]:
    m = re.search(r"(\d+) views at ([0-9.]+) views/s", text)
    if not m:
        raise StepError(f"no 'N views at X views/s' in generate's output: {text.strip()[-200:]}")
    return int(m.group(1)), float(m.group(2))


# --- steps ------------------------------------------------------------------------------------


def step_setup(ctx: Ctx, step: Step) -> None:
    import timm
    import torch

    from teacher_store.images.demo_data import write_demo_data

    n = _bench("student").write_photos(ctx.data, ctx.sizes.copies)
    write_demo_data(ctx.cmp_data)
    torch.manual_seed(0)  # random weights, but the same ones every run
    model = timm.create_model(ctx.sizes.teacher, pretrained=False, num_classes=1000)
    torch.save({"model": model.state_dict(), "num_classes": 1000}, ctx.ckpt)
    ctx.train_yaml.write_text("tensorboard: false\nprogress: false\n")
    step.figures.update(images=n, teacher_params_M=sum(p.numel() for p in model.parameters()) / 1e6)
    step.notes.append(f"teacher {ctx.sizes.teacher}, random weights (timm init, seed 0)")


def step_generate(ctx: Ctx, step: Step) -> None:
    store = ctx.stores / "main"
    t0 = time.perf_counter()
    argv = ctx.gen_args(ctx.data, store, ctx.device, ctx.sizes.views)
    text = _cli(ctx, step, ["generate", *argv])
    wall = time.perf_counter() - t0
    views, vps = _views_per_s(text)
    step.figures.update(views=views, views_per_s=vps, wall_s=wall)
    t0 = time.perf_counter()
    verify = ["verify", str(store), "--data", str(ctx.data), "--device", ctx.device]
    text = _cli(ctx, step, [*verify, "--checkpoint", str(ctx.ckpt), "--fraction", "0.25"])
    step.figures["verify_s"] = time.perf_counter() - t0
    step.notes.append(text.strip().splitlines()[-1][:300])


def _bare_rate(step: Step, label: str, model: Any, xs: list[Any], passes: int) -> float:
    """Best views/s of ``model(x)`` over the batches ``xs`` (bf16 autocast on CUDA)."""
    import torch

    cuda = xs[0].device.type == "cuda"
    nviews = sum(len(x) for x in xs)

    def once() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(xs[0].device.type, torch.bfloat16, cuda):
            for x in xs:
                model(x)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    took = once()  # warm-up: kernels, allocator
    rates: list[float] = []
    for _ in range(passes):
        if rates and step.left() < 3 * took:
            step.notes.append(f"{label}: {len(rates)} pass(es) of {passes}, budget")
            break
        took = once()
        rates.append(nviews / took)
    return max(rates)


def step_bare(ctx: Ctx, step: Step) -> None:
    import torch

    from models import create_teacher
    from teacher_store.views.replay import view_to_float

    batches, _ = _bench("generate").rendered_batches(
        ctx.stores / "main", ctx.data, ctx.sizes.bare_batches
    )
    nviews = sum(len(b) for b in batches)
    dev = torch.device(ctx.device)
    model, info = create_teacher(ctx.sizes.teacher, ctx.ckpt)
    model = model.to(dev).eval()
    cuda = dev.type == "cuda"
    variants = [("bf16", False), ("bf16_channels_last", True)] if cuda else [("fp32_cl", True)]
    best: dict[str, float] = {}
    for name, cl in variants:
        fmt = torch.channels_last if cl else torch.contiguous_format
        m = model.to(memory_format=fmt)
        xs = [view_to_float(b.to(dev), info.mean, info.std) for b in batches]
        xs = [x.contiguous(memory_format=fmt) for x in xs]
        best[name] = _bare_rate(step, name, m, xs, max(ctx.sizes.repeats, 5 if cuda else 1))
        step.figures[f"bare_{name}_views_per_s"] = best[name]
    step.figures["views_timed"] = nviews
    gen = ctx.steps["generate"].figures["views_per_s"]
    step.figures["generate_over_bare"] = gen / max(best.values())


def _fits(ctx: Ctx, step: Step, generates: float) -> None:
    """Skip the step unless it has time for about ``generates`` runs of step generate's
    command (start-up dominates the small runs here)."""
    gen = ctx.steps["generate"]
    need = generates * gen.figures["wall_s"] if "wall_s" in gen.figures else 0.0
    if step.left() < need:
        raise _Skip(f"budget ({step.left():.0f} s left, about {need:.0f} s needed)")


def step_busy(ctx: Ctx, step: Step) -> None:
    _fits(ctx, step, 1.2)
    args = ctx.gen_args(ctx.data, ctx.stores / "busy", ctx.device, ctx.sizes.views)
    text, hooks = _child(ctx, step, "hooks", ["generate", *args])
    views, vps = _views_per_s(text)
    loop_s = views / vps
    if not hooks.get("forwards"):
        raise StepError("the forward hooks saw no teacher forward")
    step.figures.update(
        views_per_s=vps,
        loop_s=loop_s,
        forward_s=hooks["forward_s"],
        forwards=hooks["forwards"],
        teacher_busy=hooks["forward_s"] / loop_s,
    )
    step.notes.append(f"teacher forward timed by {hooks['clock']}")


def _train_args(ctx: Ctx, store: str, run: Path) -> list[str]:
    s = ctx.sizes
    args = [
        *("train", "--store", store, "--data", str(ctx.data), "--model", STUDENT),
        *("--out", str(run), "--config", str(ctx.train_yaml), "--epochs", str(s.epochs)),
        *("--batch-size", str(s.train_batch), "--img-size", str(s.img_size)),
        *("--workers", str(s.workers), "--device", ctx.device, "--seed", "0"),
        *("--val-fraction", "0", "--warmup-epochs", "0"),
    ]
    return args + (["--amp", "--channels-last"] if ctx.device == "cuda" else [])


def step_train(ctx: Ctx, step: Step) -> None:
    _fits(ctx, step, 3.5)  # three training runs and a service
    bs = _bench("student")
    service = bs.start_service(ctx.stores, ctx.log("serve"))
    local = str(ctx.stores / "main")
    online = ["--teacher", ctx.sizes.teacher, "--teacher-checkpoint", str(ctx.ckpt)]
    variants: dict[str, Callable[[Path], Any]] = {
        "service": lambda run: _cli(ctx, step, _train_args(ctx, service.store_url("main"), run)),
        "memory": lambda run: _child(ctx, step, "memory", _train_args(ctx, local, run)),
        "online": lambda run: _cli(ctx, step, [*_train_args(ctx, local, run), *online]),
    }
    batch = ctx.sizes.train_batch
    per_epoch = int(ctx.steps["setup"].figures["images"]) // batch * batch  # full batches
    rates: dict[str, list[float]] = {k: [] for k in variants}
    walls: dict[str, float] = {}
    try:
        # Interleaved rounds, so that drifting load hits every variant alike; a later round
        # runs only when all of it fits.
        for rep in range(ctx.sizes.repeats):
            if rep and step.left() < 1.3 * sum(walls.values()):
                step.notes.append(f"{rep} round(s) of {ctx.sizes.repeats}: budget")
                break
            for key, fn in variants.items():
                run = ctx.work / "runs" / f"{key}{rep}"
                shutil.rmtree(run, ignore_errors=True)
                t0 = time.perf_counter()
                fn(run)
                walls[key] = time.perf_counter() - t0
                rates[key].append(bs.steady_rate(run, 1, per_epoch)[0])
        step.figures["block_requests"] = bs.block_requests(service)
    finally:
        service.close()
    for key, xs in rates.items():
        step.figures[f"img_per_s_{key}"] = sum(xs) / len(xs)
    f = step.figures
    f["service_over_memory"] = f["img_per_s_service"] / f["img_per_s_memory"]
    f["service_over_online"] = f["img_per_s_service"] / f["img_per_s_online"]
    f["rounds"] = min(len(xs) for xs in rates.values())


def _cuda_test_files() -> list[str]:
    pat = re.compile(r"skipif\(\s*not torch\.cuda\.is_available\(\)")
    files = sorted(p for p in (REPO / "tests").rglob("test_*.py") if pat.search(p.read_text()))
    return [str(p.relative_to(REPO)) for p in files]


def step_cuda_tests(ctx: Ctx, step: Step) -> None:
    import torch

    if ctx.device != "cuda":
        raise _Skip("no CUDA" if not torch.cuda.is_available() else "no CUDA (--device cpu)")
    files = _cuda_test_files()
    if not files:
        raise StepError("no test file holds a skipif(not torch.cuda.is_available()) test")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files]
    text = _run(ctx, step, [*cmd, "-k", "cuda or gpu"], "pytest-cuda")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text)}
    step.figures.update(passed=counts.get("passed", 0), skipped=counts.get("skipped", 0))
    step.notes += [x for x in text.splitlines() if x.startswith("SKIPPED")]
    if not counts.get("passed"):
        raise StepError(f"no CUDA test passed: {text.strip().splitlines()[-1]}")


def compare_stores(a: Path, b: Path) -> dict[str, float]:
    """Agreement of two stores of one config (:func:`teacher_store.diff.compare_stores`)."""
    from teacher_store.diff import compare_stores as agreement

    return agreement(a, b).to_dict()


def step_cpu_vs_device(ctx: Ctx, step: Step) -> None:
    s = ctx.sizes
    reuse = s.copies == 1 and s.views == s.cmp_views and ctx.steps["generate"].status == "ok"
    _fits(ctx, step, 1.0 if reuse else 2.0)
    if reuse:
        dev_store, data = ctx.stores / "main", ctx.data  # the same config: no second run
    else:
        dev_store, data = ctx.stores / "cmp_device", ctx.cmp_data
        _cli(ctx, step, ["generate", *ctx.gen_args(data, dev_store, ctx.device, s.cmp_views)])
    cpu_store = ctx.stores / "cmp_cpu"
    _cli(ctx, step, ["generate", *ctx.gen_args(data, cpu_store, "cpu", s.cmp_views)])
    step.figures.update(compare_stores(dev_store, cpu_store))
    step.notes.append(f"{ctx.device} store vs cpu store of the same config, {s.teacher}")


def step_decode(ctx: Ctx, step: Step) -> None:
    import numpy as np
    import torch

    from teacher_store.images.dataset import ImageFolder, load_image
    from teacher_store.images.decode import decode_images

    folder = ImageFolder.scan(ctx.data)
    paths = [folder.root / p for p in folder.paths]
    dev, limit = torch.device(ctx.device), folder.max_image_pixels
    decode_images(paths[:8], dev, limit)  # warm-up (CUDA context, nvJPEG handles)
    best_pil = best_dev = float("inf")
    for _ in range(max(1, ctx.sizes.repeats)):
        t0 = time.perf_counter()
        ref = [load_image(p, limit) for p in paths]
        t1 = time.perf_counter()
        got = decode_images(paths, dev, limit)
        best_pil, best_dev = min(best_pil, t1 - t0), min(best_dev, time.perf_counter() - t1)
        if step.left() < 3 * (best_pil + best_dev):
            break
    diff = max(
        int(np.abs(np.asarray(a).astype(np.int16) - np.asarray(b)).max())
        for a, b in zip(got, ref, strict=True)
    )
    step.figures.update(
        images=len(paths),
        pillow_img_per_s=len(paths) / best_pil,
        batched_img_per_s=len(paths) / best_dev,
        batched_over_pillow=best_pil / best_dev,
        max_abs_pixel_diff=diff,
    )
    step.notes.append(f"batched decode on {ctx.device} (PNGs fall back to Pillow), best pass")
    if ctx.device != "cuda" or ctx.steps["generate"].status != "ok":
        step.notes.append("generate --decode gpu: skipped (needs CUDA and the generate step)")
        return
    store = ctx.stores / "gpu_decode"
    argv = ctx.gen_args(ctx.data, store, ctx.device, ctx.sizes.views)
    _, vps = _views_per_s(_cli(ctx, step, ["generate", *argv, "--decode", "gpu"]))
    step.figures.update(gpu_decode_views_per_s=vps)
    cmp = compare_stores(store, ctx.stores / "main")
    step.figures.update({f"vs_pillow_{k}": v for k, v in cmp.items()})


STEPS: tuple[tuple[str, Callable[[Ctx, Step], None], tuple[str, ...]], ...] = (
    ("setup", step_setup, ()),
    ("generate", step_generate, ("setup",)),
    ("bare", step_bare, ("generate",)),
    ("busy", step_busy, ("generate",)),
    ("train", step_train, ("generate",)),
    ("cuda_tests", step_cuda_tests, ()),
    ("cpu_vs_device", step_cpu_vs_device, ("setup",)),
    ("decode", step_decode, ("setup",)),
)


def run_step(ctx: Ctx, name: str, fn: Callable[[Ctx, Step], None], needs: tuple[str, ...]) -> None:
    step = ctx.steps[name] = Step(name)
    names = [n for n, _, _ in STEPS]
    later = sum(SHARES[n] for n in names[names.index(name) :])  # this step's and the later ones
    allowance = ctx.left() * SHARES[name] / later
    if name == "generate":
        allowance = max(allowance, _GENERATE_CAP * ctx.left())
    step.deadline = time.monotonic() + allowance
    t0 = time.monotonic()
    bad = [n for n in needs if ctx.steps[n].status != "ok"]
    try:
        if bad:
            raise _Skip(f"needs {bad[0]} ({ctx.steps[bad[0]].status})")
        if allowance < 1.0:
            raise _Skip(f"budget ({allowance:.1f} s left)")
        fn(ctx, step)
        step.status = "ok"
    except _Skip as e:
        step.status, step.reason = "skipped", str(e)
    except Exception as e:  # one step's failure must not lose the other figures
        step.status = "failed"
        step.reason = f"{type(e).__name__}: {e}".splitlines()[0][:400]
        ctx.log(f"{name}-traceback").write_text(traceback.format_exc())
    step.seconds = time.monotonic() - t0
    extra = f": {step.reason}" if step.reason else ""
    print(f"[{name}: {step.status}{extra}; {step.seconds:.1f} s]", file=sys.stderr, flush=True)


# --- reports ----------------------------------------------------------------------------------


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def write_reports(ctx: Ctx, head: dict[str, Any]) -> tuple[Path, Path]:
    steps = {
        n: {k: v for k, v in asdict(s).items() if k != "deadline"} for n, s in ctx.steps.items()
    }
    js = ctx.out / "gpu_check.json"
    js.write_text(json.dumps({**head, "steps": steps}, indent=1))
    rows = []
    for s in ctx.steps.values():
        figs: list[tuple[str, Any]] = list(s.figures.items()) or [("-", "-")]
        for i, (k, v) in enumerate(figs):
            first = [s.name, s.status, f"{s.seconds:.1f}"] if i == 0 else ["", "", ""]
            rows.append([*first, k, v if isinstance(v, str) else _num(v)])
    notes = [f"- {s.name}: {s.status.upper()}: {s.reason}" for s in ctx.steps.values() if s.reason]
    notes += [f"- {s.name}: {n}" for s in ctx.steps.values() for n in s.notes]
    md = ctx.out / "gpu_check.md"
    md.write_text(
        f"# distill GPU check ({head['mode']}, --device {head['device']})\n\n"
        f"{head['machine']}\n\nbudget {head['budget_s']:.0f} s, wall {head['wall_s']:.1f} s\n\n"
        + table(["step", "status", "s", "figure", "value"], rows)
        + ("\n\n" + "\n".join(notes) if notes else "")
        + "\n"
    )
    return js, md


# --- child processes: `distill` with something added ------------------------------------------


def child_main(kind: str, out: Path, argv: list[str]) -> int:
    """``hooks``: time every outermost module forward (the teacher); ``memory``: train from the
    --store copied into the in-process memory filesystem. Then run ``distill ARGV``."""
    import torch

    from teacher_store.cli import main as cli

    spans: list[list[Any]] = []
    cuda = argv[argv.index("--device") + 1] == "cuda"
    if kind == "hooks":
        depth = [0]

        def mark() -> Any:
            if not cuda:
                return time.perf_counter()
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e

        def pre(module: Any, inputs: Any) -> None:
            depth[0] += 1
            if depth[0] == 1:
                spans.append([mark(), None])

        def post(module: Any, inputs: Any, output: Any) -> None:
            depth[0] -= 1
            if depth[0] == 0:
                spans[-1][1] = mark()

        torch.nn.modules.module.register_module_forward_pre_hook(pre)
        torch.nn.modules.module.register_module_forward_hook(post)
    elif kind == "memory":
        i = argv.index("--store") + 1
        from teacher_store.testing import memory_copy

        argv[i] = memory_copy(Path(argv[i]), "gpu-check")
    rc = cli(argv)
    if cuda:
        torch.cuda.synchronize()
    done = [(a, b) for a, b in spans if b is not None]
    fwd = sum(a.elapsed_time(b) / 1e3 if cuda else b - a for a, b in done)
    clock = "CUDA events" if cuda else "perf_counter"
    out.write_text(json.dumps({"rc": rc, "forwards": len(done), "forward_s": fwd, "clock": clock}))
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (CPU CI: well under a minute)")
    p.add_argument("--budget-s", type=float, default=300.0, help="finish within this (default 300)")
    p.add_argument("--out", help="folder for gpu_check.json/.md and logs (default: a new temp one)")
    p.add_argument("--teacher", help="timm teacher (default convnext_base; --tiny resnet10t)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (stores, runs)")
    p.add_argument("--child", choices=("hooks", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    if args.child:
        return child_main(args.child, Path(args.child_out), [x for x in rest if x != "--"])
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="distill-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="distill-gpu-work-"))
    ctx = Ctx(args.device, sizes(args.tiny, args.teacher), work, out, args.budget_s)
    try:
        for name, fn, needs in STEPS:
            run_step(ctx, name, fn, needs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    head = {
        "mode": "tiny" if args.tiny else "full",
        "device": args.device,
        "machine": machine(),
        "budget_s": args.budget_s,
        "wall_s": time.monotonic() - ctx.t0,
        "sizes": asdict(ctx.sizes),
        "student": STUDENT,
    }
    js, md = write_reports(ctx, head)
    print(md.read_text())
    print(f"figures: {js}\ntable:   {md}" + (f"\nwork:    {work}" if args.keep else ""))
    failed = [s.name for s in ctx.steps.values() if s.status == "failed"]
    if failed:
        print(f"FAILED steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
