"""The storage contract (:class:`teacher_store.testing.StorageContract`) on every backend:
local disk, fsspec's memory filesystem, and S3 on a real moto server (tests/s3_fixtures.py).

A new backend is one line of :data:`BACKENDS`: its name and a function giving a fresh empty
location and a location whose writes fail."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teacher_store.storage.location import Location
from teacher_store.testing.storage import StorageContract

_n = itertools.count()
Pair = tuple[Location, Location]  # (a fresh empty location, one whose writes fail)


def _local(request: pytest.FixtureRequest, tmp: Path) -> Pair:
    (tmp / "file").write_bytes(b"not a folder")
    return Location.local(tmp / "store"), Location.local(tmp / "file" / "store")


def _memory(request: pytest.FixtureRequest, tmp: Path) -> Pair:
    root = f"memory://contract-{next(_n)}"
    Location.at(root).write_atomic("file", b"not a folder")
    return Location.at(f"{root}/store"), Location.at(f"{root}/file/store")


def _s3(request: pytest.FixtureRequest, tmp: Path) -> Pair:
    s3 = request.getfixturevalue("s3_server")
    return Location.at(s3.url("contract")), Location.at(f"s3://no-such-bucket-{next(_n)}/s")


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Pair]] = {
    "local": _local,
    "memory": _memory,
    "s3": _s3,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    location, broken = BACKENDS[request.param](request, tmp_path)
    yield location, broken
    location.clear()  # memory and S3 outlive the test


@pytest.fixture
def location(backend: Pair) -> Location:
    return backend[0]


@pytest.fixture
def broken(backend: Pair) -> Location:
    return backend[1]


class TestStorage(StorageContract):
    """Every test of the contract, on every backend."""
