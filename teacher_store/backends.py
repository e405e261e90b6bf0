"""Moved to :mod:`teacher_store.reader.backends`; this path re-exports it for one release."""

from teacher_store.reader.backends import (
    Backend,
    DirectBackend,
    ServiceBackend,
    fsspec_location,
    readonly,
)

__all__ = [
    "Backend",
    "DirectBackend",
    "ServiceBackend",
    "fsspec_location",
    "readonly",
]
