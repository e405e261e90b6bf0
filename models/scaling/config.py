"""ScaledConfig: a scaled student, the rule's ideal multipliers and the concrete architecture."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from models.scaling.families import EffNetV2Base, base_spec
from models.scaling.rule import check_s

SCALED_CONFIG_VERSION = 1


@dataclass(frozen=True)
class ScaledConfig:
    """A scaled student: the rule's ideal multipliers and the concrete architecture built.

    ``depths``/``widths`` are per stage (EfficientNetV2: blocks and output channels of its six
    stages; TinyViT: blocks and embed dims of its four stages). ``channel_multiplier`` is the
    timm ``channel_multiplier`` (EfficientNetV2 only); ``num_heads``/``window_sizes`` are TinyViT's.
    ``est_flops_ratio`` is the analytic FLOPs of this config over the base's at the base resolution.
    """

    family: str
    base: str
    rule: str
    s: float
    alpha: float | None
    regime: str | None
    depth_mult: float
    width_mult: float
    resolution_mult: float
    base_resolution: int
    resolution: int
    base_depths: tuple[int, ...]
    depths: tuple[int, ...]
    base_widths: tuple[int, ...]
    widths: tuple[int, ...]
    channel_multiplier: float | None = None
    num_heads: tuple[int, ...] = ()
    window_sizes: tuple[int, ...] = ()
    est_flops_ratio: float = 1.0
    version: int = SCALED_CONFIG_VERSION

    @property
    def eff_depth_mult(self) -> float:
        """Total blocks over the base's."""
        return sum(self.depths) / sum(self.base_depths)

    @property
    def eff_width_mult(self) -> float:
        """Geometric mean of the per-stage width ratios."""
        logs = [math.log(w / b) for w, b in zip(self.widths, self.base_widths, strict=True)]
        return math.exp(sum(logs) / len(logs))

    @property
    def eff_resolution_mult(self) -> float:
        return self.resolution / self.base_resolution

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScaledConfig:
        if not isinstance(d, dict):
            raise ValueError(f"ScaledConfig.from_dict needs a dict, got {type(d).__name__}")
        version = d.get("version")
        if version != SCALED_CONFIG_VERSION:
            raise ValueError(
                f"unsupported ScaledConfig version {version!r} (this code reads "
                f"{SCALED_CONFIG_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown ScaledConfig keys: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            cfg = cls(**kwargs)
        except TypeError as e:
            raise ValueError(f"bad ScaledConfig dict: {e}") from None
        spec = base_spec(cfg.family, cfg.base)  # validates family and base
        check_s(cfg.s)
        n = len(spec.stages) if isinstance(spec, EffNetV2Base) else len(spec.depths)
        for key in ("base_depths", "depths", "base_widths", "widths"):
            v = getattr(cfg, key)
            if len(v) != n or not all(isinstance(x, int) and x >= 1 for x in v):
                raise ValueError(f"ScaledConfig {key} must be {n} integers >= 1, got {v!r}")
        for key in ("resolution", "base_resolution"):
            v = getattr(cfg, key)
            if not isinstance(v, int) or v < 32:
                raise ValueError(f"ScaledConfig {key} must be an integer >= 32, got {v!r}")
        return cfg
