"""Real tiny teacher stores and a live server for service/client tests: the store writers and
launchers live in :mod:`teacher_store.testing` (benches use them too) and are re-exported here;
what only the tests need (the version-1 fixture, a student config) is defined here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teacher_store.testing.services import LiveServer
from teacher_store.testing.stores import (
    SMALL_GENERATE,
    build_store,
    copy_store,
    file_digests,
    generate_small,
    make_attrs,
)

# A schema version 1 store written by the version-1 code (17 demo photos, R=2, K=5, 64 px):
# version 1 stores must stay readable.
V1_FIXTURE = Path(__file__).parent / "teacher_store" / "store" / "fixtures" / "v1_store"


def student_config(store: Any, data: Any, out: Any, **kw: Any) -> Any:
    """A tiny CPU TrainConfig (64 px tf_efficientnetv2_b0, batch 4); ``kw`` overrides."""
    from student.config import TrainConfig

    base: dict[str, Any] = {
        "store": str(store),
        "data": str(data),
        "model": "tf_efficientnetv2_b0",
        "out": str(out),
        "batch_size": 4,
        "img_size": 64,
        "workers": 0,
        "val_fraction": 0.2,
        "progress": False,
        "tensorboard": False,
    }
    return TrainConfig(**{**base, **kw})


__all__ = [
    "SMALL_GENERATE",
    "V1_FIXTURE",
    "LiveServer",
    "build_store",
    "copy_store",
    "file_digests",
    "generate_small",
    "make_attrs",
    "student_config",
]
