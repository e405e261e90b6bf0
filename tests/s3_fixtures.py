"""A real S3-compatible server for tests (moto's server mode on 127.0.0.1): moved to
:mod:`teacher_store.testing.s3`; this module re-exports it for the tests that import it here."""

from __future__ import annotations

from teacher_store.testing.s3 import (
    BUCKET,
    S3Server,
    environment,
    failing_puts,
    local_objects,
    relay,
    running_s3_server,
    store_location,
)

__all__ = [
    "BUCKET",
    "S3Server",
    "environment",
    "failing_puts",
    "local_objects",
    "relay",
    "running_s3_server",
    "store_location",
]
