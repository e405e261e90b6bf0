"""The student curricula: one torch-free table that ``distill train --curriculum`` offers,
the config's presets use and :mod:`student.curriculum` dispatches on.

Adding a curriculum of an existing kind is one :class:`CurriculumSpec` entry here plus its
tests; a new kind of schedule adds its branch to :mod:`student.curriculum` too.

Pure Python: no torch at import time (the CLI builds its choices from this table).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

CurriculumKind = Literal["progressive", "lowfreq"]
PROGRESSIVE = "efficientnetv2-progressive"
EFFICIENTRAIN = "efficientrain"
# EfficientTrain++'s first bandwidth, 96 px at 224.
ET_START_RATIO = 96 / 224


@dataclass(frozen=True)
class CurriculumSpec:
    """One curriculum: what it defaults, what it expects of the store, how it schedules."""

    name: str
    kind: CurriculumKind  # progressive: sizes + regularizers ramp per stage; lowfreq: per step
    help: str  # one phrase for the CLI
    default_stages: int
    store_knobs: tuple[str, ...]  # store recipe knobs whose ramp must go weak -> strong
    store_preset: str  # the `distill generate --recipe` that matches
    train_defaults: Mapping[str, Any]  # TrainConfig presets (explicit options override them)
    start_ratio: float  # default first size / bandwidth = ratio * img_size, rounded
    start_step: int | None  # rounding step of that default (None: 8 px, 2 px below 64 px)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain JSON values."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["store_knobs"], d["train_defaults"] = list(self.store_knobs), dict(self.train_defaults)
        return d


# EfficientNetV2-S (Tan & Le 2021, Table 6) ramps dropout 0.1 -> 0.3; stochastic depth ends
# at 0.2 (its fixed rate in the paper), ramped from 0 here. Both curricula need the view slot
# to follow training progress (view_schedule="stretch").
_TABLE = (
    CurriculumSpec(
        PROGRESSIVE,
        "progressive",
        "progressive resizing + regularization",
        default_stages=4,
        store_knobs=("randaug_m",),
        store_preset="efficientnetv2-progressive",
        train_defaults=MappingProxyType(
            {"view_schedule": "stretch", "drop_rate": 0.3, "drop_path": 0.2}
        ),
        start_ratio=0.5,
        start_step=None,
    ),
    CurriculumSpec(
        EFFICIENTRAIN,
        "lowfreq",
        "EfficientTrain++ low-frequency cropping",
        default_stages=3,
        store_knobs=("randaug_m",),
        store_preset="efficientrain-weak-to-strong",
        train_defaults=MappingProxyType({"view_schedule": "stretch"}),
        start_ratio=ET_START_RATIO,
        start_step=2,
    ),
)
CURRICULA: Mapping[str, CurriculumSpec] = MappingProxyType({c.name: c for c in _TABLE})
"""Every curriculum by name (read-only)."""
CURRICULUM_NAMES: tuple[str, ...] = tuple(CURRICULA)


def curriculum_spec(name: str) -> CurriculumSpec:
    """The table entry for ``name``; a one-line ValueError naming the known ones otherwise."""
    if name not in CURRICULA:
        raise ValueError(f"unknown curriculum {name!r}; use one of {sorted(CURRICULA)}")
    return CURRICULA[name]


__all__ = [
    "CURRICULA",
    "CURRICULUM_NAMES",
    "EFFICIENTRAIN",
    "PROGRESSIVE",
    "CurriculumSpec",
    "curriculum_spec",
]
