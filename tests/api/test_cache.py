"""Caches: byte-bounded LRU, verified file reads (also for files too big to cache), tiny budgets."""

from __future__ import annotations

import os
from pathlib import Path

import crc32c
import numpy as np
import pytest
import requests
import zarr

from api.cache import ByteLRU, FileCache, FileRecord
from api.errors import StoreDamaged
from api.shards import parse_layout
from teacher_store.storage.location import Location
from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import decode_block
from tests.store_fixtures import LiveServer


def test_byte_lru_bounds_and_counts() -> None:
    lru = ByteLRU("t", 100)
    for i in range(5):
        lru.put(i, b"x" * 30, 30)
    assert lru.size <= 100 and len(lru) == 3
    assert lru.evicted == 60  # two entries of 30 dropped; the trimmer and /metrics read this
    assert lru.get(0) is None and lru.get(4) == b"x" * 30
    lru.put("huge", b"", 101)  # larger than the whole budget: not kept
    assert lru.get("huge") is None
    assert (lru.hits, lru.misses) == (1, 2)


def test_file_cache_verifies_big_and_small_files(tmp_path: Path) -> None:
    store = tmp_path / "s"
    store.mkdir()
    data = os.urandom(1000)
    (store / "big").write_bytes(data)
    (store / "small").write_bytes(data[:8])
    (tmp_path / "outside").write_bytes(b"secret")
    (store / "link").symlink_to(tmp_path / "outside")
    cache = FileCache(capacity=64, max_entry=16)
    real = os.path.realpath(store)
    good = FileRecord(1000, crc32c.crc32c(data))
    state = cache.verify("s", "big", *cache.resolve("s", real, "big"), good)  # type: ignore[misc]
    assert cache.cached(state) is None  # too big: verified by streaming, read by range
    assert cache.read(state, 10, 20) == data[10:20] and cache.read(state) == data
    small = cache.resolve("s", real, "small")
    assert small is not None
    s_state = cache.verify("s", "small", *small, FileRecord(8, crc32c.crc32c(data[:8])))
    assert cache.cached(s_state) == data[:8]
    with pytest.raises(StoreDamaged, match="checksum"):
        cache.verify("s", "small", *small, FileRecord(8, 123))
    with pytest.raises(StoreDamaged, match="manifest says 9"):
        cache.verify("s", "small", *small, FileRecord(9, 0))
    with pytest.raises(StoreDamaged, match="outside the store"):
        cache.resolve("s", real, "link")
    assert cache.resolve("s", real, "absent") is None
    (store / "big").write_bytes(data[:500])  # shrinks after verification
    with pytest.raises(StoreDamaged):
        cache.read(state, 600, 700)


def test_a_file_vanishing_mid_request_is_a_409_not_a_500(tmp_path: Path) -> None:
    """A store replaced under the service (a folder renamed away between a request's stat and
    its read) is a StoreDamaged (409: clients re-check the identity), never io_error's 500."""
    store = tmp_path / "s"
    store.mkdir()
    data = os.urandom(1000)
    (store / "big").write_bytes(data)
    cache = FileCache(capacity=64, max_entry=16)
    real = os.path.realpath(store)
    found = cache.resolve("s", real, "big")
    assert found is not None
    state = cache.verify("s", "big", *found, FileRecord(1000, crc32c.crc32c(data)))
    (store / "big").unlink()  # after the stat and the verification: gone at read time
    with pytest.raises(StoreDamaged, match="vanished while being read"):
        cache.read(state, 0, 10)
    (store / "again").write_bytes(data)
    again = cache.resolve("s", real, "again")
    assert again is not None
    (store / "again").unlink()  # between the stat and the first (verifying) read
    with pytest.raises(StoreDamaged, match="vanished while being read"):
        cache.verify("s", "again", *again, FileRecord(1000, crc32c.crc32c(data)))


@pytest.mark.parametrize("kind", ["memory", "s3"])
def test_file_cache_reads_ranges_of_big_objects(kind: str, request: pytest.FixtureRequest) -> None:
    """Files too big for the LRU are read by range through the store's Location; on S3 a
    positional range once came back as [stop, end) (s3fs takes a version id second)."""
    if kind == "s3":
        loc = Location.at(request.getfixturevalue("s3_server").url("cache"))
    else:
        loc = Location.at(f"memory://cache-{os.getpid()}/s")
    data = os.urandom(1000)
    loc.write_atomic("big", data)
    cache = FileCache(capacity=64, max_entry=16)
    found = cache.resolve("s", loc, "big")
    assert found is not None and found[1].st_size == 1000
    state = cache.verify("s", "big", *found, FileRecord(1000, crc32c.crc32c(data)))
    assert cache.cached(state) is None  # too big: verified by streaming, read by range
    for a, b in ((0, 10), (10, 20), (990, 1000)):
        assert cache.read(state, a, b) == data[a:b], (a, b)
    assert cache.resolve("s", loc, "absent") is None
    loc.write_atomic("big", data[::-1])  # replaced: a new signature, verified again
    again = cache.resolve("s", loc, "big")
    assert again is not None and again[1].sig != found[1].sig
    with pytest.raises(StoreDamaged, match="checksum"):
        cache.verify("s", "big", *again, FileRecord(1000, crc32c.crc32c(data)))
    loc.clear()


def test_unsupported_layout_is_detected() -> None:
    assert parse_layout("x", {"codecs": [{"name": "bytes"}]}) is None
    assert parse_layout("x", {}) is None


def test_tiny_cache_budget_still_serves_identical(served: dict[str, Path]) -> None:
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(root=served["root"], cache_bytes=2048)  # most shards bypass the LRU
    with LiveServer(create_app(settings)) as live:
        remote = zarr.open_group(f"{live.url}/v1/stores/demo/zarr/", mode="r")
        local = zarr.open_group(served["demo"], mode="r")
        for key in ("ids", "values", "valid"):
            np.testing.assert_array_equal(remote[key][:], local[key][:])
        r = requests.get(f"{live.url}/v1/stores/demo/blocks/1", params={"start": 5, "stop": 995})
        got, want = decode_block(r.content), LocalStore(served["demo"]).read_block(1, 5, 995)
        np.testing.assert_array_equal(got.values, want.values)
        np.testing.assert_array_equal(got.ids, want.ids)
