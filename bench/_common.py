"""Helpers shared by the bench scripts: threads, machine line, tables, timers (stores, services
and S3 servers come from ``teacher_store.testing``)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never reach for a hub
# OpenMP threads that busy-wait collapse when the cores are shared (DataLoader workers, a local
# server, other jobs): measured here, 2 spinning torch threads trained resnet10t at 32 px at 12
# img/s against 270 img/s with passive waiting. Must be set before torch loads; override freely.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:  # `python bench/x.py` from anywhere; the repo before bench/,
    sys.path.insert(0, str(REPO))  # whose student.py would otherwise shadow the student package


def set_threads(n: int | None) -> int:
    """Pin torch's intra-op threads (None: leave torch's default); return the count in use."""
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def machine() -> str:
    """One line naming the machine: CPU count, torch threads, accelerator, library versions."""
    import timm
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), timm {timm.__version__}, {gpu}, "
        f"Python {platform.python_version()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )


def load() -> str:
    """The 1-minute load average against the CPU count (other jobs share these cores)."""
    try:
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (right-aligned numbers) as one string."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.2f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in body:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


@contextmanager
def timed(label: str, times: dict[str, float]) -> Iterator[None]:
    """Record the wall time of the block under ``times[label]`` and say it on stderr."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        times[label] = time.perf_counter() - t0
        print(f"[{label}: {times[label]:.1f} s]", file=sys.stderr, flush=True)


def mnist_student_config(
    args: Any, store: Path, data: Path, out: Path, seed: int, **extra: Any
) -> Any:
    """The student run the MNIST benchmarks share: ``args`` supplies student, epochs,
    batch_size, img_size, lr and workers; every train digit trains (the test folder is held out)."""
    from student.config import TrainConfig

    return TrainConfig(
        store=str(store),
        data=str(data),
        model=args.student,
        out=str(out),
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
        lr=args.lr,
        warmup_epochs=1.0,
        workers=args.workers,
        seed=seed,
        device="cpu",
        val_fraction=0.0,
        tensorboard=False,
        progress=False,
        **extra,
    )


def mnist_teacher(
    args: Any, recipe: Any, train: Path, test: Path, work: Path
) -> tuple[Path, float]:
    """The MNIST benchmarks' teacher (``args``: teacher, img_size, teacher_epochs, teacher_lr),
    trained by ``student.teacher_fit`` and saved as ``work/teacher.pth``; returns the path and
    the checkpoint's held-out top-1 on ``test``."""
    from models import create_teacher, save_teacher_checkpoint
    from student.teacher_fit import TeacherFitConfig, fit_teacher, folder_top1

    cfg = TeacherFitConfig(
        data=str(train), arch=args.teacher, img_size=args.img_size, epochs=args.teacher_epochs,
        batch_size=128, lr=args.teacher_lr, seed=0,
    )  # fmt: skip
    model, facts = fit_teacher(cfg, recipe, log=lambda line: print(f"  {line}", file=sys.stderr))
    size = (3, args.img_size, args.img_size)
    path = save_teacher_checkpoint(
        work / "teacher.pth", model, facts["class_names"], size, extra={"fit": cfg.to_dict()}
    )
    loaded, info = create_teacher(args.teacher, path)
    return path, folder_top1(loaded, str(test), args.img_size, info.mean, info.std)


def synthetic_attrs_parts(
    num_samples: int,
    num_classes: int = 1000,
    dataset: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """The descriptive attrs of a synthetic benchmark store: ``StoreAttrs(..., **parts)``
    (``teacher_store.testing.synthetic_parts``, which the synthetic-store writer uses too)."""
    from teacher_store.testing import synthetic_parts

    return synthetic_parts(num_samples, num_classes, dataset, recipe, **config)


def demo_photos(folder: Path, copies: int) -> int:
    """The bundled demo photos under ``folder``, each ``copies`` times (the extra copies under
    new names: more samples of real photos); returns the number of photos before copying."""
    import shutil

    from teacher_store.images.demo_data import write_demo_data

    write_demo_data(folder)
    originals = sorted(p for p in folder.rglob("*") if p.is_file())
    for k in range(1, copies):
        for p in originals:
            shutil.copyfile(p, p.with_name(f"copy{k}_{p.name}"))
    return len(originals)


def imagenet_like(src: Path, out: Path, long_side: int = 500, quality: int = 90) -> Path:
    """The images under ``src`` re-encoded under ``out`` as ImageNet-like JPEGs (long side
    ``long_side`` px, ``quality``; ``class/name.jpg``); returns ``out``."""
    from PIL import Image

    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        scale = long_side / max(rgb.size)
        size = (round(rgb.width * scale), round(rgb.height * scale))
        target = out / path.parent.name / (path.stem + ".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb.resize(size, Image.Resampling.BICUBIC).save(target, quality=quality)
    return out
