"""Training-recipe presets for students (`distill train --recipe NAME`) and curriculum defaults.

A preset is a set of :class:`~student.config.TrainConfig` values applied *before* the explicit
ones: a value given on the command line, in the YAML file or as a keyword always wins (see
:func:`apply_presets`, called by ``TrainConfig``'s validator on exactly the keys it was given).
A few values depend on the store or the model and are settled when training starts
(:func:`resolve_recipe`), again only for options nobody set explicitly.

``--recipe resnet-rs`` (Bello et al. 2021, "Revisiting ResNets", Table 1 and appendix):

==========================  =================================  ===============================
option                      value                              paper / note
==========================  =================================  ===============================
``sched``                   ``cosine``                         cosine LR decay
``opt`` / ``momentum``      ``sgd`` / ``0.9``                  momentum optimizer
``lr``                      ``0.1 * batch_size / 256``         1.6 at batch 4096
``label_smoothing``         ``0.1``                            on the hard-label term, which
                                                               is only on when the teacher's
                                                               classes are the folder's
``hard_label_weight``       ``0.5`` if classes align, else 0   KD-only otherwise (said at start)
``drop_rate``               ``0.25``                           dropout before the classifier
``drop_path``               ``0.0`` (< 60M params), ``0.1``    stochastic depth grows with
                            (< 150M), ``0.2`` above            model size in ResNet-RS
``ema`` / ``ema_decay``     on / ``0.9999``                    EMA of the weights, with timm's
                                                               EMA warmup (``ema_warmup``) so
                                                               short runs are not dominated
                                                               by the initial weights
``weight_decay``            ``4e-5`` when two or more          1e-4 -> 4e-5 "when using
                            regularizers are on, else 1e-4     more regularization"
RandAugment                 store side                         ResNet-RS uses RandAugment; the
                                                               store's recipe decides it (the
                                                               start-up note says which)
==========================  =================================  ===============================

Regularizers counted for the weight-decay rule: dropout, stochastic depth, label smoothing
(only when the hard-label term is on), RandAugment in the store's recipe, MixUp/CutMix in it.

Pure Python: no torch at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from student.config import TrainConfig

RESNET_RS = "resnet-rs"
PROGRESSIVE = "efficientnetv2-progressive"
EFFICIENTRAIN = "efficientrain"

# Static preset values (the lr depends on the batch size: see recipe_defaults).
RECIPES: dict[str, dict[str, Any]] = {
    RESNET_RS: {
        "sched": "cosine",
        "opt": "sgd",
        "momentum": 0.9,
        "label_smoothing": 0.1,
        "drop_rate": 0.25,
        "ema": True,
        "ema_decay": 0.9999,
        "ema_warmup": True,
    },
}
RESNET_RS_LR_PER_256 = 0.1
RESNET_RS_HARD_LABEL_WEIGHT = 0.5
RESNET_RS_WEIGHT_DECAY = (1e-4, 4e-5)  # (at most one regularizer, several regularizers)

# Curriculum defaults: both curricula need the view slot to follow training progress.
# EfficientNetV2-S (Tan & Le 2021, Table 6) ramps dropout 0.1 -> 0.3; stochastic depth ends
# at 0.2 (its fixed rate in the paper), ramped from 0 here as the issue asks.
CURRICULUM_DEFAULTS: dict[str, dict[str, Any]] = {
    PROGRESSIVE: {"view_schedule": "stretch", "drop_rate": 0.3, "drop_path": 0.2},
    EFFICIENTRAIN: {"view_schedule": "stretch"},
}


def _known(kind: str, name: str, table: dict[str, Any]) -> None:
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; use one of {sorted(table)}")


def recipe_defaults(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Preset values of recipe ``name``; ``given`` (explicit options) fixes the batch size."""
    _known("training recipe", name, RECIPES)
    out = dict(RECIPES[name])
    if name == RESNET_RS:
        batch = int(given.get("batch_size") or 32)
        out["lr"] = RESNET_RS_LR_PER_256 * batch / 256
    return out


def curriculum_defaults(name: str) -> dict[str, Any]:
    _known("curriculum", name, CURRICULUM_DEFAULTS)
    return dict(CURRICULUM_DEFAULTS[name])


def apply_presets(given: dict[str, Any]) -> dict[str, Any]:
    """Explicit options over curriculum defaults over recipe defaults (a new dict)."""
    base: dict[str, Any] = {}
    if given.get("recipe"):
        base.update(recipe_defaults(str(given["recipe"]), given))
    if given.get("curriculum"):
        base.update(curriculum_defaults(str(given["curriculum"])))
    base.update(given)
    return base


def resnet_rs_weight_decay(regularizers: int) -> float:
    """1e-4 with at most one regularizer on, 4e-5 with several (ResNet-RS)."""
    if regularizers < 0:
        raise ValueError(f"regularizers must be >= 0, got {regularizers}")
    return RESNET_RS_WEIGHT_DECAY[1] if regularizers >= 2 else RESNET_RS_WEIGHT_DECAY[0]


def resnet_rs_drop_path(num_params: int) -> float:
    """Stochastic-depth rate by model size: 0.0 below 60M parameters, 0.1 below 150M, else 0.2."""
    if num_params < 0:
        raise ValueError(f"num_params must be >= 0, got {num_params}")
    return 0.0 if num_params < 60_000_000 else 0.1 if num_params < 150_000_000 else 0.2


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
