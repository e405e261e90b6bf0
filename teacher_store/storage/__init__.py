"""The storage room: the one place that knows where bytes live and how storage fails.

- ``location``: :class:`Location` (a root on an fsspec filesystem: local disk, an object store,
  fsspec's memory filesystem) with the operations every store module uses (read, ranged read,
  atomic write, listing, removal) and change :class:`Signature` s;
- ``failures``: which object store a filesystem is (:data:`PROVIDERS`), the bucket probe before
  any work, a failed request explained in one line, which errors are worth a retry;
- ``s3``: S3 and S3-compatible stores (endpoint, credentials, botocore's errors);
- ``faults``: crash points at storage writes, for the crash tests.

Only this room imports fsspec, s3fs, botocore or aiohttp (tests/test_imports.py checks it). A
new object store is one module here (as ``s3``), its line in :data:`PROVIDERS` and its line in
the storage contract suite (tests/teacher_store/storage/test_contract.py).

Re-exports resolve lazily (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Location": "teacher_store.storage.location",
    "Signature": "teacher_store.storage.location",
    "info_signature": "teacher_store.storage.location",
    "stat_signature": "teacher_store.storage.location",
    "is_temporary": "teacher_store.storage.location",
    "PROVIDERS": "teacher_store.storage.failures",
    "is_transient": "teacher_store.storage.failures",
    "provider_of": "teacher_store.storage.failures",
    "storage_failure": "teacher_store.storage.failures",
    "Provider": "teacher_store.storage.provider",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store.storage' has no attribute {name!r}")
