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


def round_size(x: float, quantum: int) -> int:
    """``x`` rounded to the nearest multiple of ``quantum`` (half to even), at least ``quantum``."""
    if quantum < 1:
        raise ValueError(f"quantum must be >= 1, got {quantum}")
    if not x > 0:
        raise ValueError(f"size must be > 0, got {x}")
    return max(quantum, quantum * round(x / quantum))


def linear_ramp(stage: int, stages: int, start: float, end: float) -> float:
    """EfficientNetV2 Algorithm 1: ``start + (end - start) * stage / (stages - 1)``.

    Stage 0 gets ``start`` and stage ``stages - 1`` gets ``end`` exactly; one stage gets ``end``.
    """
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    if not 0 <= stage < stages:
        raise ValueError(f"stage {stage} outside [0, {stages})")
    if stages == 1:
        return end
    t = stage / (stages - 1)
    return (1.0 - t) * start + t * end


def stage_for_epoch(
    epoch: int, epochs: int, views: int, stages: int, span: int | None = None
) -> int:
    """The curriculum stage of ``epoch``: the store's stage of the view slot it trains on.

    With ``view_schedule="stretch"`` the epoch reads slot ``s = floor(epoch * R / E)`` and the
    store drew that slot's views in stage ``floor(s * M / R)`` (``Recipe.stage_of``). Using the
    same stage on the student side keeps both halves of the curriculum in lockstep; when M
    divides R this equals ``floor(epoch * M / E)``, the paper's equal split of training into M
    stages. ``span``: the slots the store's schedule spans (a grown store's ``base_views``;
    default R): a slot at or past it is in the stage of slot ``span - 1``, as in the store.
    """
    span = span or views
    if span < stages:
        raise ValueError(f"{span} view slots cannot hold {stages} stages (need views >= stages)")
    slot = slot_for_epoch(epoch, epochs, views, "stretch")
    return min(slot, span - 1) * stages // span
