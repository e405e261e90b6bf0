"""Figures for the Reliability table (docs/reliability.md), recorded by the reliability tests.

A reliability test calls :func:`record` with what it tried and what it lost. Under pytest
alone this writes nothing; ``bench/reliability.py`` sets ``DISTILL_RELIABILITY_OUT`` to a JSON
lines file, runs the reliability tests with ``DISTILL_RELIABILITY_SCALE=full`` (the bigger
parameters the issue asks for: every crash point, 64 clients for 60 s, ...) and prints the
rows as one table. Tests read :func:`full_scale` to choose their sizes.
"""

from __future__ import annotations

import json
import os


def full_scale() -> bool:
    """True when bench/reliability.py runs the suite at the sizes docs/reliability.md reports."""
    return os.environ.get("DISTILL_RELIABILITY_SCALE") == "full"


def record(
    test: str,
    *,
    load_held: str = "",
    faults_survived: int = 0,
    inputs_tried: int = 0,
    data_lost: int = 0,
    note: str = "",
) -> None:
    """Append one row (``data_lost`` must be 0 for a passing test; the test asserts that)."""
    out = os.environ.get("DISTILL_RELIABILITY_OUT")
    if not out:
        return
    row = {
        "test": test,
        "load_held": load_held,
        "faults_survived": faults_survived,
        "inputs_tried": inputs_tried,
        "data_lost": data_lost,
        "note": note,
    }
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
