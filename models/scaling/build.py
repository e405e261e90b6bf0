"""Build a ScaledConfig as a timm model, and measure params, FLOPs, activations and latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.runtime import resolve_device
from models.scaling.config import ScaledConfig
from models.scaling.families import EffNetV2Base, TinyVitBase, base_spec


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
    spec = base_spec(config.family, config.base)
    if device is not None:
        import torch

        with torch.device(device):
            return _build(config, spec, num_classes)
    return _build(config, spec, num_classes)


def _build(config: ScaledConfig, spec: EffNetV2Base | TinyVitBase, num_classes: int) -> Any:
    if isinstance(spec, EffNetV2Base):
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
    flops, acts = _count(model, resolution, dev)
    latency = {
        int(b): _latency_ms(model, resolution, int(b), dev, repeats, warmup) for b in batch_sizes
    }
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "flops": flops,
        "activations": acts,
        "latency_ms": latency,
        "resolution": resolution,
        "device": str(dev),
    }


def _count(model: Any, resolution: int, dev: Any) -> tuple[int, int]:
    """(FLOPs, Conv2d + Linear output elements) of one forward at batch 1."""
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

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
    return int(counter.get_total_flops()), acts[0]


def _latency_ms(
    model: Any, resolution: int, batch: int, dev: Any, repeats: int, warmup: int
) -> float:
    """Median ms of ``repeats`` inference forwards at ``batch`` after ``warmup`` untimed ones."""
    import statistics
    import time

    import torch

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.inference_mode():
        xb = torch.randn(batch, 3, resolution, resolution, device=dev)
        for _ in range(warmup):
            model(xb)
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            model(xb)
            sync()
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)
