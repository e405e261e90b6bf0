"""`distill train` configuration: one frozen model, from CLI flags and/or a YAML file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from student.recipes import CURRICULUM_DEFAULTS, RECIPES, apply_presets


class TrainConfig(BaseModel):
    """Everything a training run needs; its resolved form is saved in RUN_DIR and checkpoints.

    ``recipe`` and ``curriculum`` presets (student/recipes.py) fill the options that were not
    given explicitly: the validator sees exactly the keys passed in (YAML + CLI flags, or
    keywords), so explicit values always win and a saved dict round-trips unchanged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    store: str
    data: str
    model: str
    out: str
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    img_size: int | None = Field(None, ge=32)  # default: the store's teacher input size
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    opt: Literal["adamw", "sgd", "lamb"] = "adamw"
    momentum: float = Field(0.9, ge=0, lt=1)
    sched: Literal["cosine", "constant"] = "cosine"
    drop_path: float = Field(0.0, ge=0, lt=1)
    drop_rate: float = Field(0.0, ge=0, lt=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    clip_grad: float | None = Field(None, gt=0)
    ema: bool = False
    ema_decay: float = Field(0.9998, gt=0, lt=1)
    amp: bool = True  # bf16 autocast on CUDA; a no-op on CPU
    channels_last: bool = False
    compile: bool = False
    temperature: float = Field(1.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)
    hard_label_weight: float = Field(0.0, ge=0)  # adds CE on the (mixed) folder labels
    view_schedule: Literal["wrap", "stretch"] = "wrap"  # epoch -> view slot, see slot_for_epoch
    val_fraction: float = Field(0.1, ge=0, lt=1)
    workers: int = Field(2, ge=0)
    seed: int = Field(0, ge=0)
    device: str = "auto"
    token_file: str | None = None
    allow_dataset_mismatch: bool = False
    teacher: str | None = None  # online-KD baseline: run this teacher every step
    teacher_checkpoint: str | None = None
    teacher_img_size: int | None = Field(None, ge=32)  # online KD: default the teacher's own
    max_steps: int | None = Field(None, ge=1)  # stop early (benchmarks, smoke runs)
    checkpoint_every: int = Field(0, ge=0)  # steps between mid-epoch checkpoints (0: per epoch)
    retry_budget_s: float = Field(600.0, ge=0)  # how long a store read retries an outage
    tensorboard: bool = True
    progress: bool = True
    resume: bool = False  # continue from RUN_DIR/last.pth
    record_samples: bool = False  # write each rank's sample ids per epoch (audits, tests)
    recipe: str | None = None  # training-recipe preset, see student/recipes.py
    curriculum: str | None = None  # efficientnetv2-progressive | efficientrain
    curriculum_stages: int | None = Field(None, ge=2)  # default: the curriculum's own
    size_start: int | None = Field(None, ge=8)  # first image size / bandwidth of a curriculum
    drop_rate_start: float | None = Field(None, ge=0, lt=1)  # progressive: first-stage dropout
    drop_path_start: float | None = Field(None, ge=0, lt=1)  # progressive: first-stage drop path
    lowfreq_mode: Literal["crop", "downsample"] = "crop"  # efficientrain: how views shrink
    ema_warmup: bool = False  # timm's EMA warmup (decay ramps up over the first steps)

    @model_validator(mode="before")
    @classmethod
    def _presets(cls, data: Any) -> Any:
        return apply_presets(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_presets(self) -> TrainConfig:
        if self.recipe is not None and self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; use one of {sorted(RECIPES)}")
        if self.curriculum is None:
            return self
        if self.curriculum not in CURRICULUM_DEFAULTS:
            raise ValueError(
                f"unknown curriculum {self.curriculum!r}; use one of {sorted(CURRICULUM_DEFAULTS)}"
            )
        if self.view_schedule != "stretch":
            raise ValueError(
                f"curriculum {self.curriculum} needs view_schedule='stretch' (the view slot must "
                f"follow training progress), got {self.view_schedule!r}"
            )
        if self.img_size and self.size_start and self.size_start > self.img_size:
            raise ValueError(
                f"size_start {self.size_start} exceeds img_size {self.img_size}: "
                "a curriculum grows the size up to img_size"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields (saved in the run folder and checkpoints)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A validated config from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)


def load_train_config(path: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """Merge a YAML config file (if any) with CLI overrides (non-None values win)."""
    base: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping of option: value")
        base.update(loaded)
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig.from_dict(base)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        raise ValueError(f"bad training option {where}: {first['msg']}") from None
