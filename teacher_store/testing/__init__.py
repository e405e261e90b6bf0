"""Test support for distill (as ``zarr.testing``), used by the tests and the benches alike:

- ``stores``: synthetic stores written by the store's own writer (:func:`write_store`,
  :func:`build_store`, :func:`synthetic_attrs`, target makers) and tiny generated ones
  (:func:`generate_small`); byte digests, copies, an in-memory copy;
- ``services``: a live service on 127.0.0.1, in-process (:class:`LiveServer`) or a subprocess
  (:class:`ServiceProcess`);
- ``s3``: a moto S3 server (:class:`S3Server`, :func:`running_s3_server`) and fault relays;
- ``storage``: :class:`StorageContract`, the tests every storage backend passes (needs pytest).

Nothing here is imported by the package itself; uvicorn and moto load only when a server
starts. Re-exports resolve lazily (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SMALL_GENERATE": "teacher_store.testing.stores",
    "build_store": "teacher_store.testing.stores",
    "clustered_targets": "teacher_store.testing.stores",
    "copy_store": "teacher_store.testing.stores",
    "file_digests": "teacher_store.testing.stores",
    "generate_small": "teacher_store.testing.stores",
    "make_attrs": "teacher_store.testing.stores",
    "memory_copy": "teacher_store.testing.stores",
    "random_targets": "teacher_store.testing.stores",
    "synthetic_attrs": "teacher_store.testing.stores",
    "synthetic_parts": "teacher_store.testing.stores",
    "synthetic_teacher": "teacher_store.testing.stores",
    "write_store": "teacher_store.testing.stores",
    "S3Server": "teacher_store.testing.s3",
    "environment": "teacher_store.testing.s3",
    "failing_puts": "teacher_store.testing.s3",
    "local_objects": "teacher_store.testing.s3",
    "relay": "teacher_store.testing.s3",
    "running_s3_server": "teacher_store.testing.s3",
    "store_location": "teacher_store.testing.s3",
    "LiveServer": "teacher_store.testing.services",
    "ServiceProcess": "teacher_store.testing.services",
    "free_port": "teacher_store.testing.services",
    "StorageContract": "teacher_store.testing.storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store.testing' has no attribute {name!r}")
