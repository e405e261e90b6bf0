"""Moved to :mod:`teacher_store.storage.faults`; this path re-exports it for one release."""

from teacher_store.storage.faults import (
    ENV,
    KINDS,
    POINTS,
    CrashSpecError,
    crash_point,
    parse,
    torn_write,
)

__all__ = ["ENV", "KINDS", "POINTS", "CrashSpecError", "crash_point", "parse", "torn_write"]
