"""The options of :class:`student.loader.StoreLoader` as one frozen, versioned config.

Torch-free, so :class:`student.config.TrainConfig` can produce one
(:meth:`~student.config.TrainConfig.loader_config`) without importing torch.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from teacher_store.options import (
    DEFAULT_READ_THREADS,
    MAX_BATCH,
    MAX_IMG_SIZE,
    MAX_READ_THREADS,
    MAX_SEED,
    MAX_WORKERS,
    MIN_IMG_SIZE,
    OptionsError,
    check_int,
)

LOADER_CONFIG_VERSION = 1
MAX_RANKS = 1 << 16  # most ranks (world_size) of one run
MAX_EPOCHS = 1 << 31  # most epochs of one run


class LoaderArgumentError(OptionsError):
    """A :class:`~student.loader.StoreLoader` argument (or :class:`LoaderConfig` field) out of
    its valid range: one line naming it, the value given and the range."""


def is_whole(x: object) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


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
    # Threads per replaying process reading the coming batches' images ahead (0: none): the
    # batches are the same whatever the count; hides object-storage latency.
    read_threads: int = DEFAULT_READ_THREADS
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
        self._check()

    def _check(self) -> None:
        """Each field in its range (a :class:`LoaderArgumentError`), before a loader scans a
        folder or opens a store."""
        err = LoaderArgumentError
        check_int("batch_size", self.batch_size, 1, MAX_BATCH, err)
        check_int("world_size", self.world_size, 1, MAX_RANKS, err)
        if not is_whole(self.rank) or not 0 <= self.rank < self.world_size:
            valid = f"must be an integer in [0, {self.world_size - 1}]"
            raise err([f"rank {self.rank!r}: {valid} (world_size {self.world_size})"])
        check_int("workers", self.workers, 0, MAX_WORKERS, err)
        check_int("read_threads", self.read_threads, 0, MAX_READ_THREADS, err)
        check_int("seed", self.seed, 0, MAX_SEED, err)
        for name, size in (("img_size", self.img_size), ("teacher_size", self.teacher_size)):
            if size is not None:
                check_int(name, size, MIN_IMG_SIZE, MAX_IMG_SIZE, err)
        v = self.val_fraction
        if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < 1):
            raise err([f"val_fraction {v!r}: must be a number in [0, 1)"])  # nan fails too
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1, MAX_EPOCHS, err)

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


__all__ = ["LOADER_CONFIG_VERSION", "LoaderArgumentError", "LoaderConfig"]
