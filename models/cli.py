"""Subcommands of the models layer: scale. Nothing heavy is imported at module level."""

from __future__ import annotations

import argparse
import json
import math
import time
from fractions import Fraction
from typing import Any

_SCALE_HELP = """\
Scale a student family's base model by FLOPs multipliers s with the fast compound scaling rule
of Dollar et al. 2021 (d' = s^((1-a)/2) d, w' = s^(a/2) w, r' = s^((1-a)/4) r; a = 0.8 by default,
a = 1/3 uniform, a = 1 width only) or the ResNet-RS rule (r' = s^(1/8) r, the rest to depth for
--regime long, to width for --regime short), build each scaled timm model and print params, FLOPs
(torch's flop counter, 2 per multiply-add), activations (outputs of every conv and linear layer,
one image) and the latency measured on this device at batch 1 and at --batch. As EfficientFormer
showed, latency on the target device, not FLOPs, is what to optimize: compare the latency
columns, not the GFLOPs column, when choosing a student.
"""


# Bounds far above real use, so a typo is a one-line error, not an allocation of many GB.
# MAX_RESOLUTION and MAX_BATCH equal teacher_store.options' image and batch bounds (models
# sits below teacher_store and may not import it).
MAX_S = 64.0  # FLOPs multiplier: 64 x a base student is already an EfficientNetV2-XL or more
MAX_RESOLUTION = 4096
MAX_BATCH = 8192
MAX_REPEATS = 1000
MAX_CLASSES = 1_000_000


def _number(text: str, what: str) -> float:
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} must be a number (e.g. 0.8 or 1/3), got {text!r}") from None
    return value


def _positive_int(value: int, what: str, most: int) -> int:
    if not 1 <= value <= most:
        raise ValueError(f"{what} must be an integer in [1, {most}], got {value}")
    return value


def _multipliers(texts: list[str]) -> list[float]:
    values = [_number(t, "--s") for t in texts]
    for s in values:
        if s > MAX_S:
            raise ValueError(f"--s must be at most {MAX_S:g} (a FLOPs multiplier), got {s:g}")
    return values


def _row(cfg: Any, m: dict[str, Any], base_flops: int, batch: int) -> dict[str, Any]:
    return {
        "s": cfg.s,
        "alpha": cfg.alpha,
        "rule": cfg.rule,
        "regime": cfg.regime,
        "depth_x": cfg.eff_depth_mult,
        "width_x": cfg.eff_width_mult,
        "resolution": cfg.resolution,
        "params_m": m["params"] / 1e6,
        "gflops": m["flops"] / 1e9,
        "activations_m": m["activations"] / 1e6,
        "latency_b1_ms": m["latency_ms"][1],
        "latency_batch_ms": m["latency_ms"][batch],
        "flops_ratio": m["flops"] / base_flops,
        "config": cfg.to_dict(),
    }


def _format_table(rows: list[dict[str, Any]], batch: int) -> str:
    head = (
        f"{'s':>5} {'alpha':>6} {'depth x':>8} {'width x':>8} {'res':>5} {'params M':>9} "
        f"{'GFLOPs':>8} {'act M':>7} {'b=1 ms':>8} {f'b={batch} ms':>9} {'FLOPs/base':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        alpha = "-" if r["alpha"] is None else f"{r['alpha']:.3g}"
        lines.append(
            f"{r['s']:>5.3g} {alpha:>6} {r['depth_x']:>8.2f} {r['width_x']:>8.2f} "
            f"{r['resolution']:>5d} {r['params_m']:>9.2f} {r['gflops']:>8.3f} "
            f"{r['activations_m']:>7.2f} {r['latency_b1_ms']:>8.1f} "
            f"{r['latency_batch_ms']:>9.1f} {r['flops_ratio']:>10.2f}"
        )
    return "\n".join(lines)


def _alphas(args: argparse.Namespace) -> list[float | None]:
    from models.scaling import DEFAULT_ALPHA

    if args.rule == "resnet-rs":
        if args.alpha is not None:
            raise ValueError("--alpha applies to --rule fast only (resnet-rs has no alpha)")
        return [None]
    return [_number(t, "--alpha") for t in (args.alpha or [str(DEFAULT_ALPHA)])]


def _run_scale(args: argparse.Namespace) -> int:
    from models.runtime import resolve_device
    from models.scaling import build_scaled, measure, scale_config

    svals = _multipliers(args.s)
    alphas = _alphas(args)
    batch = _positive_int(args.batch, "--batch", MAX_BATCH)
    repeats = _positive_int(args.repeats, "--repeats", MAX_REPEATS)
    num_classes = _positive_int(args.num_classes, "--num-classes", MAX_CLASSES)
    _positive_int(args.resolution, "--resolution", MAX_RESOLUTION)
    kw: dict[str, Any] = dict(base=args.base, resolution=args.resolution, regime=args.regime)
    # Validate every config (pure and fast) before building and timing anything.
    base_cfg = scale_config(args.family, 1.0, None, "fast", **kw)
    cfgs = [scale_config(args.family, s, a, args.rule, **kw) for a in alphas for s in svals]
    for cfg in cfgs:
        if cfg.resolution > MAX_RESOLUTION:
            raise ValueError(
                f"--s {cfg.s:g} scales --resolution {args.resolution} to {cfg.resolution} px, "
                f"above {MAX_RESOLUTION}; lower --resolution or --s"
            )
    device = resolve_device(args.device)
    batches = (1, batch) if batch != 1 else (1,)

    import torch

    t0 = time.perf_counter()
    results = []
    base_flops = 0
    for cfg in [base_cfg, *cfgs]:
        model = build_scaled(cfg, num_classes)
        m = measure(model, cfg.resolution, batches, device=str(device), repeats=repeats)
        base_flops = base_flops or m["flops"]
        m["latency_ms"].setdefault(batch, m["latency_ms"][1])
        results.append(_row(cfg, m, base_flops, batch))
    elapsed = time.perf_counter() - t0
    threads = torch.get_num_threads() if device.type == "cpu" else None
    run = dict(device=str(device), cpu_threads=threads, batch=batch, repeats=repeats)
    if args.json:
        head = dict(family=args.family, base=base_cfg.base, base_resolution=base_cfg.resolution)
        print(json.dumps({**head, **run, "seconds": elapsed, "rows": results}, indent=2))
        return 0
    _print_scale(args, base_cfg, results, run, num_classes, elapsed)
    return 0


def _print_scale(
    args: argparse.Namespace,
    base_cfg: Any,
    results: list[dict[str, Any]],
    run: dict[str, Any],
    num_classes: int,
    elapsed: float,
) -> None:
    device, threads = run["device"], run["cpu_threads"]
    where = f"{device} ({threads} thread{'s' * (threads != 1)})" if threads else str(device)
    print(
        f"{base_cfg.base} scaled by rule {args.rule}"
        + (f" ({args.regime} regime)" if args.rule == "resnet-rs" else "")
        + f"; base resolution {base_cfg.resolution}; {num_classes} classes; latency = median of "
        f"{run['repeats']} inference forwards on {where}"
    )
    print(_format_table(results, run["batch"]))
    worst = max(abs(math.log(r["flops_ratio"] / r["s"])) for r in results)
    print(
        f"measured FLOPs within {100 * (math.exp(worst) - 1):.1f}% of s x base; "
        f"{elapsed:.1f} s. Choose by latency on the target device, not by FLOPs."
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scale",
        help="scale a student family by FLOPs (fast compound / ResNet-RS); time the results",
        description=_SCALE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--family", required=True, help="efficientnetv2 or tiny_vit")
    p.add_argument(
        "--base",
        help="base model (default efficientnetv2_rw_t / tiny_vit_5m_224); also "
        "efficientnetv2_rw_s, efficientnetv2_s, tf_efficientnetv2_b0..b3, tiny_vit_11m/21m_224",
    )
    p.add_argument(
        "--s",
        nargs="+",
        default=["2", "4", "8"],
        help=f"FLOPs multipliers, each in (0, {MAX_S:g}] (default 2 4 8)",
    )
    p.add_argument(
        "--alpha",
        nargs="+",
        help="width share of the FLOPs exponent, fast rule only (default 0.8; 1/3 uniform, "
        "1 width only); several values make one table",
    )
    p.add_argument("--rule", default="fast", help="fast (default) or resnet-rs")
    p.add_argument(
        "--regime",
        default="long",
        help="resnet-rs only: long (overfitting possible: scale depth, default) or short (width)",
    )
    p.add_argument(
        "--resolution",
        type=int,
        default=128,
        help=f"base input resolution, 32..{MAX_RESOLUTION} (default 128, small so CPU timing "
        "stays quick; multiple of 32 for tiny_vit)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=32,
        help=f"training batch for the second latency, 1..{MAX_BATCH} (default 32)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help=f"timed forwards per latency (median), 1..{MAX_REPEATS} (default 3)",
    )
    p.add_argument(
        "--num-classes",
        type=int,
        default=1000,
        help=f"classifier size, 1..{MAX_CLASSES} (default 1000)",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    p.add_argument("--json", action="store_true", help="machine-readable output with the configs")
    p.set_defaults(func=_run_scale)
