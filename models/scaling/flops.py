"""Exact analytic FLOPs of the timm EfficientNetV2 and TinyViT architectures (pure math).

Counted as torch's flop counter counts them (a multiply-add is 2 FLOPs); a test checks equality.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.scaling.families import EffNetV2Base, TinyVitBase, make_divisible, round_channels

ESTIMATE_CLASSES = 1000  # classifier size used by the analytic FLOPs count


def conv_out(m: int, stride: int) -> int:
    return -(-m // stride)  # k3/pad1 (and 'same') convolutions: ceil(m / stride)


def _effnet_block_macs(
    bt: str, stride: int, exp: float, se: float, cin: int, cout: int, m_in: int
) -> int:
    m = conv_out(m_in, stride)
    if bt == "cn":
        return 9 * cin * cout * m * m
    mid = make_divisible(cin * exp)
    if bt == "er":  # fused MBConv: k3 conv (strided) then 1x1
        return 9 * cin * mid * m * m + mid * cout * m * m
    macs = cin * mid * m_in * m_in + 9 * mid * m * m + mid * cout * m * m  # 1x1, dw k3, 1x1
    if se:
        macs += 2 * mid * round(mid * se / exp)  # squeeze-excite on the pooled vector
    return macs


def effnet_widths(base: EffNetV2Base, cm: float) -> tuple[int, int, tuple[int, ...]]:
    """(stem, num_features, stage widths) that timm builds for channel_multiplier ``cm``."""
    stem = round_channels(base.stem, cm, base.round_limit)
    nf = round_channels(base.num_features, cm, base.round_limit)
    return stem, nf, tuple(round_channels(st[4], cm, base.round_limit) for st in base.stages)


def effnet_parts(
    base: EffNetV2Base, cm: float, res: int
) -> tuple[int, list[tuple[int, int]], tuple[int, ...]]:
    """Fixed MACs and, per stage, (first block, each further block) MACs at width ``cm``."""
    stem, nf, widths = effnet_widths(base, cm)
    m = conv_out(res, 2)
    fixed = 27 * stem * m * m
    cin, parts = stem, []
    for (bt, _, stride, exp, _, se), cout in zip(base.stages, widths, strict=True):
        first = _effnet_block_macs(bt, stride, exp, se, cin, cout, m)
        m = conv_out(m, stride)
        parts.append((first, _effnet_block_macs(bt, 1, exp, se, cout, cout, m)))
        cin = cout
    fixed += cin * nf * m * m + nf * ESTIMATE_CLASSES
    return fixed, parts, widths


def effnet_flops(base: EffNetV2Base, cm: float, depths: Sequence[int], res: int) -> float:
    fixed, parts, _ = effnet_parts(base, cm, res)
    return 2.0 * (fixed + sum(f + (d - 1) * r for (f, r), d in zip(parts, depths, strict=True)))


def _tiny_vit_maps(res: int) -> tuple[int, ...]:
    m0 = conv_out(conv_out(res, 2), 2)
    maps = [m0]
    for _ in range(3):
        maps.append(conv_out(maps[-1], 2))
    return tuple(maps)


def tiny_vit_windows(base: TinyVitBase, res: int) -> tuple[int, ...]:
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


def tiny_vit_flops(
    base: TinyVitBase, widths: Sequence[int], depths: Sequence[int], res: int
) -> float:
    maps = _tiny_vit_maps(res)
    wins = tiny_vit_windows(base, res)
    half = widths[0] // 2
    m_a = conv_out(res, 2)
    macs = 27 * half * m_a * m_a + 9 * half * widths[0] * maps[0] * maps[0]  # PatchEmbed
    cin, m_in = widths[0], maps[0]
    for i, (c, d) in enumerate(zip(widths, depths, strict=True)):
        macs += _tiny_vit_stage_macs(i, cin, c, d, m_in, maps[i], wins[i], base.head_dim)
        cin, m_in = c, maps[i]
    macs += widths[-1] * ESTIMATE_CLASSES
    return 2.0 * macs
