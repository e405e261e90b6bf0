"""Student factory over timm with each family's resolution rules made explicit."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

# Families the product trains; each maps to the timm names it covers.
STUDENT_FAMILIES: dict[str, tuple[str, ...]] = {
    "tiny_vit": ("tiny_vit_5m_224", "tiny_vit_11m_224", "tiny_vit_21m_224"),
    "efficientformer": ("efficientformer_l1", "efficientformer_l3", "efficientformer_l7"),
    "efficientformerv2": (
        "efficientformerv2_s0",
        "efficientformerv2_s1",
        "efficientformerv2_s2",
        "efficientformerv2_l",
    ),
    "efficientnetv2": (
        "efficientnetv2_rw_t",
        "efficientnetv2_rw_s",
        "efficientnetv2_rw_m",
        "efficientnetv2_l",
        "tf_efficientnetv2_b0",
        "tf_efficientnetv2_b1",
        "tf_efficientnetv2_b2",
        "tf_efficientnetv2_b3",
        "tf_efficientnetv2_s",
        "tf_efficientnetv2_m",
        "tf_efficientnetv2_l",
    ),
}


def student_family(name: str) -> str | None:
    """The family of a timm model name, or None for other timm models."""
    for family, names in STUDENT_FAMILIES.items():
        if name in names:
            return family
    return None


def create_student(
    name: str, num_classes: int, img_size: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build student ``name`` (random init) for ``num_classes`` at resolution ``img_size``.

    EfficientFormer v1 runs at 224 only; EfficientFormerV2 fixes its resolution at build time
    (its attention biases depend on it); TinyViT and EfficientNetV2 take any size at forward;
    ViTs are built with ``dynamic_img_size``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if img_size is not None and img_size < 32:
        raise ValueError(f"img_size {img_size} is too small; students need at least 32 pixels")
    family = student_family(name)
    if family == "efficientformer" and img_size not in (None, 224):
        raise ValueError(
            f"{name} runs at 224x224 only (got img_size={img_size}); "
            "use efficientformerv2_* for other resolutions"
        )
    if family == "efficientformerv2":
        kwargs["img_size"] = img_size or 224
    elif family is None and name.startswith(("vit_", "deit_")):
        kwargs.setdefault("dynamic_img_size", True)
        if img_size is not None:
            kwargs["img_size"] = img_size
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as e:
        raise ValueError(f"unknown student model {name!r}: {e}") from None
