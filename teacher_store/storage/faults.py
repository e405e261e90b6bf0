"""Crash points, for tests only: SIGKILL this process at a named point of store writing.

``DISTILL_CRASH_AT="<point>:<n>"`` kills the process (``SIGKILL``: no cleanup, no ``finally``)
the n-th time (from 1) that it reaches ``<point>``. The variable is read once, at import; unset
(always, outside tests) every hook is one comparison. The crash-point tests
(tests/teacher_store/test_crash_points.py) set it on a ``distill generate`` subprocess, then
resume without it and compare the store's bytes with an uninterrupted run's.

Points (:data:`POINTS`): ``batch`` (a teacher batch computed, not yet in its unit),
``<kind>-torn`` (a write of a file of that kind cut after half its bytes: on local disk into the
temporary file of the atomic write, on an object store as the object itself, which a real PUT
never leaves) and ``<kind>-written`` (just after such a write), where the kinds are ``meta``
(an array's ``zarr.json``), ``root-meta`` (the root ``zarr.json``: at creation, then with the
consolidated metadata), ``shard``, ``record`` (a unit record), ``digests`` (the samples'
content digests, at creation), ``manifest`` and ``growth`` (a growth's plan
``_distill/growth.json`` or a unit record it keeps aside).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

ENV = "DISTILL_CRASH_AT"
KINDS = ("meta", "root-meta", "shard", "record", "digests", "manifest", "growth")
POINTS = ("batch", *(f"{k}-{w}" for k in KINDS for w in ("torn", "written")))


class CrashSpecError(ValueError):
    """``DISTILL_CRASH_AT`` is not ``<point>:<n>`` with a known point and n >= 1."""


def parse(spec: str) -> tuple[str, int] | None:
    """``(point, n)`` of a ``DISTILL_CRASH_AT`` value, None when empty."""
    if not spec:
        return None
    point, _, n = spec.rpartition(":")
    if point not in POINTS or not n.isdigit() or int(n) < 1:
        raise CrashSpecError(f"{ENV}={spec!r}: want <point>:<n>, n >= 1, point in {POINTS}")
    return point, int(n)


_TARGET = parse(os.environ.get(ENV, ""))
_seen: dict[str, int] = {}


def _due(point: str) -> bool:
    """Count one arrival at ``point``; True when it is the one to crash at."""
    if _TARGET is None or _TARGET[0] != point:
        return False
    _seen[point] = _seen.get(point, 0) + 1
    return _seen[point] == _TARGET[1]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(point: str) -> None:
    """SIGKILL here if ``point`` is the armed point and this is its n-th arrival."""
    if _due(point):
        _die()


def torn_write(kind: str, write: Callable[[bytes], object], data: bytes) -> None:
    """If ``<kind>-torn`` is due: ``write`` the first half of ``data`` (the caller's partial
    write, flushed), then SIGKILL. Otherwise nothing."""
    if _due(f"{kind}-torn"):
        write(data[: len(data) // 2])
        _die()
