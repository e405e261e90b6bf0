"""Readers of a store that grows under them: a reader streaming the slots it opened keeps going
while slots are appended (local folder, S3 over fsspec, the service), and a rewrite of the
store still stops it with StoreChangedError.

The stores are real zarr stores written by the store writer with made-up targets
(tests/store_fixtures.build_store), grown by the same growth code `distill generate` runs
(begin_growth, write_growing_unit, finish_store), without a teacher.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teacher_store.client import StoreChangedError, open_store
from teacher_store.store.arrays import committed_units
from teacher_store.store.grow import begin_growth, finish_store, pending_growth, write_growing_unit
from teacher_store.store.layout import shard_units
from teacher_store.store.schema import StoreAttrs, encode_values
from tests.s3_fixtures import S3Server
from tests.store_fixtures import LiveServer, build_store, make_attrs

ATTRS = make_attrs(num_samples=300, views=3, shard_views=2, chunk=64, shard=128)


def grown_attrs(attrs: StoreAttrs, views: int) -> StoreAttrs:
    base = attrs.base_views or attrs.views
    config = {**attrs.config, "views": views, "base_views": base}
    return attrs.model_copy(update={"views": views, "base_views": base, "config": config})


def grow(address: str, views: int, finish: bool = True) -> StoreAttrs:
    """Grow the store at ``address`` to ``views`` slots with made-up targets for new slots."""
    old = open_store(address).attrs
    attrs = grown_attrs(old, views)
    growth = begin_growth(address, attrs)
    assert growth is not None
    rng = np.random.default_rng(views)
    units = shard_units(attrs)
    done = committed_units(address, units)
    for unit in (u for u in units if u.name not in done):
        rs, n, k = unit.slot_stop - unit.slot_start, unit.stop - unit.start, attrs.topk
        ids = np.stack([rng.permutation(attrs.num_classes)[:k] for _ in range(rs * n)])
        logp = np.sort(rng.normal(0, 3, (rs, n, k)), -1)[..., ::-1]
        logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True) + 40.0)
        arrays = (
            ids.reshape(rs, n, k).astype(attrs.ids_dtype),
            logp,
            np.ones((rs, n), np.uint8),
        )
        arrays = (arrays[0], encode_values(arrays[1], attrs.value_encoding), arrays[2])
        write_growing_unit(address, growth, unit, arrays, [], {"views": rs * n})
    if finish:
        finish_store(address, attrs, units)
    return attrs


def _blocks(client: Any, slots: range) -> list[tuple[np.ndarray, ...]]:
    return [
        (b.ids.copy(), b.values.copy(), b.valid.copy())
        for b in (client.read_block(s, 0, ATTRS.num_samples) for s in slots)
    ]


def _same(a: list[tuple[np.ndarray, ...]], b: list[tuple[np.ndarray, ...]]) -> None:
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


def _keeps_reading_then_stops(address: str, reread: Any = None) -> None:
    """Open, grow twice (3 -> 5 -> 6 slots), keep reading the first slots, then rewrite."""
    client = open_store(address, prefetch=0, max_cache_blocks=0)
    before = _blocks(client, range(3))
    grow(address, 5)
    _same(_blocks(client, range(3)), before)  # same values, no StoreChangedError
    grow(address, 6)
    _same(_blocks(client, range(3)), before)
    assert client.attrs.views == 3  # what this reader opened: its slots, its identity
    now = open_store(address)
    assert now.attrs.views == 6 and now.identity != client.identity
    _same(_blocks(now, range(3)), before)
    if reread is not None:
        reread(client, before)
    build_store(address, ATTRS, seed=9)  # regenerated: existing slots rewritten
    with pytest.raises(StoreChangedError, match="changed while reading"):
        _blocks(client, range(3))


def test_local_reader_keeps_going_while_slots_are_appended(tmp_path: Path) -> None:
    path = str(build_store(tmp_path / "s", ATTRS))

    def reopened(client: Any, before: Any) -> None:  # a forked DataLoader worker's copy
        copy = pickle.loads(pickle.dumps(client))
        _same(_blocks(copy, range(3)), before)
        assert copy.attrs.views == 3

    _keeps_reading_then_stops(path, reopened)


def test_s3_reader_keeps_going_while_slots_are_appended(s3_server: S3Server) -> None:
    url = s3_server.url("grow-read")
    build_store(url, ATTRS)  # type: ignore[arg-type]
    _keeps_reading_then_stops(url)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[Path, LiveServer]]:
    from api.main import create_app
    from api.settings import Settings

    root = tmp_path / "root"
    root.mkdir()
    with LiveServer(create_app(Settings(root=root, max_block=100, rescan_interval_s=0.0))) as live:
        yield root, live


def test_service_reader_keeps_going_while_slots_are_appended(served) -> None:
    import requests

    root, live = served
    path = str(build_store(root / "s", ATTRS))
    url = f"{live.url}/v1/stores/s"
    client = open_store(url, prefetch=0, max_cache_blocks=0)
    before = _blocks(client, range(3))
    first = client.identity
    grow(path, 5)
    _same(_blocks(client, range(3)), before)
    detail = requests.get(url, timeout=10).json()
    assert detail["views"] == 5 and detail["grown_from"] == [{"views": 3, "identity": first}]
    assert detail["view_identity"] == requests.get(url, timeout=10).json()["view_identity"]
    build_store(path, ATTRS, seed=9)
    with pytest.raises(StoreChangedError):
        _blocks(client, range(3))


def test_a_growth_under_way_is_invisible_to_readers(tmp_path: Path) -> None:
    """Until it finishes, a growth changes nothing a reader sees: the same store, slots and
    identity, for readers open before and readers opening meanwhile."""
    path = str(build_store(tmp_path / "s", ATTRS))
    client = open_store(path)
    before = _blocks(client, range(3))
    grow(path, 5, finish=False)
    assert pending_growth(path) is not None
    meanwhile = open_store(path)
    assert (meanwhile.identity, meanwhile.attrs.views) == (client.identity, 3)
    _same(_blocks(meanwhile, range(3)), before)
    _same(_blocks(client, range(3)), before)
