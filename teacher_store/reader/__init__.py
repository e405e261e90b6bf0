"""The reading side: a store address (:mod:`.address`) becomes a reader (:mod:`.client`'s
``open_store`` / ``StoreClient``) over one backend (:mod:`.backends`: the distill service, or
the store read directly through :class:`~teacher_store.store.store_reader.StoreReader`), whose
requests retry within a time budget (:mod:`.retry`).

Below it: ``storage`` (where bytes live) and ``store`` (the format); above it: the commands,
the service and the student. ``teacher_store.address``, ``.backends``, ``.client`` and
``.retry`` re-export these modules for one release.

Re-exports resolve lazily (PEP 562), as in the package above.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_store": "teacher_store.reader.client",
    "StoreClient": "teacher_store.reader.client",
    "DatasetMismatchError": "teacher_store.reader.client",
    "StoreAddressError": "teacher_store.reader.address",
    "resolve_address": "teacher_store.reader.address",
    "redact_url": "teacher_store.reader.address",
    "RetryPolicy": "teacher_store.reader.retry",
    "RetryBudgetError": "teacher_store.reader.retry",
    "StoreClientError": "teacher_store.reader.retry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'teacher_store.reader' has no attribute {name!r}")
