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

from models.scaling.build import build_scaled, measure
from models.scaling.config import SCALED_CONFIG_VERSION, ScaledConfig
from models.scaling.families import DEFAULT_BASES, RESOLUTION_GRID, SCALE_FAMILIES
from models.scaling.rule import DEFAULT_ALPHA, REGIMES, RULES, rule_multipliers
from models.scaling.search import FLOPS_TOLERANCE, scale_config

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BASES",
    "FLOPS_TOLERANCE",
    "REGIMES",
    "RESOLUTION_GRID",
    "RULES",
    "SCALED_CONFIG_VERSION",
    "SCALE_FAMILIES",
    "ScaledConfig",
    "build_scaled",
    "measure",
    "rule_multipliers",
    "scale_config",
]
