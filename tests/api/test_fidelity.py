"""The recorded fidelity check on ``GET /v1/stores/NAME`` and the dashboard's store page: shown
as current when it names the store's identity, as stale when it names another, and written
without changing the identity, the ETags or the blocks (live uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import requests

from teacher_store.fidelity import FidelityRecord, record_check
from teacher_store.store.blockfmt import store_identity
from teacher_store.store.layout import FIDELITY, MANIFEST
from tests.store_fixtures import LiveServer, build_store, make_attrs

SHA = "ab" * 32


def _measured(identity: str) -> dict[str, Any]:
    """What a spot check measures (teacher_store.verify), as record_check takes it."""
    return {
        "identity": identity,
        "fraction": 0.25,
        "dataset_sha256": "cd" * 32,
        "views_rerun": 150,
        "views_total": 600,
        "fraction_rerun": 0.25,
        "batches_rerun": 5,
        "batches_total": 20,
        "ids_agreement": 0.998,
        "top1_agreement": 1.0,
        "max_dp": 1.9e-3,
        "median_max_dp": 1.2e-3,
        "kl": 0.4271,
        "teacher_weights_sha256": SHA,
        "device": "cpu",
        "tolerance": "same-device",
    }


def _detail(live: LiveServer, name: str) -> dict[str, Any]:
    r = requests.get(f"{live.url}/v1/stores/{name}", timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _wait(live: LiveServer, name: str, state: str | None) -> dict[str, Any]:
    """The store's detail once its fidelity shows ``state`` (the registry rescans)."""
    deadline = time.monotonic() + 20
    while True:
        d = _detail(live, name)
        got = (d.get("fidelity") or {}).get("state")
        if got == state or time.monotonic() > deadline:
            assert got == state, d.get("fidelity")
            return d


def test_service_and_dashboard_show_the_record_current_then_stale(tmp_path: Path) -> None:
    from api.main import create_app
    from api.settings import Settings

    attrs = make_attrs(300, views=2, topk=4, chunk=64, shard=128, shard_views=1)
    store = build_store(tmp_path / "root" / "demo", attrs, seed=0)
    identity = store_identity((store / MANIFEST).read_bytes())
    settings = Settings(root=tmp_path / "root", rescan_interval_s=0.0)
    with LiveServer(create_app(settings)) as live:
        before = _wait(live, "demo", None)
        assert before["fidelity"] is None
        block = requests.get(f"{live.url}/v1/stores/demo/blocks/0?start=0&stop=64", timeout=30)
        etag = requests.head(f"{live.url}/v1/stores/demo/zarr/ids/c/0/0/0", timeout=30)
        page = requests.get(f"{live.url}/ui/fragments/stores/demo", timeout=30).text
        assert "no fidelity check recorded" in page

        rec = record_check(store, _measured(identity), True, "OK (a test's spot check)")
        d = _wait(live, "demo", "current")
        f = d["fidelity"]
        assert f["identity"] == identity == d["identity"] == f["record"]["store_identity"]
        assert FidelityRecord.from_dict(f["record"]) == rec and f["reason"] == ""
        # Recording changed neither the identity, nor the ETags, nor the blocks.
        assert d["identity"] == before["identity"]
        again = requests.head(f"{live.url}/v1/stores/demo/zarr/ids/c/0/0/0", timeout=30)
        assert again.headers["etag"] == etag.headers["etag"]
        b2 = requests.get(f"{live.url}/v1/stores/demo/blocks/0?start=0&stop=64", timeout=30)
        assert b2.content == block.content
        page = requests.get(f"{live.url}/ui/fragments/stores/demo", timeout=30).text
        assert "passed on" in page and identity in page and "0.998" in page
        assert "STALE" not in page

        # Another store in its place (regenerated with another seed), the old record kept:
        # stale, never shown as the new store's.
        other = build_store(tmp_path / "other", attrs, seed=1)
        (other / FIDELITY).write_bytes((store / FIDELITY).read_bytes())
        (store.parent / "demo").rename(tmp_path / "old")
        other.rename(store)
        d = _wait(live, "demo", "stale")
        assert d["identity"] != identity and d["fidelity"]["record"]["store_identity"] == identity
        assert f"recorded for store identity {identity}" in d["fidelity"]["reason"]
        page = requests.get(f"{live.url}/ui/fragments/stores/demo", timeout=30).text
        assert "STALE: this record checked another store" in page

        (store / FIDELITY).write_text(json.dumps({"kind": "something else"}))
        d = _wait(live, "demo", "invalid")
        assert d["fidelity"]["record"] is None and FIDELITY in d["fidelity"]["reason"]
        page = requests.get(f"{live.url}/ui/fragments/stores/demo", timeout=30)
        assert page.status_code == 200 and "the fidelity record is invalid" in page.text
