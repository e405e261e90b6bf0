"""Base specs of the scalable student families, as timm builds them (pure: no torch, no timm)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's ``make_divisible`` (timm.layers.helpers), replicated so this module stays pure."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def round_channels(channels: int, multiplier: float, round_limit: float) -> int:
    return make_divisible(channels * multiplier, 8, round_limit) if multiplier else channels


@dataclass(frozen=True)
class EffNetV2Base:
    """A timm EfficientNetV2 generator's arch_def, as (block, repeats, stride, exp, out, se)."""

    name: str
    generator: str  # name of the module-level generator in timm.models.efficientnet
    stages: tuple[tuple[str, int, int, float, int, float], ...]
    stem: int
    num_features: int
    channel_multiplier: float
    depth_multiplier: float
    round_limit: float
    resolution: int  # timm's train size
    rw: bool | None = None  # the `rw` flag of _gen_efficientnetv2_s
    tf: bool = False  # tf_ variants: TF BN eps and 'same' padding

    def depths(self) -> tuple[int, ...]:
        # decode_arch_def(depth_trunc='ceil') on one block string per stage.
        return tuple(math.ceil(st[1] * self.depth_multiplier) for st in self.stages)


_V2_S = (
    ("cn", 2, 1, 1.0, 24, 0.0),
    ("er", 4, 2, 4.0, 48, 0.0),
    ("er", 4, 2, 4.0, 64, 0.0),
    ("ir", 6, 2, 4.0, 128, 0.25),
    ("ir", 9, 1, 6.0, 160, 0.25),
    ("ir", 15, 2, 6.0, 256, 0.25),
)
_V2_S_RW = (("er", 2, 1, 1.0, 24, 0.0), *_V2_S[1:5], ("ir", 15, 2, 6.0, 272, 0.25))
_V2_BASE = (
    ("cn", 1, 1, 1.0, 16, 0.0),
    ("er", 2, 2, 4.0, 32, 0.0),
    ("er", 2, 2, 4.0, 48, 0.0),
    ("ir", 3, 2, 4.0, 96, 0.25),
    ("ir", 5, 1, 6.0, 112, 0.25),
    ("ir", 8, 2, 6.0, 192, 0.25),
)

_S = "_gen_efficientnetv2_s"
EFFNETV2_BASES = {
    b.name: b
    for b in (
        EffNetV2Base("efficientnetv2_rw_t", _S, _V2_S, 24, 1280, 0.8, 0.9, 0.9, 224, rw=False),
        EffNetV2Base("efficientnetv2_rw_s", _S, _V2_S_RW, 24, 1792, 1.0, 1.0, 0.9, 288, rw=True),
        EffNetV2Base("efficientnetv2_s", _S, _V2_S, 24, 1280, 1.0, 1.0, 0.9, 300, rw=False),
        *(
            EffNetV2Base(
                f"tf_efficientnetv2_b{i}",
                "_gen_efficientnetv2_base",
                _V2_BASE,
                32,
                1280,
                cm,
                dm,
                0.0,
                res,
                tf=True,
            )
            for i, (cm, dm, res) in enumerate(
                ((1.0, 1.0, 192), (1.0, 1.1, 192), (1.1, 1.2, 208), (1.2, 1.4, 240))
            )
        ),
    )
}


@dataclass(frozen=True)
class TinyVitBase:
    name: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    window_sizes: tuple[int, ...]  # at the native 224
    resolution: int = 224
    head_dim: int = 32


TINY_VIT_BASES = {
    b.name: b
    for b in (
        TinyVitBase("tiny_vit_5m_224", (64, 128, 160, 320), (2, 2, 6, 2), (7, 7, 14, 7)),
        TinyVitBase("tiny_vit_11m_224", (64, 128, 256, 448), (2, 2, 6, 2), (7, 7, 14, 7)),
        TinyVitBase("tiny_vit_21m_224", (96, 192, 384, 576), (2, 2, 6, 2), (7, 7, 14, 7)),
    )
}

SCALE_FAMILIES: dict[str, tuple[str, ...]] = {
    "efficientnetv2": tuple(EFFNETV2_BASES),
    "tiny_vit": tuple(TINY_VIT_BASES),
}
DEFAULT_BASES = {"efficientnetv2": "efficientnetv2_rw_t", "tiny_vit": "tiny_vit_5m_224"}
RESOLUTION_GRID = {"efficientnetv2": 8, "tiny_vit": 32}


def base_spec(family: str, base: str | None) -> EffNetV2Base | TinyVitBase:
    if family not in SCALE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(SCALE_FAMILIES)}")
    name = base or DEFAULT_BASES[family]
    table: dict[str, Any] = EFFNETV2_BASES if family == "efficientnetv2" else TINY_VIT_BASES
    if name not in table:
        raise ValueError(
            f"unknown {family} base {name!r}; choose one of {', '.join(SCALE_FAMILIES[family])}"
        )
    return table[name]
