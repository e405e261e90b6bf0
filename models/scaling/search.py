"""scale_config: the rule applied to a concrete base model, rounded so FLOPs stay on target."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Any

from models.scaling.config import ScaledConfig
from models.scaling.families import RESOLUTION_GRID, EffNetV2Base, TinyVitBase, base_spec
from models.scaling.flops import (
    effnet_flops,
    effnet_parts,
    effnet_widths,
    tiny_vit_flops,
    tiny_vit_windows,
)
from models.scaling.rule import DEFAULT_ALPHA, rule_multipliers

FLOPS_TOLERANCE = 0.03  # relative; candidates within it are ranked by closeness to the rule


def _floor_ceil(x: float, lo: int = 1) -> tuple[int, ...]:
    return tuple(sorted({max(lo, math.floor(x + 1e-9)), max(lo, math.ceil(x - 1e-9))}))


def _resolution_candidates(base_res: int, mult: float, grid: int) -> tuple[int, ...]:
    k = (base_res * mult - base_res) / grid
    cands = {base_res + grid * j for j in (math.floor(k + 1e-9), math.ceil(k - 1e-9))}
    return tuple(sorted(r for r in cands if r >= 32)) or (base_res,)


def _log_dev(actual: Iterable[float], ideal: Iterable[float]) -> float:
    devs = [abs(math.log(a / i)) for a, i in zip(actual, ideal, strict=True)]
    return sum(devs) / len(devs)


def _pick(cands: Iterable[tuple[float, float, Any]], target: float) -> tuple[float, Any]:
    """(flops, payload) of the best (flops, shape deviation, payload) candidate."""
    best_key: tuple[int, float, float] | None = None
    best: tuple[float, Any] = (0.0, None)
    tol = math.log1p(FLOPS_TOLERANCE)
    for flops, dev, payload in cands:
        err = abs(math.log(flops / target))
        key = (0, dev, err) if err <= tol else (1, err, dev)
        if best_key is None or key < best_key:
            best_key, best = key, (flops, payload)
    return best


def scale_config(
    family: str,
    s: float,
    alpha: float | None = None,
    rule: str = "fast",
    *,
    base: str | None = None,
    resolution: int | None = None,
    regime: str = "long",
) -> ScaledConfig:
    """Scale ``base`` of ``family`` (default: its smallest) by FLOPs multiplier ``s``.

    ``resolution`` is the base's input size (default: the base's timm train size). Pure and
    deterministic; raises ValueError naming any bad value. See the module docstring for the rules
    and for how the concrete depths, widths and resolution are chosen.
    """
    spec = base_spec(family, base)
    d_mult, w_mult, r_mult = rule_multipliers(s, alpha, rule, regime)
    s = float(s)
    grid = RESOLUTION_GRID[family]
    res0 = spec.resolution if resolution is None else resolution
    if isinstance(res0, bool) or not isinstance(res0, int) or res0 < 32:
        raise ValueError(f"resolution must be an integer >= 32, got {resolution!r}")
    if family == "tiny_vit" and res0 % 32:
        raise ValueError(f"tiny_vit resolution must be a multiple of 32, got {res0}")
    res_cands = _resolution_candidates(res0, r_mult, grid)
    common: dict[str, Any] = dict(
        family=family,
        base=spec.name,
        rule=rule,
        s=s,
        alpha=(DEFAULT_ALPHA if alpha is None else float(alpha)) if rule == "fast" else None,
        regime=regime if rule == "resnet-rs" else None,
        depth_mult=d_mult,
        width_mult=w_mult,
        resolution_mult=r_mult,
        base_resolution=res0,
    )
    if isinstance(spec, EffNetV2Base):
        return _scale_effnet(spec, s, d_mult, w_mult, r_mult, res0, res_cands, common)
    return _scale_tiny_vit(spec, s, d_mult, w_mult, r_mult, res0, res_cands, common)


def _scale_effnet(
    spec: EffNetV2Base,
    s: float,
    d_mult: float,
    w_mult: float,
    r_mult: float,
    res0: int,
    res_cands: tuple[int, ...],
    common: dict[str, Any],
) -> ScaledConfig:
    base_depths = spec.depths()
    _, _, base_widths = effnet_widths(spec, spec.channel_multiplier)
    base_flops = effnet_flops(spec, spec.channel_multiplier, base_depths, res0)
    depth_opts = [_floor_ceil(d * d_mult) for d in base_depths]
    ideal_d = [d * d_mult for d in base_depths]
    ideal_w = [w * w_mult for w in base_widths]
    # timm takes one global channel_multiplier: try it on a 1 % grid around the ideal.
    ideal_cm = spec.channel_multiplier * w_mult
    cms = sorted({round(ideal_cm * math.exp(k / 100), 6) for k in range(-25, 26)})
    if w_mult == 1.0:
        cms = sorted({*cms, spec.channel_multiplier})

    def candidates() -> Iterable[tuple[float, float, Any]]:
        for res in res_cands:
            r_dev = abs(math.log(res / (res0 * r_mult)))
            for cm in cms:
                fixed, parts, widths = effnet_parts(spec, cm, res)
                w_dev = _log_dev(widths, ideal_w)
                for depths in itertools.product(*depth_opts):
                    per_stage = zip(parts, depths, strict=True)
                    macs = fixed + sum(f + (d - 1) * r for (f, r), d in per_stage)
                    dev = _log_dev(depths, ideal_d) + w_dev + r_dev
                    yield 2.0 * macs, dev, (res, cm, depths, widths)

    flops, (res, cm, depths, widths) = _pick(candidates(), s * base_flops)
    return ScaledConfig(
        **common,
        resolution=res,
        base_depths=base_depths,
        depths=tuple(depths),
        base_widths=base_widths,
        widths=widths,
        channel_multiplier=cm,
        est_flops_ratio=flops / base_flops,
    )


def _scale_tiny_vit(
    spec: TinyVitBase,
    s: float,
    d_mult: float,
    w_mult: float,
    r_mult: float,
    res0: int,
    res_cands: tuple[int, ...],
    common: dict[str, Any],
) -> ScaledConfig:
    hd = spec.head_dim
    grids = (16, *([hd] * (len(spec.embed_dims) - 1)))  # stage 0 is convolutional
    base_widths = spec.embed_dims
    base_flops = tiny_vit_flops(spec, base_widths, spec.depths, res0)
    ideal_d = [d * d_mult for d in spec.depths]
    ideal_w = [w * w_mult for w in base_widths]
    depth_opts = [_floor_ceil(d) for d in ideal_d]
    # One grid step beyond floor and ceil too: the 32-wide head grid is coarse.
    width_opts = [
        tuple(g * k for k in range(max(1, math.floor(w / g) - 1), math.ceil(w / g) + 2))
        for w, g in zip(ideal_w, grids, strict=True)
    ]

    def candidates() -> Iterable[tuple[float, float, Any]]:
        for res in res_cands:
            r_dev = abs(math.log(res / (res0 * r_mult)))
            for widths in itertools.product(*width_opts):
                w_dev = _log_dev(widths, ideal_w)
                for depths in itertools.product(*depth_opts):
                    dev = _log_dev(depths, ideal_d) + w_dev + r_dev
                    yield tiny_vit_flops(spec, widths, depths, res), dev, (res, widths, depths)

    flops, (res, widths, depths) = _pick(candidates(), s * base_flops)
    return ScaledConfig(
        **common,
        resolution=res,
        base_depths=spec.depths,
        depths=tuple(depths),
        base_widths=base_widths,
        widths=tuple(widths),
        num_heads=tuple(max(1, w // hd) for w in widths),
        window_sizes=tiny_vit_windows(spec, res),
        est_flops_ratio=flops / base_flops,
    )
