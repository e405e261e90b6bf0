"""Thin factories over timm: teachers (with offline weights), students, and compound scaling.

Re-exports are resolved lazily (PEP 562) so that `distill --help`, which imports this package's
``cli`` module, does not pay for importing timm and torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BUILTIN_TEACHERS": "models.teachers",
    "TeacherInfo": "models.teachers",
    "create_teacher": "models.teachers",
    "sha256_file": "models.teachers",
    "save_teacher_checkpoint": "models.teachers",
    "STUDENT_FAMILIES": "models.students",
    "create_student": "models.students",
    "student_family": "models.students",
    "SCALE_FAMILIES": "models.scaling",
    "ScaledConfig": "models.scaling",
    "build_scaled": "models.scaling",
    "measure": "models.scaling",
    "rule_multipliers": "models.scaling",
    "scale_config": "models.scaling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
