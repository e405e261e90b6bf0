"""The scaling rule as pure math: FLOPs multiplier s -> (depth, width, resolution) multipliers."""

from __future__ import annotations

import math

RULES = ("fast", "resnet-rs")
REGIMES = ("long", "short")
DEFAULT_ALPHA = 0.8


def check_s(s: float) -> float:
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
    s = check_s(s)
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
