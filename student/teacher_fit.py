"""A small teacher trained with labels (plain cross-entropy) on views the store's codec draws.

The teacher of ``distill demo-mnist`` and of the MNIST benchmarks: fit it on an ImageFolder
(:func:`fit_teacher`), write it with ``models.save_teacher_checkpoint`` so that
``distill generate --teacher ARCH --checkpoint FILE`` loads it, and score a model on a held-out
folder's centre views (:func:`folder_top1`). Its views come from the codec with a seed disjoint
from any store's (store seeds are small), so the teacher never trains on a store's own views.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from student.data import center_view
from student.schedule import lr_at
from teacher_store.images.source import labels_of, open_images
from teacher_store.views.codec import decode
from teacher_store.views.recipe import Recipe, get_recipe
from teacher_store.views.replay import render_view, view_to_float

TEACHER_VIEW_SEED = 1_000_003  # + cfg.seed: far from the small seeds stores are built with


@dataclass(frozen=True)
class TeacherFitConfig:
    """How :func:`fit_teacher` trains: AdamW with a cosine schedule and half an epoch of warmup."""

    data: str
    arch: str = "resnet18"
    img_size: int = 32
    epochs: int = 2
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    recipe: str = "digits"  # a teacher_store recipe preset (or file) the views are drawn with
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherFitConfig:
        """The config a :meth:`to_dict` dict describes (validated)."""
        return cls(**d)


def fit_teacher(
    cfg: TeacherFitConfig,
    recipe: Recipe | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train ``cfg.arch`` from scratch on ``cfg.data``'s labels; returns (the model in eval mode,
    facts: class names, mean, std, per-epoch loss, train_time_s). ``recipe`` overrides
    ``cfg.recipe``; ``log`` gets one line per epoch."""
    import timm

    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.img_size < 8:
        raise ValueError(f"epochs and batch_size must be >= 1 and img_size >= 8: {cfg}")
    recipe = recipe or get_recipe(cfg.recipe)
    folder = open_images(cfg.data)
    n = len(folder)
    if n < cfg.batch_size:
        raise ValueError(f"{cfg.data} holds {n} images, fewer than one batch of {cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    model = timm.create_model(cfg.arch, pretrained=False, num_classes=len(folder.classes))
    pcfg: Any = model.pretrained_cfg
    norm = (tuple(float(x) for x in pcfg["mean"]), tuple(float(x) for x in pcfg["std"]))
    images = [folder.load(i) for i in range(n)]
    labels = torch.from_numpy(labels_of(folder))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses, t0 = [], time.perf_counter()
    for epoch in range(cfg.epochs):
        # One fresh codec view per image per epoch: [n, 3, S, S] uint8.
        views = torch.stack(
            [
                render_view(
                    images[i],
                    decode(TEACHER_VIEW_SEED + cfg.seed, epoch, i, n, recipe, cfg.epochs),
                    cfg.img_size,
                )
                for i in range(n)
            ]
        )
        losses.append(_epoch(model, opt, cfg, epoch, views, labels, norm, gen))
        if log is not None:
            log(f"teacher epoch {epoch}: cross-entropy {losses[-1]:.4f}")
    model.eval()
    facts = {
        "class_names": list(folder.classes),
        "mean": list(norm[0]),
        "std": list(norm[1]),
        "losses": losses,
        "images": n,
        "train_time_s": time.perf_counter() - t0,
    }
    return model, facts


def _epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    cfg: TeacherFitConfig,
    epoch: int,
    views: torch.Tensor,
    labels: torch.Tensor,
    norm: tuple[tuple[float, ...], tuple[float, ...]],
    gen: torch.Generator,
) -> float:
    """One epoch of cross-entropy over ``views`` [n, 3, S, S] in a shuffled order (the last
    partial batch dropped; cosine learning rate after half an epoch of warmup): its mean loss."""
    n = len(views)
    steps = n // cfg.batch_size
    total, warmup = steps * cfg.epochs, steps // 2
    perm = torch.randperm(n, generator=gen)
    model.train()
    mean_loss = 0.0
    for b in range(steps):
        idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        for g in opt.param_groups:
            g["lr"] = lr_at(epoch * steps + b, total, cfg.lr, warmup, 1e-5, "cosine")
        loss = F.cross_entropy(model(view_to_float(views[idx], *norm)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mean_loss += loss.item() / steps
    return mean_loss


@torch.inference_mode()
def folder_top1(
    model: torch.nn.Module,
    data: str,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 256,
) -> float:
    """Top-1 % of ``model`` on every image of ``data`` (a folder, URL or shards; centre views at
    ``img_size``, the students' evaluation view); the model's class i must be folder class i."""
    folder = open_images(data)
    if not len(folder):
        raise ValueError(f"{data} holds no images to score")
    model.eval()
    hits = 0
    for start in range(0, len(folder), batch_size):
        ids = range(start, min(start + batch_size, len(folder)))
        x = torch.stack([center_view(folder.load(i), img_size) for i in ids])  # [B, 3, S, S]
        pred = model(view_to_float(x, mean, std)).argmax(-1)
        hits += int((pred == torch.tensor([folder.label(i) for i in ids])).sum())
    return 100.0 * hits / len(folder)


__all__ = ["TEACHER_VIEW_SEED", "TeacherFitConfig", "fit_teacher", "folder_top1"]
