"""The options of :class:`student.loader.StoreLoader` as one frozen, versioned config.

Torch-free, so :class:`student.config.TrainConfig` can produce one
(:meth:`~student.config.TrainConfig.loader_config`) without importing torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

LOADER_CONFIG_VERSION = 1


@dataclass(frozen=True)
class LoaderConfig:
    """How a :class:`~student.loader.StoreLoader` cuts, orders and renders its batches.

    ``seed``, ``val_fraction``, ``epochs`` and ``view_schedule`` are ``distill train``'s
    options of the same names (same values: same batches). Where to start (``epoch``,
    ``cursor``) and the service ``token`` are not part of it: they are the loader's keywords.
    """

    img_size: int | None = None  # render size (None: the teacher's)
    batch_size: int = 32
    rank: int = 0
    world_size: int = 1
    workers: int = 2  # DataLoader workers replaying views
    seed: int = 0
    val_fraction: float = 0.1
    epochs: int | None = None
    view_schedule: str = "wrap"
    allow_dataset_mismatch: bool = False
    pin_memory: bool = False
    teacher_size: int | None = None  # online KD: each view also rendered at this size
    with_targets: bool = True
    version: int = LOADER_CONFIG_VERSION

    def __post_init__(self) -> None:
        if self.version != LOADER_CONFIG_VERSION:
            raise ValueError(f"loader config version {self.version} is not {LOADER_CONFIG_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoaderConfig:
        """A config from :meth:`to_dict`'s fields; an unknown field is a one-line ValueError."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"unknown loader option(s) {extra}; known: {sorted(known)}")
        return cls(**d)


__all__ = ["LOADER_CONFIG_VERSION", "LoaderConfig"]
