"""Training-recipe presets for students (`distill train --recipe NAME`) and curriculum defaults.

A preset is a set of :class:`~student.config.TrainConfig` values applied *before* the explicit
ones: a value given on the command line, in the YAML file or as a keyword always wins (see
:func:`apply_presets`, called by ``TrainConfig``'s validator on exactly the keys it was given).
A few values depend on the store or the model and are settled when training starts
(:func:`student.config.resolve_recipe`), again only for options nobody set explicitly.

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

from typing import Any

# The curricula are their own table; their names are importable from here as before.
from student.curricula import CURRICULA
from student.curricula import EFFICIENTRAIN as EFFICIENTRAIN
from student.curricula import PROGRESSIVE as PROGRESSIVE

RESNET_RS = "resnet-rs"

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

# Curriculum defaults, from the curricula table (student/curricula.py).
CURRICULUM_DEFAULTS: dict[str, dict[str, Any]] = {
    name: dict(spec.train_defaults) for name, spec in CURRICULA.items()
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
