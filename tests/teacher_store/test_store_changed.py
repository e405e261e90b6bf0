"""A store replaced while a client reads it: the next block raises StoreChangedError.

Real stores, a real uvicorn service; the swap is what a user does: move the served folder away
and put a store written with another seed in its place.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from teacher_store.client import StoreChangedError, StoreClient
from teacher_store.store.blockfmt import store_identity
from tests.store_fixtures import LiveServer, build_store, make_attrs


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    """root/demo (seed 0) and a same-shaped store written with seed 1, outside the root."""
    attrs = make_attrs(300, views=2, topk=4, chunk=64, shard=128, shard_views=1)
    build_store(tmp_path / "root" / "demo", attrs, seed=0)
    return tmp_path / "root" / "demo", build_store(tmp_path / "other", attrs, seed=1)


def _swap(store: Path, other: Path) -> str:
    """Replace ``store`` by ``other`` (two renames); the new store's identity."""
    os.rename(store, store.with_name("demo.old"))
    os.rename(other, store)
    return store_identity((store / "_distill" / "manifest.json").read_bytes())


def _changed(err: pytest.ExceptionInfo[StoreChangedError], url: str, old: str, new: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"store {url} changed while reading")
    assert f"(identity {old} → {new})" in msg and "restart training" in msg
    assert isinstance(err.value, ValueError)


def test_service_client_stops_when_the_store_is_replaced(tmp_path: Path) -> None:
    from api.main import create_app
    from api.settings import Settings

    store, other = _pair(tmp_path)
    old = store_identity((store / "_distill" / "manifest.json").read_bytes())
    settings = Settings(root=tmp_path / "root", rescan_interval_s=0.5)
    with LiveServer(create_app(settings)) as live:
        url = f"{live.url}/v1/stores/demo"
        client = StoreClient(url, max_cache_blocks=0)
        assert client.identity == old
        assert client.read_block(0, 0, 64).ids.shape == (64, 4)
        r = requests.get(f"{url}/blocks/0", params={"start": 0, "stop": 8}, timeout=10)
        assert r.headers["X-Distill-Store-Identity"] == old
        new = _swap(store, other)
        assert new != old
        deadline = time.monotonic() + 20  # until the service has rescanned (interval 0.5 s)
        while requests.get(url, timeout=10).json().get("identity") != new:
            assert time.monotonic() < deadline, "the service never saw the new store"
            time.sleep(0.05)
        with pytest.raises(StoreChangedError) as err:
            client.read_block(0, 0, 64)  # the same block as before: now from another store
        _changed(err, url, old, new)
        with pytest.raises(StoreChangedError):
            client.read_block(1, 64, 128)
        assert StoreClient(url).identity == new  # a new client (a restart) reads the new store


def test_service_notices_a_swap_before_its_next_rescan(tmp_path: Path) -> None:
    """Within the rescan interval the old manifest no longer matches the files: the service
    rescans at once and answers from the new store, whose identity the client refuses."""
    from api.main import create_app
    from api.settings import Settings

    store, other = _pair(tmp_path)
    settings = Settings(root=tmp_path / "root", rescan_interval_s=3600.0)
    with LiveServer(create_app(settings)) as live:
        url = f"{live.url}/v1/stores/demo"
        client = StoreClient(url, max_cache_blocks=0)
        old = client.identity
        client.read_block(0, 0, 64)
        new = _swap(store, other)
        with pytest.raises(StoreChangedError) as err:
            client.read_block(1, 128, 192)  # shards not yet read: checked against the manifest
        _changed(err, url, old, new)


@pytest.mark.parametrize("scheme", ["path", "file://"])
def test_local_and_fsspec_clients_stop_when_the_store_is_replaced(
    tmp_path: Path, scheme: str
) -> None:
    store, other = _pair(tmp_path)
    url = str(store) if scheme == "path" else f"file://{store}"
    client = StoreClient(url, max_cache_blocks=0)
    old = client.identity
    assert old == store_identity((store / "_distill" / "manifest.json").read_bytes())
    first = client.read_block(0, 0, 64)
    assert client.read_block(0, 0, 64).ids.tolist() == first.ids.tolist()  # unchanged: fine
    new = _swap(store, other)
    with pytest.raises(StoreChangedError) as err:
        client.read_block(0, 0, 64)
    _changed(err, client.url.rstrip("/") if scheme == "path" else url + "/", old, new)
    shutil.rmtree(store)  # deleted outright: the manifest is gone
    with pytest.raises(StoreChangedError, match="no manifest"):
        client.read_block(0, 0, 64)
