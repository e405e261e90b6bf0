"""Moved to :mod:`teacher_store.reader.client`; this path re-exports it for one release."""

from teacher_store.reader.client import (
    DatasetMismatchError,
    RetryBudgetError,
    RetryPolicy,
    StoreAddressError,
    StoreChangedError,
    StoreClient,
    StoreClientError,
    open_store,
    resolve_address,
)

__all__ = [
    "DatasetMismatchError",
    "RetryBudgetError",
    "RetryPolicy",
    "StoreAddressError",
    "StoreChangedError",
    "StoreClient",
    "StoreClientError",
    "open_store",
    "resolve_address",
]
