"""open_store: one parser for store addresses, one block cache that prefetch threads fill."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import teacher_store
from teacher_store.client import (
    DatasetMismatchError,
    StoreAddressError,
    StoreClient,
    open_store,
    resolve_address,
)
from teacher_store.store.arrays import LocalStore
from tests.store_fixtures import build_store, make_attrs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("open") / "demo", make_attrs(500, views=2, topk=4))


def test_addresses_are_parsed_in_one_place(tmp_path: Path) -> None:
    assert resolve_address(tmp_path) == ("local", str(tmp_path))
    assert resolve_address("runs/a:b") == ("local", "runs/a:b")  # no scheme: a folder
    assert resolve_address("HTTPS://h:1/v1/stores/x") == ("service", "https://h:1/v1/stores/x")
    assert resolve_address("http://h/v1/stores/x/zarr/") == ("fsspec", "http://h/v1/stores/x/zarr/")
    assert resolve_address(f"file://{tmp_path}")[0] == "fsspec"
    assert resolve_address(f"simplecache::file://{tmp_path}")[0] == "fsspec"
    assert teacher_store.open_store is open_store


@pytest.mark.parametrize("address", ["foo://x", "nosuch::file:///tmp/x", "x_y://z"])
def test_unsupported_schemes_are_refused_not_taken_for_folders(address: str) -> None:
    with pytest.raises(StoreAddressError) as err:
        open_store(address)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert address in msg and "is not supported" in msg


def test_open_store_reads_like_the_local_store(store: Path) -> None:
    local = LocalStore(store)
    with open_store(store) as client:
        assert client.kind == "local" and client.attrs == local.attrs
        for slot, start, stop in [(0, 0, 128), (1, 256, 384), (1, 384, 500)]:
            got, want = client.read_block(slot, start, stop), local.read_block(slot, start, stop)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.values, want.values)
            np.testing.assert_array_equal(got.valid, want.valid)


def test_dataset_mismatch_is_typed(store: Path) -> None:
    fp = make_attrs(500, views=2, topk=4).dataset
    open_store(store, expected_fingerprint=fp).close()
    with pytest.raises(DatasetMismatchError, match="num_samples is 500 in the store, 501") as err:
        open_store(store, expected_fingerprint={**fp, "num_samples": 501})
    assert isinstance(err.value, ValueError) and err.value.store_dataset == fp


def _counting(client: StoreClient) -> dict[tuple[int, int, int], int]:
    """Count the backend's reads per block (each one slowed a little)."""
    backend, lock = client._open(), threading.Lock()
    reads: dict[tuple[int, int, int], int] = {}
    inner = backend.read_block

    def read(slot: int, start: int, stop: int) -> Any:
        time.sleep(0.02)
        with lock:
            reads[(slot, start, stop)] = reads.get((slot, start, stop), 0) + 1
        return inner(slot, start, stop)

    backend.read_block = read  # type: ignore[method-assign]
    return reads


def test_prefetched_blocks_are_read_once(store: Path) -> None:
    client = open_store(store, prefetch=2, max_cache_blocks=8)
    reads = _counting(client)
    ranges = [(0, 128), (128, 256), (256, 384)]
    client.prefetch_blocks(1, ranges)
    client.prefetch_blocks(1, ranges)  # already under way: nothing new
    for start, stop in ranges:  # waits for the reads in flight instead of reading again
        assert client.read_block(1, start, stop).start == start
    assert reads == {(1, a, b): 1 for a, b in ranges}
    assert [b.start for b in client.iter_blocks(1, ranges)] == [0, 128, 256]  # from the cache
    assert sum(reads.values()) == 3
    client.close()


def test_without_a_cache_prefetch_blocks_does_nothing(store: Path) -> None:
    client = open_store(store, max_cache_blocks=0)
    reads = _counting(client)
    client.prefetch_blocks(0, [(0, 128)])
    assert reads == {}
    client.read_block(0, 0, 128)
    client.read_block(0, 0, 128)
    assert reads == {(0, 0, 128): 2}


def test_a_failed_or_cancelled_read_is_read_again(store: Path) -> None:
    client = open_store(store, prefetch=1, max_cache_blocks=8)
    backend = client._open()
    inner, calls = backend.read_block, []

    def flaky(slot: int, start: int, stop: int) -> Any:
        calls.append(start)
        if len(calls) == 1:
            raise OSError("disk hiccup")
        return inner(slot, start, stop)

    backend.read_block = flaky  # type: ignore[method-assign]
    client.prefetch_blocks(0, [(0, 128)])
    with pytest.raises(OSError, match="hiccup"):
        client.read_block(0, 0, 128)
    assert client.read_block(0, 0, 128).start == 0  # the failure was not cached
    it: Any = client.iter_blocks(1, [(0, 128), (128, 256), (256, 384)])
    next(it)
    it.close()  # cancels what is still queued, cached or not
    assert client.read_block(1, 128, 256).start == 128
    cancelled: Future[Any] = Future()
    cancelled.cancel()
    client._cache[(1, 256, 384)] = cancelled  # as an iter_blocks stopped early leaves it
    assert client.read_block(1, 256, 384).start == 256
    assert client._cache[(1, 256, 384)].result().start == 256
    client.close()
