"""Compound scaling of student families: fast compound scaling and the ResNet-RS rule.

Three steps, kept apart so that the rule can be tested without building anything:

1. :func:`rule_multipliers` — the scaling rule as pure math. With FLOPs ∝ d·w²·r², a FLOPs
   multiplier ``s`` is split between depth ``d``, width ``w`` and resolution ``r``:

   * ``rule="fast"`` — Dollár, Singh, Girshick, "Fast and Accurate Model Scaling", CVPR 2021
     (arXiv:2103.06877): ``d' = s^((1−α)/2)·d``, ``w' = s^(α/2)·w``, ``r' = s^((1−α)/4)·r``, so
     d'·w'²·r'² = s for every α. α = 0.8 (default) is the paper's "fast" scaling (mostly width,
     which adds the fewest activations, hence the lowest runtime on memory-bound hardware);
     α = 1/3 is uniform scaling (each of d, w², r² takes s^(1/3)); α = 1 is width only. Activations
     grow as s^(1 − α/2): most for α = 1/3, least for α = 1.
   * ``rule="resnet-rs"`` — Bello et al., "Revisiting ResNets: Improved Training and Scaling
     Strategies", NeurIPS 2021 (arXiv:2103.07579), whose guidance is (1) scale depth in regimes
     where overfitting can occur (long training, e.g. 350 epochs) and width otherwise (short
     training), and (2) increase image resolution more slowly than EfficientNet's compound rule
     (which grows r as ≈ s^0.2). Our exact formula: resolution takes a quarter of the FLOPs
     exponent, ``r' = s^(1/8)·r`` (r'² = s^(1/4)); the remaining factor s^(3/4) goes to depth in the
     ``regime="long"`` (overfitting) case, ``d' = s^(3/4)·d, w' = w``, and to width in the
     ``regime="short"`` case, ``w' = s^(3/8)·w, d' = d``. α is not used by this rule.

2. :func:`scale_config` — the rule applied to a concrete base model (pure: no torch, no timm).
   Depths must be integers ≥ 1, widths multiples of the family's channel grid (8 for
   EfficientNetV2, the 32-wide attention head for TinyViT), resolutions on a grid anchored at the
   base resolution (8 pixels for EfficientNetV2; 32 for TinyViT, whose windows must tile the
   feature maps). Naive rounding can miss the FLOPs target by 20 % at small s, so each stage's
   depth is tried rounded down and up, the resolution on the grid points either side of the
   ideal, and widths around the ideal (EfficientNetV2: timm's one ``channel_multiplier`` on a 1 %
   grid within ±25 %; TinyViT: each stage from one grid step below the floor to one above the
   ceil). Every candidate's FLOPs come from an exact analytic count of the timm architecture
   (convs, linears and attention matmuls, counted as torch's flop counter counts them; a test
   checks equality). The pick: among candidates within ``FLOPS_TOLERANCE`` (3 %) of s × base
   FLOPs, the one whose per-stage depths, widths and resolution are closest (mean |log ratio|) to
   the rule's ideal; if none is within tolerance, the one with the closest FLOPs. TinyViT's window
   sizes follow the resolution, keeping the base's number of windows per side at its native 224
   (timm's (7, 7, 14, 7) there; (r/32, r/32, r/16, r/32) at r), with one 32-wide head per 32
   channels. The analytic count assumes a 1000-class classifier (it shifts ratios by < 1 %).

3. :func:`build_scaled` builds the timm model for a :class:`ScaledConfig`, and :func:`measure`
   reports params, FLOPs, activations and measured latency — the EfficientFormer lesson (Li et
   al., NeurIPS 2022): latency on the target device, not FLOPs, is what to optimize.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SCALED_CONFIG_VERSION = 1
RULES = ("fast", "resnet-rs")
REGIMES = ("long", "short")
DEFAULT_ALPHA = 0.8
FLOPS_TOLERANCE = 0.03  # relative; candidates within it are ranked by closeness to the rule
_ESTIMATE_CLASSES = 1000  # classifier size used by the analytic FLOPs count


# --------------------------------------------------------------------------- the rule (pure math)


def _check_s(s: float) -> float:
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise ValueError(f"s must be a number > 0, got {s!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"s must be a finite number > 0, got {s!r}")
    return s


def rule_multipliers(
    s: float, alpha: float | None = None, rule: str = "fast", regime: str = "long"
) -> tuple[float, float, float]:
    """Ideal (depth, width, resolution) multipliers with d·w²·r² = s (see the module docstring).

    ``alpha`` defaults to 0.8 for ``rule="fast"`` and must be None for ``rule="resnet-rs"``;
    ``regime`` ("long" → depth, "short" → width) is used by ``resnet-rs`` only.
    """
    s = _check_s(s)
    if rule == "fast":
        a = DEFAULT_ALPHA if alpha is None else alpha
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        a = float(a)
        return s ** ((1.0 - a) / 2.0), s ** (a / 2.0), s ** ((1.0 - a) / 4.0)
    if rule == "resnet-rs":
        if alpha is not None:
            raise ValueError(
                f"alpha applies to rule 'fast' only, got alpha={alpha!r} with 'resnet-rs'"
            )
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
        r = s ** (1.0 / 8.0)
        if regime == "long":
            return s ** (3.0 / 4.0), 1.0, r
        return 1.0, s ** (3.0 / 8.0), r
    raise ValueError(f"unknown scaling rule {rule!r}; choose one of {', '.join(RULES)}")


# ----------------------------------------------------------------------------- family base specs


def _make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """timm's ``make_divisible`` (timm.layers.helpers), replicated so this module stays pure."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def _round_channels(channels: int, multiplier: float, round_limit: float) -> int:
    return _make_divisible(channels * multiplier, 8, round_limit) if multiplier else channels


@dataclass(frozen=True)
class _EffNetV2Base:
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
_EFFNETV2_BASES = {
    b.name: b
    for b in (
        _EffNetV2Base("efficientnetv2_rw_t", _S, _V2_S, 24, 1280, 0.8, 0.9, 0.9, 224, rw=False),
        _EffNetV2Base("efficientnetv2_rw_s", _S, _V2_S_RW, 24, 1792, 1.0, 1.0, 0.9, 288, rw=True),
        _EffNetV2Base("efficientnetv2_s", _S, _V2_S, 24, 1280, 1.0, 1.0, 0.9, 300, rw=False),
        *(
            _EffNetV2Base(
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
class _TinyVitBase:
    name: str
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    window_sizes: tuple[int, ...]  # at the native 224
    resolution: int = 224
    head_dim: int = 32


_TINY_VIT_BASES = {
    b.name: b
    for b in (
        _TinyVitBase("tiny_vit_5m_224", (64, 128, 160, 320), (2, 2, 6, 2), (7, 7, 14, 7)),
        _TinyVitBase("tiny_vit_11m_224", (64, 128, 256, 448), (2, 2, 6, 2), (7, 7, 14, 7)),
        _TinyVitBase("tiny_vit_21m_224", (96, 192, 384, 576), (2, 2, 6, 2), (7, 7, 14, 7)),
    )
}

SCALE_FAMILIES: dict[str, tuple[str, ...]] = {
    "efficientnetv2": tuple(_EFFNETV2_BASES),
    "tiny_vit": tuple(_TINY_VIT_BASES),
}
DEFAULT_BASES = {"efficientnetv2": "efficientnetv2_rw_t", "tiny_vit": "tiny_vit_5m_224"}
RESOLUTION_GRID = {"efficientnetv2": 8, "tiny_vit": 32}


# ------------------------------------------------------------------------ analytic FLOPs counts


def _conv_out(m: int, stride: int) -> int:
    return -(-m // stride)  # k3/pad1 (and 'same') convolutions: ceil(m / stride)


def _effnet_block_macs(
    bt: str, stride: int, exp: float, se: float, cin: int, cout: int, m_in: int
) -> int:
    m = _conv_out(m_in, stride)
    if bt == "cn":
        return 9 * cin * cout * m * m
    mid = _make_divisible(cin * exp)
    if bt == "er":  # fused MBConv: k3 conv (strided) then 1x1
        return 9 * cin * mid * m * m + mid * cout * m * m
    macs = cin * mid * m_in * m_in + 9 * mid * m * m + mid * cout * m * m  # 1x1, dw k3, 1x1
    if se:
        macs += 2 * mid * round(mid * se / exp)  # squeeze-excite on the pooled vector
    return macs


def _effnet_widths(base: _EffNetV2Base, cm: float) -> tuple[int, int, tuple[int, ...]]:
    """(stem, num_features, stage widths) that timm builds for channel_multiplier ``cm``."""
    stem = _round_channels(base.stem, cm, base.round_limit)
    nf = _round_channels(base.num_features, cm, base.round_limit)
    return stem, nf, tuple(_round_channels(st[4], cm, base.round_limit) for st in base.stages)


def _effnet_parts(
    base: _EffNetV2Base, cm: float, res: int
) -> tuple[int, list[tuple[int, int]], tuple[int, ...]]:
    """Fixed MACs and, per stage, (first block, each further block) MACs at width ``cm``."""
    stem, nf, widths = _effnet_widths(base, cm)
    m = _conv_out(res, 2)
    fixed = 27 * stem * m * m
    cin, parts = stem, []
    for (bt, _, stride, exp, _, se), cout in zip(base.stages, widths, strict=True):
        first = _effnet_block_macs(bt, stride, exp, se, cin, cout, m)
        m = _conv_out(m, stride)
        parts.append((first, _effnet_block_macs(bt, 1, exp, se, cout, cout, m)))
        cin = cout
    fixed += cin * nf * m * m + nf * _ESTIMATE_CLASSES
    return fixed, parts, widths


def _effnet_flops(base: _EffNetV2Base, cm: float, depths: Sequence[int], res: int) -> float:
    fixed, parts, _ = _effnet_parts(base, cm, res)
    return 2.0 * (fixed + sum(f + (d - 1) * r for (f, r), d in zip(parts, depths, strict=True)))


def _tiny_vit_maps(res: int) -> tuple[int, ...]:
    m0 = _conv_out(_conv_out(res, 2), 2)
    maps = [m0]
    for _ in range(3):
        maps.append(_conv_out(maps[-1], 2))
    return tuple(maps)


def _tiny_vit_windows(base: _TinyVitBase, res: int) -> tuple[int, ...]:
    """Window sizes at ``res`` that keep the base's number of windows per side at 224."""
    native = _tiny_vit_maps(base.resolution)
    per_side = [max(1, -(-m // w)) for m, w in zip(native, base.window_sizes, strict=True)]
    maps = _tiny_vit_maps(res)
    wins = [max(1, -(-m // n)) for m, n in zip(maps, per_side, strict=True)]
    wins[0] = wins[1]  # stage 0 is convolutional; its window size is unused
    return tuple(wins)


def _tiny_vit_stage_macs(
    i: int, cin: int, c: int, depth: int, m_in: int, m: int, window: int, head_dim: int
) -> int:
    if i == 0:  # MBConv blocks (expand 4): 1x1, dw 3x3, 1x1
        mid = 4 * c
        return depth * (2 * c * mid + 9 * mid) * m * m
    macs = cin * c * m_in * m_in + 9 * c * m * m + c * c * m * m  # PatchMerging
    n = m * m
    padded = n if m == window else (-(-m // window) * window) ** 2
    attn = padded * (3 * c * c + c * c + 2 * window * window * c)  # qkv, proj, q@k^T and attn@v
    block = attn + 9 * c * n + 8 * c * c * n  # local dw conv, MLP (ratio 4)
    return macs + depth * block


def _tiny_vit_flops(
    base: _TinyVitBase, widths: Sequence[int], depths: Sequence[int], res: int
) -> float:
    maps = _tiny_vit_maps(res)
    wins = _tiny_vit_windows(base, res)
    half = widths[0] // 2
    m_a = _conv_out(res, 2)
    macs = 27 * half * m_a * m_a + 9 * half * widths[0] * maps[0] * maps[0]  # PatchEmbed
    cin, m_in = widths[0], maps[0]
    for i, (c, d) in enumerate(zip(widths, depths, strict=True)):
        macs += _tiny_vit_stage_macs(i, cin, c, d, m_in, maps[i], wins[i], base.head_dim)
        cin, m_in = c, maps[i]
    macs += widths[-1] * _ESTIMATE_CLASSES
    return 2.0 * macs


# ------------------------------------------------------------------------------- ScaledConfig


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
        spec = _base_spec(cfg.family, cfg.base)  # validates family and base
        _check_s(cfg.s)
        n = len(spec.stages) if isinstance(spec, _EffNetV2Base) else len(spec.depths)
        for key in ("base_depths", "depths", "base_widths", "widths"):
            v = getattr(cfg, key)
            if len(v) != n or not all(isinstance(x, int) and x >= 1 for x in v):
                raise ValueError(f"ScaledConfig {key} must be {n} integers >= 1, got {v!r}")
        for key in ("resolution", "base_resolution"):
            v = getattr(cfg, key)
            if not isinstance(v, int) or v < 32:
                raise ValueError(f"ScaledConfig {key} must be an integer >= 32, got {v!r}")
        return cfg


# --------------------------------------------------------------------------------- scale_config


def _base_spec(family: str, base: str | None) -> _EffNetV2Base | _TinyVitBase:
    if family not in SCALE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(SCALE_FAMILIES)}")
    name = base or DEFAULT_BASES[family]
    table: dict[str, Any] = _EFFNETV2_BASES if family == "efficientnetv2" else _TINY_VIT_BASES
    if name not in table:
        raise ValueError(
            f"unknown {family} base {name!r}; choose one of {', '.join(SCALE_FAMILIES[family])}"
        )
    return table[name]


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
    spec = _base_spec(family, base)
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
    if isinstance(spec, _EffNetV2Base):
        return _scale_effnet(spec, s, d_mult, w_mult, r_mult, res0, res_cands, common)
    return _scale_tiny_vit(spec, s, d_mult, w_mult, r_mult, res0, res_cands, common)


def _scale_effnet(
    spec: _EffNetV2Base,
    s: float,
    d_mult: float,
    w_mult: float,
    r_mult: float,
    res0: int,
    res_cands: tuple[int, ...],
    common: dict[str, Any],
) -> ScaledConfig:
    base_depths = spec.depths()
    _, _, base_widths = _effnet_widths(spec, spec.channel_multiplier)
    base_flops = _effnet_flops(spec, spec.channel_multiplier, base_depths, res0)
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
                fixed, parts, widths = _effnet_parts(spec, cm, res)
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
    spec: _TinyVitBase,
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
    base_flops = _tiny_vit_flops(spec, base_widths, spec.depths, res0)
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
                    yield _tiny_vit_flops(spec, widths, depths, res), dev, (res, widths, depths)

    flops, (res, widths, depths) = _pick(candidates(), s * base_flops)
    return ScaledConfig(
        **common,
        resolution=res,
        base_depths=spec.depths,
        depths=tuple(depths),
        base_widths=base_widths,
        widths=tuple(widths),
        num_heads=tuple(max(1, w // hd) for w in widths),
        window_sizes=_tiny_vit_windows(spec, res),
        est_flops_ratio=flops / base_flops,
    )


# ------------------------------------------------------------------------ build_scaled, measure


def build_scaled(config: ScaledConfig, num_classes: int = 1000, *, device: Any = None) -> Any:
    """The timm model (random init ``nn.Module``) described by ``config``.

    ``device="meta"`` builds it without allocating or initializing weights: enough for
    :func:`measure` to count params, FLOPs and activations (the same counts as on CPU) fast.

    EfficientNetV2 goes through timm's module-level generator (``_gen_efficientnetv2_s`` or
    ``_gen_efficientnetv2_base``) with ``channel_multiplier`` and per-stage ``depth_multiplier``
    (the registered ``efficientnetv2_rw_t`` fixes both, so ``timm.create_model`` cannot pass
    them); TinyViT through ``timm.create_model(base, embed_dims=..., depths=..., num_heads=...,
    window_sizes=...)``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    spec = _base_spec(config.family, config.base)
    if device is not None:
        import torch

        with torch.device(device):
            return _build(config, spec, num_classes)
    return _build(config, spec, num_classes)


def _build(config: ScaledConfig, spec: _EffNetV2Base | _TinyVitBase, num_classes: int) -> Any:
    if isinstance(spec, _EffNetV2Base):
        from timm.models import efficientnet as timm_effnet

        gen = getattr(timm_effnet, spec.generator)
        # decode_arch_def ceils repeats × multiplier: (depth − 0.5) / repeats lands on `depth`.
        dms = tuple((d - 0.5) / st[1] for d, st in zip(config.depths, spec.stages, strict=True))
        kwargs: dict[str, Any] = dict(
            channel_multiplier=config.channel_multiplier,
            depth_multiplier=dms,
            pretrained=False,
            num_classes=num_classes,
        )
        if spec.rw is not None:
            kwargs["rw"] = spec.rw
        if spec.tf:
            kwargs.update(bn_eps=timm_effnet.BN_EPS_TF_DEFAULT, pad_type="same")
        return gen(spec.name, **kwargs)
    import timm

    return timm.create_model(
        spec.name,
        pretrained=False,
        num_classes=num_classes,
        embed_dims=list(config.widths),
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_sizes=list(config.window_sizes),
    )


def resolve_device(device: str = "auto") -> Any:
    """``auto`` → cuda when available, else cpu; ``cuda`` without CUDA is a ValueError."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def measure(
    model: Any,
    resolution: int,
    batch_sizes: Sequence[int] = (1, 32),
    *,
    device: str = "cpu",
    repeats: int = 3,
    warmup: int = 1,
) -> dict[str, Any]:
    """Params, FLOPs, activations and latency of ``model`` at ``resolution``.

    * ``flops``: torch.utils.flop_counter.FlopCounterMode over one forward at batch 1
      (it counts a multiply-add as 2 FLOPs).
    * ``activations``: sum of the output elements of every Conv2d and Linear for one image.
    * ``latency_ms``: {batch: median ms of ``repeats`` inference forwards (eval, inference mode,
      after ``warmup`` untimed ones)} for each of ``batch_sizes`` on ``device``.

    A model built on the meta device (``build_scaled(..., device="meta")``) is counted on meta
    tensors: same params/FLOPs/activations, no compute; it cannot be timed (``batch_sizes=()``).
    """
    import statistics
    import time

    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for b in batch_sizes:
        if b < 1:
            raise ValueError(f"batch sizes must be >= 1, got {b}")
    first = next(iter(model.parameters()), None)
    if first is not None and first.device.type == "meta":
        if batch_sizes:
            raise ValueError("a meta-device model cannot be timed: pass batch_sizes=()")
        dev = first.device
    else:
        dev = resolve_device(device)
    model = model.to(dev).eval()
    params = sum(p.numel() for p in model.parameters())
    acts = [0]

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        acts[0] += out.numel()

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        x = torch.randn(1, 3, resolution, resolution, device=dev)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    latency: dict[int, float] = {}
    with torch.inference_mode():
        for b in batch_sizes:
            xb = torch.randn(b, 3, resolution, resolution, device=dev)
            for _ in range(warmup):
                model(xb)
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                model(xb)
                sync()
                times.append(time.perf_counter() - t0)
            latency[int(b)] = 1000.0 * statistics.median(times)
    return {
        "params": params,
        "flops": int(counter.get_total_flops()),
        "activations": acts[0],
        "latency_ms": latency,
        "resolution": resolution,
        "device": str(dev),
    }
