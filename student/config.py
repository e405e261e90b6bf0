"""`distill train` configuration: one frozen model, from CLI flags and/or a YAML file, and the
settling of its recipe presets that depend on the store or the model (:func:`resolve_recipe`).

The presets themselves are tables in :mod:`student.recipes` and :mod:`student.curricula`,
which never import this module (no cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from student.loader_config import LoaderConfig
from student.recipes import (
    CURRICULUM_DEFAULTS,
    RECIPES,
    RESNET_RS,
    RESNET_RS_HARD_LABEL_WEIGHT,
    apply_presets,
    resnet_rs_drop_path,
    resnet_rs_weight_decay,
)
from teacher_store.options import (
    DEFAULT_READ_THREADS,
    MAX_BATCH,
    MAX_IMG_SIZE,
    MAX_READ_THREADS,
    MAX_SEED,
    MAX_WORKERS,
    validate_options,
)


class TrainConfig(BaseModel):
    """Everything a training run needs; its resolved form is saved in RUN_DIR and checkpoints.

    ``recipe`` and ``curriculum`` presets (student/recipes.py) fill the options that were not
    given explicitly: the validator sees exactly the keys passed in (YAML + CLI flags, or
    keywords), so explicit values always win and a saved dict round-trips unchanged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    # One store, or several stores of the same views: their teachers' ensemble.
    store: str | list[str]
    data: str
    model: str
    out: str
    epochs: int = Field(10, ge=1)
    # Sizes that set an allocation are bounded far above real use (teacher_store.options).
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    img_size: int | None = Field(None, ge=32, le=MAX_IMG_SIZE)  # default: the teacher's size
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
    workers: int = Field(2, ge=0, le=MAX_WORKERS)
    # Threads per replaying process reading the coming batches' images ahead (0: none).
    read_threads: int = Field(DEFAULT_READ_THREADS, ge=0, le=MAX_READ_THREADS)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    token_file: str | None = None
    allow_dataset_mismatch: bool = False
    teacher: str | None = None  # online-KD baseline: run this teacher every step
    teacher_checkpoint: str | None = None
    teacher_img_size: int | None = Field(
        None, ge=32, le=MAX_IMG_SIZE
    )  # online KD: default the teacher's own
    max_steps: int | None = Field(None, ge=1)  # stop early (benchmarks, smoke runs)
    checkpoint_every: int = Field(0, ge=0)  # steps between mid-epoch checkpoints (0: per epoch)
    retry_budget_s: float = Field(600.0, ge=0)  # how long a store read retries an outage
    tensorboard: bool = True
    progress: bool = True
    resume: bool = False  # continue from RUN_DIR/last.pth
    record_samples: bool = False  # write each rank's sample ids per epoch (audits, tests)
    recipe: str | None = None  # training-recipe preset, see student/recipes.py
    curriculum: str | None = None  # a name in student/curricula.py
    curriculum_stages: int | None = Field(None, ge=2)  # default: the curriculum's own
    size_start: int | None = Field(
        None, ge=8, le=MAX_IMG_SIZE
    )  # first image size / bandwidth of a curriculum
    drop_rate_start: float | None = Field(None, ge=0, lt=1)  # progressive: first-stage dropout
    drop_path_start: float | None = Field(None, ge=0, lt=1)  # progressive: first-stage drop path
    lowfreq_mode: Literal["crop", "downsample"] = "crop"  # efficientrain: how views shrink
    ema_warmup: bool = False  # timm's EMA warmup (decay ramps up over the first steps)
    # Several stores: each teacher's weight in the mixture (normalized; default equal).
    teacher_weights: list[float] | None = None

    @field_validator("store", mode="before")
    @classmethod
    def _one_store_is_a_string(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if not v:
                raise ValueError("give at least one store")
            return str(v[0]) if len(v) == 1 else [str(x) for x in v]
        return v

    @model_validator(mode="after")
    def _check_weights(self) -> TrainConfig:
        if self.teacher_weights is None:
            return self
        count = 1 if isinstance(self.store, str) else len(self.store)
        if len(self.teacher_weights) != count:
            raise ValueError(
                f"{len(self.teacher_weights)} teacher weights for {count} stores: give one each"
            )
        w = self.teacher_weights
        if any(not x >= 0 for x in w) or sum(w) <= 0:  # also NaN
            raise ValueError(f"teacher weights {w} must be >= 0, not all 0")
        return self

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

    def loader_config(self, **runtime: Any) -> LoaderConfig:
        """The :class:`LoaderConfig` of this run: the options it shares with the loader, plus
        ``runtime`` values only known when training starts (img_size, rank, world_size,
        pin_memory, teacher_size, with_targets)."""
        mine = {
            "batch_size": self.batch_size,
            "workers": self.workers,
            "read_threads": self.read_threads,
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "epochs": self.epochs,
            "view_schedule": self.view_schedule,
            "allow_dataset_mismatch": self.allow_dataset_mismatch,
        }
        return LoaderConfig.from_dict({**mine, **runtime})


def load_train_config(path: str | None, overrides: dict[str, Any]) -> TrainConfig:
    """Merge a YAML config file (if any) with CLI overrides (non-None values win).

    Bad options are an :class:`~teacher_store.options.OptionsError`: one line per option,
    naming the flag, or the file's key when the value came from the file."""
    base: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {p} must hold a mapping of option: value")
        base.update(loaded)
    flags = {k: v for k, v in overrides.items() if v is not None}
    from_file = set(base) - set(flags)
    base.update(flags)
    return validate_options(TrainConfig, base, file=path, file_keys=from_file)


def active_regularizers(cfg: TrainConfig, store_recipe: dict[str, Any]) -> list[str]:
    """Names of the regularizers a run has on (the weight-decay rule counts them)."""
    on = []
    if cfg.drop_rate > 0:
        on.append("dropout")
    if cfg.drop_path > 0:
        on.append("stochastic depth")
    if cfg.label_smoothing > 0 and cfg.hard_label_weight > 0:
        on.append("label smoothing")
    if store_recipe.get("randaug_n", 0) > 0 and _max_knob(store_recipe, "randaug_m") > 0:
        on.append("RandAugment (store)")
    mixing = max(_max_knob(store_recipe, "mixup_alpha"), _max_knob(store_recipe, "cutmix_alpha"))
    if _max_knob(store_recipe, "mix_prob") > 0 and mixing > 0:
        on.append("MixUp/CutMix (store)")
    return on


def _max_knob(recipe: dict[str, Any], knob: str) -> float:
    ramp = recipe.get("ramp") or {}
    return float(max(ramp[knob])) if knob in ramp else float(recipe.get(knob, 0.0))


def resolve_recipe(
    cfg: TrainConfig, store_recipe: dict[str, Any], aligned: bool, num_params: int
) -> tuple[TrainConfig, list[str]]:
    """Settle the store- and model-dependent preset values nobody set; return notes to print."""
    if cfg.recipe != RESNET_RS:
        return cfg, []
    explicit, update, notes = cfg.model_fields_set, {}, []
    if "hard_label_weight" not in explicit:
        update["hard_label_weight"] = RESNET_RS_HARD_LABEL_WEIGHT if aligned else 0.0
        if not aligned:
            notes.append(
                "resnet-rs: the teacher's classes are not the folder's, so there are no hard "
                "labels to smooth; this run stays KD-only (label_smoothing unused)"
            )
    if "drop_path" not in explicit:
        update["drop_path"] = resnet_rs_drop_path(num_params)
    cfg = _updated(cfg, update)
    on = active_regularizers(cfg, store_recipe)
    if "weight_decay" not in explicit:
        update["weight_decay"] = resnet_rs_weight_decay(len(on))
    name = store_recipe.get("name", "?")
    if not any(r.startswith("RandAugment") for r in on):
        notes.append(
            f"resnet-rs: store recipe {name!r} has no RandAugment; ResNet-RS trains with it "
            "(regenerate the store with e.g. `distill generate --recipe default`)"
        )
    cfg = _updated(cfg, update)
    notes.append(
        f"resnet-rs: regularizers on: {', '.join(on) or 'none'} -> weight decay "
        f"{cfg.weight_decay:g}; drop_path {cfg.drop_path:g}; hard-label weight "
        f"{cfg.hard_label_weight:g}"
    )
    return cfg, notes


def _updated(cfg: TrainConfig, update: dict[str, Any]) -> TrainConfig:
    """``cfg`` with ``update`` applied, validated again (every field then counts as set)."""
    return type(cfg).from_dict({**cfg.to_dict(), **update})
