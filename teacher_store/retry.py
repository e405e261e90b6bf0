"""Moved to :mod:`teacher_store.reader.retry`; this path re-exports it for one release."""

from teacher_store.reader.retry import (
    RetryBudgetError,
    RetryPolicy,
    StoreClientError,
    Tries,
    retry_after,
)

__all__ = [
    "RetryBudgetError",
    "RetryPolicy",
    "StoreClientError",
    "Tries",
    "retry_after",
]
