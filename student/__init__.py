"""Student trainers distilled from a teacher store (no online teacher).

Re-exports resolve lazily (PEP 562) so the CLI's argument parsing stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "student.config",
    "load_train_config": "student.config",
    "run_train": "student.train",
    "run_eval": "student.evaluate",
    "sparse_kd_loss": "student.loss",
    "sparse_teacher_logprobs": "student.loss",
    "epoch_order": "student.sampler",
    "mix_groups": "student.sampler",
    "pair_order": "student.sampler",
    "rank_share": "student.sampler",
    "Cursor": "student.sampler",
    "StoreBatch": "student.loader",
    "StoreLoader": "student.loader",
    "LoaderArgumentError": "student.loader_config",
    "LoaderConfig": "student.loader_config",
    "store_loader": "student.loader",
    "TeacherEnsemble": "student.ensemble",
    "ensemble_targets": "student.ensemble",
    "MnistDemoConfig": "student.demo",
    "run_mnist_demo": "student.demo",
    "TeacherFitConfig": "student.teacher_fit",
    "fit_teacher": "student.teacher_fit",
    "folder_top1": "student.teacher_fit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'student' has no attribute {name!r}")
