"""Student-side curricula over a store whose augmentation strength follows the view slot.

``efficientnetv2-progressive`` (Tan & Le 2021, "EfficientNetV2", Algorithm 1): training is split
into M equal stages; in stage i the image size is ``S_i = S0 + (Se - S0) * i / (M - 1)`` and
every regularizer is ``phi_i = phi0 + (phie - phi0) * i / (M - 1)``. The student renders each
replayed view at ``S_i`` (a view is defined in normalized coordinates, so the teacher's target
stays exact) and sets its dropout / drop-path rates to ``phi_i``; RandAugment magnitude and
MixUp strength ramp on the store side (recipe preset ``efficientnetv2-progressive``), which the
student reads stage by stage through ``view_schedule="stretch"``.
Defaults: M = 4, ``S0 = 0.5 * Se`` rounded to a multiple of 8 (of 2 below 64 px), ``Se`` = the
run's ``img_size``; dropout ``drop_rate / 3 -> drop_rate`` (EfficientNetV2-S: 0.1 -> 0.3) and
drop path ``0 -> drop_path``. Sizes are rounded like ``S0``.

``efficientrain`` (Wang et al., "EfficientTrain++", TPAMI 2024): views are replayed at full size
S and, on the training device, cut down to their ``B x B`` lowest frequencies
(:func:`student.lowfreq.lowfreq_crop`, or :func:`student.lowfreq.downsample`). The paper's
schedule is a function of the fraction f of the total compute budget consumed: split the budget
into ten equal parts; B = 96 for the first two, 160 for the next four, 224 for the last four (at
S = 224; here ``B0 = 96/224 * S``, ``B1 = (B0 + S) / 2``, ``B2 = S``, rounded to even), and a
step at bandwidth B costs ``(B / S)**2`` of a full-size step. With a fixed number of steps N (the
same epoch budget as a fixed-resolution run) the share of steps spent at level k follows in
closed form: ``n_k / N = (w_k / c_k) / sum_j (w_j / c_j)`` with compute shares
``w = (0.2, 0.4, 0.4)`` and costs ``c_k = (B_k / S)**2`` (:func:`efficientrain_levels`). The
weak-to-strong RandAugment schedule is the store's (recipe ``efficientrain-weak-to-strong``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from student.curricula import CURRICULA, curriculum_spec
from student.curricula import ET_START_RATIO as ET_START_RATIO
from student.lowfreq import LowFreqMode
from student.schedule import linear_ramp, round_size, stage_for_epoch

CURRICULUM_VERSION = 1
# What each curriculum expects of the store: its default stage count, the knobs whose ramp
# must go weak -> strong, and the generation preset that matches (from student/curricula.py).
STORE_EXPECTS: dict[str, tuple[int, tuple[str, ...], str]] = {
    name: (c.default_stages, c.store_knobs, c.store_preset) for name, c in CURRICULA.items()
}
# EfficientTrain++: (compute share, bandwidth level 0..2) in order; levels map to B0, mid, S.
ET_COMPUTE_SHARES: tuple[float, ...] = (0.2, 0.4, 0.4)
# Families whose input size is fixed at build time: no resolution curriculum for them.
FIXED_SIZE_FAMILIES = ("efficientformer", "efficientformerv2")


def size_quantum(full: int) -> int:
    """Rounding step of curriculum sizes: 8 px (2 px for images below 64 px)."""
    return 8 if full >= 64 else 2


@dataclass(frozen=True)
class EpochPlan:
    """What the curriculum sets for one epoch."""

    epoch: int
    stage: int
    img_size: int  # render size of the replayed views
    drop_rate: float
    drop_path: float


@dataclass(frozen=True)
class Curriculum:
    """A resolved student curriculum (all defaults filled in)."""

    name: str
    stages: int
    size_start: int
    size_end: int
    drop_rate: tuple[float, float]
    drop_path: tuple[float, float]
    lowfreq_mode: LowFreqMode = "crop"
    version: int = CURRICULUM_VERSION

    def __post_init__(self) -> None:
        curriculum_spec(self.name)  # a one-line ValueError for an unknown name
        if self.stages < 2:
            raise ValueError(f"a curriculum needs >= 2 stages, got {self.stages}")
        if not 8 <= self.size_start <= self.size_end:
            raise ValueError(
                f"curriculum sizes must satisfy 8 <= start <= end, got {self.size_start} -> "
                f"{self.size_end}"
            )
        if self.version != CURRICULUM_VERSION:
            raise ValueError(f"curriculum version {self.version} is not {CURRICULUM_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop_rate"], d["drop_path"] = list(self.drop_rate), list(self.drop_path)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Curriculum:
        d = dict(d)
        d["drop_rate"], d["drop_path"] = tuple(d["drop_rate"]), tuple(d["drop_path"])
        return cls(**d)

    def epoch_plan(self, epoch: int, epochs: int, views: int, span: int | None = None) -> EpochPlan:
        """Stage, render size and regularization of ``epoch`` (pure); ``span``: the slots the
        store's schedule spans (a grown store's ``base_views``; default ``views``)."""
        stage = stage_for_epoch(epoch, epochs, views, self.stages, span)
        if CURRICULA[self.name].kind == "lowfreq":  # full-size replay; the band shrinks per step
            return EpochPlan(epoch, stage, self.size_end, self.drop_rate[1], self.drop_path[1])
        return EpochPlan(
            epoch,
            stage,
            progressive_size(stage, self.stages, self.size_start, self.size_end),
            linear_ramp(stage, self.stages, *self.drop_rate),
            linear_ramp(stage, self.stages, *self.drop_path),
        )

    def bandwidth(self, step: int, total_steps: int) -> int | None:
        """EfficientTrain++ bandwidth of optimizer step ``step`` (None for other curricula)."""
        if CURRICULA[self.name].kind != "lowfreq":
            return None
        return efficientrain_bandwidth(step, total_steps, self.size_start, self.size_end)


def progressive_size(stage: int, stages: int, start: int, end: int) -> int:
    """EfficientNetV2 image size of ``stage``: linear from ``start`` to ``end``; the stages in
    between are rounded to :func:`size_quantum` (the ends are exact)."""
    if stage in (0, stages - 1):
        return start if stage == 0 and stages > 1 else end
    size = round_size(linear_ramp(stage, stages, start, end), size_quantum(end))
    return min(end, max(start, size))


def efficientrain_levels(start: int, full: int) -> tuple[tuple[int, float], ...]:
    """``(B_k, share of steps)`` for the three EfficientTrain++ levels at a fixed step budget."""
    if not 1 <= start <= full:
        raise ValueError(f"bandwidths must satisfy 1 <= start <= full, got {start}, {full}")
    sizes = (start, min(full, round_size((start + full) / 2, 2)), full)
    weights = [w / (b / full) ** 2 for w, b in zip(ET_COMPUTE_SHARES, sizes, strict=True)]
    total = sum(weights)
    return tuple((b, w / total) for b, w in zip(sizes, weights, strict=True))


def efficientrain_bandwidth(step: int, total_steps: int, start: int, full: int) -> int:
    """Bandwidth of ``step`` of ``total_steps`` (fixed step budget, see the module doc)."""
    if total_steps < 1 or step < 0:
        raise ValueError(f"need 0 <= step and total_steps >= 1, got {step}, {total_steps}")
    p, edge = step / total_steps, 0.0
    for b, share in efficientrain_levels(start, full):
        edge += share
        if p < edge - 1e-12:
            return b
    return full


def compute_fraction(step: int, total_steps: int, start: int, full: int) -> float:
    """Share of the run's compute consumed before ``step`` (a step at B costs ``(B/full)**2``).

    By construction it is 0.2 and 0.6 where the bandwidth steps up (the paper's breakpoints).
    """
    levels = efficientrain_levels(start, full)
    per_step = sum(share * (b / full) ** 2 for b, share in levels)
    p, edge, spent = min(1.0, step / total_steps), 0.0, 0.0
    for b, share in levels:
        spent += min(share, max(0.0, p - edge)) * (b / full) ** 2
        edge += share
    return min(1.0, spent / per_step)


def build_curriculum(cfg: Any, img_size: int) -> Curriculum | None:
    """The run's curriculum with every default resolved, or None without ``cfg.curriculum``."""
    if cfg.curriculum is None:
        return None
    spec = curriculum_spec(cfg.curriculum)
    stages = cfg.curriculum_stages or spec.default_stages
    if cfg.size_start is not None:
        start = cfg.size_start
    else:
        start = round_size(spec.start_ratio * img_size, spec.start_step or size_quantum(img_size))
    if start > img_size:
        raise ValueError(f"size_start {start} exceeds the run's img_size {img_size}")
    dr0 = cfg.drop_rate / 3 if cfg.drop_rate_start is None else cfg.drop_rate_start
    dp0 = 0.0 if cfg.drop_path_start is None else cfg.drop_path_start
    if spec.kind == "lowfreq":  # regularizers stay at their final values
        dr0, dp0 = cfg.drop_rate, cfg.drop_path
    return Curriculum(
        cfg.curriculum,
        stages,
        start,
        img_size,
        (dr0, cfg.drop_rate),
        (dp0, cfg.drop_path),
        cfg.lowfreq_mode,
    )


def check_family(curriculum: Curriculum, model: str) -> None:
    """Refuse curricula that change the input size of a family built for one size."""
    from models.students import student_family

    family = student_family(model)
    if family in FIXED_SIZE_FAMILIES and curriculum.size_start < curriculum.size_end:
        what = "224x224 only" if family == "efficientformer" else "the size it was built for"
        raise ValueError(
            f"curriculum {curriculum.name} changes the input size ({curriculum.size_start} -> "
            f"{curriculum.size_end}), but {model} runs at {what}; use a TinyViT, EfficientNetV2 "
            "or ResNet student, or no curriculum"
        )


def check_store(curriculum: Curriculum, recipe: dict[str, Any], views: int, epochs: int) -> None:
    """Clear ValueError unless the store's per-slot schedule matches ``curriculum``."""
    name, stages = recipe.get("name", "?"), int(recipe.get("stages", 1))
    _, knobs, preset = STORE_EXPECTS[curriculum.name]
    want = (
        f"curriculum {curriculum.name} needs {curriculum.stages} stages with a weak-to-strong "
        f"ramp of {', '.join(knobs)} (generate the store with `distill generate --recipe {preset}`"
    )
    if stages != curriculum.stages:
        hint = f", or pass --curriculum-stages {stages}" if stages >= 2 else ""
        plural = "s" if stages != 1 else ""
        raise ValueError(f"store recipe {name!r} has {stages} stage{plural}, {want}{hint})")
    ramp = recipe.get("ramp") or {}
    bad = [k for k in knobs if k not in ramp or float(ramp[k][0]) > float(ramp[k][1])]
    if bad:
        raise ValueError(f"store recipe {name!r} ramps {dict(ramp)}; {want})")
    if views < stages:
        raise ValueError(
            f"the store has {views} view slots, fewer than the {stages} stages of its recipe: "
            f"{curriculum.name} needs at least one slot per stage"
        )
    if epochs < curriculum.stages:
        raise ValueError(
            f"--epochs {epochs} is fewer than the {curriculum.stages} stages of {curriculum.name}"
        )


class Regularizers:
    """Dropout and drop-path sites of a built timm model, so a schedule can set their rates.

    Build the model with the largest rates the schedule uses (so that timm creates the
    drop-path modules); :meth:`set` then scales every site. Drop path keeps timm's per-block
    linear rule: block rates are scaled by ``drop_path / built_drop_path``.
    """

    def __init__(self, model: torch.nn.Module, drop_rate: float, drop_path: float) -> None:
        from timm.layers import DropPath

        self.model, self.built = model, (drop_rate, drop_path)
        self.dropouts: list[torch.nn.Dropout] = [
            m
            for m in model.modules()
            if isinstance(m, torch.nn.Dropout) and drop_rate > 0 and math.isclose(m.p, drop_rate)
        ]
        self.paths: list[tuple[Any, float]] = [
            (m, float(m.drop_prob)) for m in model.modules() if isinstance(m, DropPath)
        ]

    def set(self, drop_rate: float, drop_path: float) -> None:
        if drop_rate > self.built[0] + 1e-12 or drop_path > self.built[1] + 1e-12:
            raise ValueError(
                f"rates ({drop_rate}, {drop_path}) exceed those the model was built with "
                f"{self.built}"
            )
        if hasattr(self.model, "drop_rate"):
            setattr(self.model, "drop_rate", drop_rate)  # noqa: B010 (a plain attribute in timm)
        for m in self.dropouts:
            m.p = drop_rate
        scale = drop_path / self.built[1] if self.built[1] > 0 else 0.0
        for path, base in self.paths:
            path.drop_prob = base * scale
