"""Moved to :mod:`teacher_store.reader.address`; this path re-exports it for one release."""

from teacher_store.reader.address import (
    StoreAddressError,
    redact_url,
    resolve_address,
)

__all__ = [
    "StoreAddressError",
    "redact_url",
    "resolve_address",
]
