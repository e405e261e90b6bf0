"""Store scans cost what is on disk, not what the attrs claim, and never block the event loop."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import requests

from tests.store_fixtures import LiveServer, build_store, make_attrs


def _claim_views(store: Path, views: int) -> None:
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"].update(views=views, shard_views=1)
    (store / "zarr.json").write_text(json.dumps(doc))


def test_huge_claimed_counts_are_counted_not_listed(tmp_path: Path) -> None:
    """A store of 131,072 shard units is listed with its unit count computed and its records
    counted, never unit by unit; a store claiming more views than any store may have (10**12,
    2,000,000: more than MAX_VIEWS) is listed as invalid at once, naming zarr.json."""
    from api.main import create_app
    from api.settings import Settings
    from teacher_store.store.schema import MAX_VIEWS

    root = tmp_path / "root"
    # 131,072 units of one view slot and 32 samples each, at the largest view count allowed
    samples = 32 * 131072 // MAX_VIEWS
    big = make_attrs(samples, views=MAX_VIEWS, topk=3, chunk=16, shard=32, shard_views=1)
    build_store(root / "unfinished", big, units=2)  # only metadata and two units on disk
    attrs = make_attrs(64, views=2, topk=3, chunk=16, shard=32, shard_views=1)
    claiming = build_store(root / "claiming", attrs, units=2)
    _claim_views(claiming, 10**12)
    finished = build_store(root / "finished", attrs)
    _claim_views(finished, 2_000_000)
    with LiveServer(create_app(Settings(root=root))) as live:
        r = requests.get(f"{live.url}/v1/stores", timeout=5)
        stores = {s["name"]: s for s in r.json()["stores"]}
        assert stores["unfinished"]["progress"] == {"committed_units": 2, "total_units": 131072}
        assert stores["unfinished"]["state"] == "incomplete"
        for name in ("claiming", "finished"):
            assert stores[name]["state"] == "invalid"
            assert (
                "zarr.json" in stores[name]["error"] and f"<= {MAX_VIEWS}" in stores[name]["error"]
            )
        r = requests.get(f"{live.url}/v1/stores/finished/blocks/1999999?start=0&stop=4", timeout=5)
        assert r.status_code == 409


def test_healthz_answers_while_a_scan_is_running(tmp_path: Path) -> None:
    from api.main import create_app
    from api.settings import Settings

    root = tmp_path / "root"
    build_store(root / "demo", make_attrs(64, views=2, topk=3, chunk=16, shard=32))
    app = create_app(Settings(root=root, rescan_interval_s=0.0))
    with LiveServer(app) as live:
        assert requests.get(f"{live.url}/v1/stores", timeout=5).ok
        registry = app.state.service.registry
        result: list[requests.Response] = []
        with registry._lock:  # a scan now waits here, as a slow disk would make it wait
            shutil.copytree(root / "demo", root / "demo2")
            waiting = threading.Thread(
                target=lambda: result.append(requests.get(f"{live.url}/v1/stores", timeout=30))
            )
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive()  # the /v1 request waits for the scan ...
            health = requests.get(f"{live.url}/healthz", timeout=5)  # ... /healthz does not
            assert health.status_code == 200 and waiting.is_alive()
            assert requests.get(f"{live.url}/readyz", timeout=5).status_code == 200
        waiting.join(10)
        names = {s["name"] for s in result[0].json()["stores"]}
        assert names == {"demo", "demo2"}


def test_store_folders_the_service_will_not_serve_are_listed_as_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Store folders whose names the API cannot address (a space, a leading ``_``, 129
    characters, non-ASCII, a trailing newline) are listed under ``skipped`` with the reason,
    on the dashboard too, and logged once each (not at every rescan); folders that hold no
    store are not listed."""
    import logging

    from api.main import create_app
    from api.settings import Settings

    root = tmp_path / "root"
    good = build_store(root / "good", make_attrs(64, views=2, topk=3, chunk=16, shard=32))
    bad = {"a b": "' '", "_hidden": "starts with '_'", "x" * 129: "129 characters",
           "café": "'é'", "new\nline": "'\\n'"}  # fmt: skip
    for name in bad:
        shutil.copytree(good, root / name)
    (root / "not a store").mkdir()
    caplog.set_level(logging.WARNING, logger="distill.api")
    with LiveServer(create_app(Settings(root=root, rescan_interval_s=0.0))) as live:
        for _ in range(3):  # each request rescans
            listing = requests.get(f"{live.url}/v1/stores", timeout=10).json()
        assert [s["name"] for s in listing["stores"]] == ["good"]
        skipped = {s["name"]: s["reason"] for s in listing["skipped"]}
        assert set(skipped) == set(bad)
        for name, words in bad.items():
            assert words in skipped[name] and "store names are 1-128 characters" in skipped[name]
        page = requests.get(f"{live.url}/ui/fragments/stores", timeout=10).text
        assert 'data-skipped="a b"' in page and "129 characters" in page
    logged = [
        r.getMessage() for r in caplog.records if "not serving the store folder" in r.getMessage()
    ]
    assert len(logged) == len(bad), logged
