"""Teacher store: view codec, bit-exact replay, store schema, generation job, readers, client.

Re-exports resolve lazily (PEP 562): the service imports store-reading modules from here and
must not pull in torch, which only the generation and replay modules need.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CODEC_VERSION": "teacher_store.codec",
    "ViewParams": "teacher_store.codec",
    "decode": "teacher_store.codec",
    "view_seed": "teacher_store.codec",
    "Recipe": "teacher_store.recipe",
    "RECIPES": "teacher_store.recipe",
    "get_recipe": "teacher_store.recipe",
    "render_view": "teacher_store.replay",
    "view_to_float": "teacher_store.replay",
    "SCHEMA_VERSION": "teacher_store.schema",
    "StoreAttrs": "teacher_store.schema",
    "decode_values": "teacher_store.schema",
    "encode_values": "teacher_store.schema",
    "ImageFolder": "teacher_store.dataset",
    "DatasetFingerprint": "teacher_store.dataset",
    "CorruptImageError": "teacher_store.dataset",
    "LocalStore": "teacher_store.store",
    "TargetBlock": "teacher_store.store",
    "GenerateConfig": "teacher_store.generate",
    "run_generate": "teacher_store.generate",
    "StoreClient": "teacher_store.client",
    "open_store": "teacher_store.client",
    "write_demo_data": "teacher_store.demo_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store' has no attribute {name!r}")
