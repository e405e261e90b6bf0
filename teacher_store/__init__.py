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
    "Replayer": "teacher_store.replay",
    "ReplayedView": "teacher_store.replay",
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
    "Teacher": "teacher_store.teacher",
    "StoreClient": "teacher_store.client",
    "ShardUnit": "teacher_store.layout",
    "shard_units": "teacher_store.layout",
    "Location": "teacher_store.layout",
    "FileRecord": "teacher_store.layout",
    "StoreError": "teacher_store.errors",
    "StoreNotFound": "teacher_store.errors",
    "StoreIncomplete": "teacher_store.errors",
    "StoreDamaged": "teacher_store.errors",
    "DatasetMismatch": "teacher_store.errors",
    "UnsupportedStoreVersion": "teacher_store.errors",
    "StoreConflict": "teacher_store.errors",
    "StoreChangedError": "teacher_store.errors",
    "open_store": "teacher_store.client",
    "StoreAddressError": "teacher_store.client",
    "DatasetMismatchError": "teacher_store.client",
    "write_demo_data": "teacher_store.demo_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store' has no attribute {name!r}")
