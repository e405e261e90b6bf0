"""Schedules as pure functions of training progress."""

from __future__ import annotations

import math


def lr_at(
    step: int, total: int, base: float, warmup: int = 0, min_lr: float = 0.0, kind: str = "cosine"
) -> float:
    """Learning rate at optimizer step ``step`` of ``total``: linear warmup, then cosine."""
    if total < 1:
        raise ValueError(f"total steps must be >= 1, got {total}")
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if kind == "constant":
        return base
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}; use cosine or constant")
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * t))


def slot_for_epoch(epoch: int, epochs: int, views: int, mode: str = "wrap") -> int:
    """The store's view slot used in ``epoch``.

    ``wrap``: slot = epoch mod R, reusing views when training longer than R epochs.
    ``stretch``: slot = floor(epoch * R / epochs), so the slot index follows training progress;
    stores whose augmentation strength grows with the slot then give a weak-to-strong curriculum.
    """
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch {epoch} outside [0, {epochs})")
    if mode == "wrap":
        return epoch % views
    if mode == "stretch":
        return min(views - 1, epoch * views // epochs)
    raise ValueError(f"unknown view schedule {mode!r}; use wrap or stretch")
