"""Augmentation recipes: the knobs a view codec draws from, with a per-view-slot schedule.

A :class:`Recipe` is a frozen, validated, JSON-safe description of the augmentation a store's
views were drawn with. ``stages`` and ``ramp`` give an EfficientNetV2 / EfficientTrain-style
schedule over view slots: slot ``r`` of ``R`` is in stage ``floor(r * stages / R)`` and every
ramped knob is interpolated linearly between its (start, end) across the stages.
:meth:`Recipe.at_slot` resolves that schedule into a plain recipe (``stages=1``, no ramp).

Pure Python + pydantic: no torch, no numpy, no RNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

RECIPE_VERSION = 1

# Numeric knobs a ramp may drive; "scale_min" is the lower bound of ``scale``.
RAMP_KNOBS: tuple[str, ...] = (
    "randaug_m",
    "randaug_n",
    "mixup_alpha",
    "cutmix_alpha",
    "mix_prob",
    "color_jitter",
    "erase_prob",
    "scale_min",
)


# Bounds the codec needs (teacher_store.views.codec): a crop area below its quantization
# step 2**-24 cannot be drawn (it would come out as 2**-24, above the range), a crop aspect
# ratio beyond e**+-20 is refused by crop_box, and a colour jitter factor near 1e301 overflows
# the grid quantization; jitter factors past 11x (or 0) saturate every pixel long before that.
SCALE_MIN = 2.0**-24
RATIO_RANGE = (1e-8, 1e8)
COLOR_JITTER_MAX = 10.0


def _check_unit(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return value


class Recipe(BaseModel):
    """Augmentation knobs (timm / TinyViT vocabulary) plus a per-view-slot schedule."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    version: int = RECIPE_VERSION
    name: str
    # RandomResizedCrop: area fraction and aspect-ratio (w/h) ranges.
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    # RandAugment (timm "rand-m9-mstd0.5-inc1"): ops per image, magnitude on timm's 0..10 scale,
    # gaussian magnitude noise, and the clip bound of the noisy magnitude (timm's magnitude_max;
    # raise it above 10 for TF-style magnitudes such as EfficientNetV2's 15).
    randaug_n: int = 2
    randaug_m: float = 9.0
    randaug_mstd: float = 0.5
    randaug_mmax: float = 10.0
    color_jitter: float = 0.0
    erase_prob: float = 0.0
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    stages: int = 1
    ramp: dict[str, tuple[float, float]] = {}

    @field_validator("version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != RECIPE_VERSION:
            raise ValueError(
                f"recipe version {v} is not supported (this code reads {RECIPE_VERSION})"
            )
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("recipe name must not be empty")
        return v

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not SCALE_MIN <= v[0] <= v[1] <= 1.0:
            raise ValueError(f"scale must satisfy 2**-24 <= min <= max <= 1, got {v!r}")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = RATIO_RANGE
        if not lo <= v[0] <= v[1] <= hi:
            raise ValueError(f"ratio must satisfy {lo:g} <= min <= max <= {hi:g}, got {v!r}")
        return v

    @field_validator("hflip", "erase_prob", "mix_prob", "switch_prob")
    @classmethod
    def _probability(cls, v: float, info: Any) -> float:
        return _check_unit(info.field_name, v)

    @field_validator("randaug_n")
    @classmethod
    def _randaug_n(cls, v: int) -> int:
        if not 0 <= v <= 16:
            raise ValueError(f"randaug_n must be in [0, 16], got {v!r}")
        return v

    @field_validator("randaug_mmax")
    @classmethod
    def _randaug_mmax(cls, v: float) -> float:
        if not 0.0 < v <= 30.0:
            raise ValueError(f"randaug_mmax must be in (0, 30], got {v!r}")
        return v

    @field_validator("randaug_m", "randaug_mstd", "mixup_alpha", "cutmix_alpha")
    @classmethod
    def _non_negative(cls, v: float, info: Any) -> float:
        if v < 0.0:
            raise ValueError(f"{info.field_name} must be >= 0, got {v!r}")
        return v

    @field_validator("color_jitter")
    @classmethod
    def _color_jitter(cls, v: float) -> float:
        if not 0.0 <= v <= COLOR_JITTER_MAX:
            raise ValueError(f"color_jitter must be in [0, {COLOR_JITTER_MAX:g}], got {v!r}")
        return v

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"stages must be >= 1, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_ramp(self) -> Recipe:
        unknown = sorted(set(self.ramp) - set(RAMP_KNOBS))
        if unknown:
            raise ValueError(f"unknown ramp knobs {unknown}; known: {list(RAMP_KNOBS)}")
        if self.ramp and self.stages == 1:
            raise ValueError("ramp has no effect with stages=1; set stages >= 2")
        if self.randaug_m > self.randaug_mmax and "randaug_m" not in self.ramp:
            raise ValueError(f"randaug_m={self.randaug_m} exceeds randaug_mmax={self.randaug_mmax}")
        for t in (0.0, 1.0) if self.ramp else ():  # convex: valid ends mean valid stages
            try:
                self._resolve(t)
            except ValidationError as err:
                raise ValueError(f"ramp {dict(self.ramp)} is invalid at t={t}: {err}") from None
        return self

    def _resolve(self, t: float) -> Recipe:
        data = self.model_dump()
        for knob, (start, end) in self.ramp.items():
            value = (1.0 - t) * start + t * end  # = start + t (end - start), exact at both ends
            if knob == "scale_min":
                data["scale"] = (value, self.scale[1])
            elif knob == "randaug_n":
                data[knob] = round(value)
            else:
                data[knob] = value
        data["stages"], data["ramp"] = 1, {}
        return Recipe.model_validate(data)

    def stage_of(self, slot: int, num_slots: int) -> int:
        """Stage of view slot ``slot`` of ``num_slots``: ``floor(slot * stages / num_slots)``."""
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        if not 0 <= slot < num_slots:
            raise ValueError(f"slot {slot} is out of range for {num_slots} view slots")
        return slot * self.stages // num_slots

    def at_slot(self, slot: int, num_slots: int) -> Recipe:
        """The knobs in force for view slot ``slot`` of ``num_slots`` (stages=1, empty ramp).

        ``t = stage / (stages - 1)`` (0 when stages == 1); each ramped knob becomes
        ``start + t * (end - start)`` (``randaug_n`` rounded half to even).
        """
        stage = self.stage_of(slot, num_slots)
        if not self.ramp and self.stages == 1:
            return self
        t = stage / (self.stages - 1) if self.stages > 1 else 0.0
        return self._resolve(t)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (tuples become lists); :meth:`from_dict` inverts it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Build and validate a recipe from :meth:`to_dict` output (or a hand-written dict)."""
        return cls.model_validate(data)


RECIPES: dict[str, Recipe] = {
    # TinyViT / DeiT style: RandomResizedCrop, flip, RandAugment m9, MixUp 0.8 / CutMix 1.0.
    "default": Recipe(name="default"),
    "light": Recipe(name="light", randaug_n=0, mix_prob=0.0),
    "none": Recipe(
        name="none", scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, randaug_n=0, mix_prob=0.0
    ),
    # Digits (MNIST and the like): no flips (a flipped 2 is no 2), crops that keep most of the
    # digit, one mild RandAugment op (rotate, shear, translate, contrast...), no mixing.
    "digits": Recipe(
        name="digits",
        scale=(0.5, 1.0),
        ratio=(0.8, 1.25),
        hflip=0.0,
        randaug_n=1,
        randaug_m=5.0,
        mix_prob=0.0,
    ),
    # EfficientNetV2 (Tan & Le 2021, Table 6) progressive learning over 4 stages: RandAugment
    # magnitude 5 -> 15 as for V2-S (TF-style magnitudes above 10, hence randaug_mmax=15) and
    # mixup 0 -> 0.2 as for V2-M (V2-S keeps mixup at 0); no cutmix. Image size and dropout
    # ramp on the student side.
    "efficientnetv2-progressive": Recipe(
        name="efficientnetv2-progressive",
        randaug_m=5.0,
        randaug_mmax=15.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        stages=4,
        ramp={"randaug_m": (5.0, 15.0), "mixup_alpha": (0.0, 0.2)},
    ),
    # EfficientTrain++ (Wang et al. 2023): weak-to-strong RandAugment magnitude 0 -> 9, no mixing.
    # The low-frequency cropping / resolution schedule is the student's side.
    "efficientrain-weak-to-strong": Recipe(
        name="efficientrain-weak-to-strong",
        randaug_m=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        mix_prob=0.0,
        stages=3,
        ramp={"randaug_m": (0.0, 9.0)},
    ),
}
"""The preset recipes by name (``--recipe NAME``); :func:`get_recipe` also loads files."""


def get_recipe(name_or_path: str) -> Recipe:
    """A preset by name (see ``RECIPES``), or a recipe dict loaded from a .json/.yaml file."""
    if name_or_path in RECIPES:
        return RECIPES[name_or_path]
    path = Path(name_or_path)
    if path.suffix.lower() in (".json", ".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"recipe file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"recipe file {path} must hold a mapping, got {type(data).__name__}")
        return Recipe.from_dict(data)
    raise ValueError(
        f"unknown recipe {name_or_path!r}: use one of {sorted(RECIPES)} or a .json/.yaml path"
    )
