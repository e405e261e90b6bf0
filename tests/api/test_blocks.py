"""Block endpoint, listing/metadata, unfinished stores, health and metrics on a live server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests

from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import MAGIC, decode_block
from tests.store_fixtures import LiveServer


def _block(server: LiveServer, name: str, view: int, start: int, stop: int) -> requests.Response:
    url = f"{server.url}/v1/stores/{name}/blocks/{view}"
    return requests.get(url, params={"start": start, "stop": stop}, timeout=10)


@pytest.mark.parametrize(
    ("name", "view", "start", "stop"),
    [("demo", 0, 0, 512), ("demo", 2, 0, 1), ("demo", 1, 100, 611), ("demo", 2, 999, 1000),
     ("demo", 2, 700, 1000), ("wide", 1, 0, 300), ("wide", 0, 63, 65), ("v2", 0, 0, 500),
     ("v2", 3, 37, 301), ("v2", 4, 127, 129), ("v1", 1, 0, 17), ("v1", 0, 3, 9)],
)  # fmt: skip
def test_block_equals_local_read(
    server: LiveServer, served: dict[str, Path], name: str, view: int, start: int, stop: int
) -> None:
    local = LocalStore(served["root"] / name).read_block(view, start, stop)
    for _ in range(2):  # cold, then from the decoded-chunk cache
        r = _block(server, name, view, start, stop)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
        assert r.content[:4] == MAGIC
        got = decode_block(r.content)
        assert (got.slot, got.start, got.encoding) == (view, start, local.encoding)
        for field in ("ids", "values", "valid"):
            want = getattr(local, field)
            np.testing.assert_array_equal(getattr(got, field), want)
            assert getattr(got, field).dtype == want.dtype
    # the fixtures mark ~5% of views invalid (v1: a real store, every view valid)
    assert not local.valid.all() or stop - start < 50 or name == "v1"


@pytest.mark.parametrize(
    ("view", "start", "stop", "words"),
    [(3, 0, 10, ["view 3", "[0, 3)"]), (0, 1000, 1001, ["start 1000", "[0, 1000)"]),
     (0, 0, 1001, ["stop 1001", "1000"]), (0, 10, 9, ["stop 9", "start 10"]),
     (0, 0, 513, ["513", "512", "DISTILL_MAX_BLOCK"]), (-1, 0, 5, ["view"]),
     (0, -5, 5, ["start"]), (0, 0, "x", ["stop"]), (0, 10**30, 10**30 + 1, ["start"])],
)  # fmt: skip
def test_block_bounds_400(
    server: LiveServer, view: int, start: int, stop: object, words: list[str]
) -> None:
    r = requests.get(
        f"{server.url}/v1/stores/demo/blocks/{view}", params={"start": start, "stop": stop}
    )
    assert r.status_code == 400, r.text
    for w in words:
        assert w in r.json()["detail"], (w, r.json())


def test_an_empty_range_is_an_empty_block(server: LiveServer) -> None:
    """``start == stop`` is admitted by the schema, so it is answered: a valid block of 0
    samples (it was a 400), conforming to the OpenAPI schema; an inverted range stays 400."""
    import schemathesis

    from teacher_store.store.blockfmt import IDENTITY_HEADER, decode_block

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operation = schema["/v1/stores/{name}/blocks/{view}"]["GET"]
    identity = requests.get(f"{server.url}/v1/stores/demo", timeout=10).json()["identity"]
    for start in (0, 1, 999, 1000):
        case = operation.Case(
            path_parameters={"name": "demo", "view": 2}, query={"start": start, "stop": start}
        )
        case.validate_response(case.call())  # 200 + the documented media type
        r = _block(server, "demo", 2, start, start)
        assert r.status_code == 200, r.text
        block = decode_block(r.content)
        assert block.ids.shape == (0, 5) and block.values.shape[0] == 0 and block.valid.size == 0
        assert block.start == start and r.headers[IDENTITY_HEADER] == identity
    assert _block(server, "demo", 2, 1001, 1001).status_code == 400


def test_listing_and_detail(server: LiveServer, served: dict[str, Path]) -> None:
    stores = {s["name"]: s for s in requests.get(f"{server.url}/v1/stores").json()["stores"]}
    assert {"demo", "wide", "partial"} <= stores.keys() and "not-a-store" not in stores
    assert stores["demo"]["state"] == "complete" and stores["demo"]["progress"] == {
        "committed_units": 8,
        "total_units": 8,
    }
    partial = stores["partial"]
    assert partial["state"] == "incomplete" and not partial["complete"]
    assert partial["progress"] == {"committed_units": 3, "total_units": 6}
    d = requests.get(f"{server.url}/v1/stores/demo").json()
    assert (d["views"], d["num_samples"], d["topk"], d["num_classes"]) == (3, 1000, 5, 100)
    assert d["teacher_name"] == "fake_teacher" and d["teacher_weights_sha256"] == "ab" * 32
    assert d["value_encoding"] == "logprob-f16" and d["recipe"]["name"] == "test"
    assert d["dataset"]["num_samples"] == 1000 and d["max_block"] == 512
    on_disk = sum(f.stat().st_size for f in served["demo"].glob("*/c/**/*") if f.is_file())
    assert d["bytes_on_disk"] == on_disk
    assert d["bytes_per_view"] == pytest.approx(on_disk / 3000)
    assert d["arrays"]["ids"]["shape"] == [3, 1000, 5] and d["arrays"]["ids"]["dtype"] == "uint16"
    assert d["zarr_url"] == "/v1/stores/demo/zarr/" and d["attrs"]["store_seed"] == 7
    r = requests.get(f"{server.url}/v1/stores/nope")
    assert r.status_code == 404 and r.json()["error"] == "unknown_store"


def test_unfinished_store_is_listed_but_not_served(server: LiveServer) -> None:
    d = requests.get(f"{server.url}/v1/stores/partial").json()
    assert d["state"] == "incomplete" and d["zarr_url"] is None
    for path in ("zarr/zarr.json", "zarr/ids/c/0/0/0", "blocks/0?start=0&stop=5"):
        r = requests.get(f"{server.url}/v1/stores/partial/{path}")
        assert r.status_code == 409, path
        assert r.json()["error"] == "store_incomplete" and "3/6" in r.json()["detail"]


def test_new_store_appears_without_restart(server: LiveServer, served: dict[str, Path]) -> None:
    from tests.store_fixtures import build_store, make_attrs

    assert requests.get(f"{server.url}/v1/stores/late").status_code == 404
    build_store(served["root"] / "late", make_attrs(200), seed=5)
    assert _block(server, "late", 0, 0, 200).status_code == 200


def test_health_ready_metrics(server: LiveServer) -> None:
    assert requests.get(f"{server.url}/healthz").json() == {"status": "ok", "stores": None}
    ready = requests.get(f"{server.url}/readyz").json()
    assert ready["status"] == "ok" and ready["stores"] >= 3
    for _ in range(3):
        assert _block(server, "demo", 1, 0, 256).status_code == 200
    _block(server, "demo", 9, 0, 1)
    text = requests.get(f"{server.url}/metrics").text
    route = 'route="/v1/stores/{name}/blocks/{view}"'
    assert f'distill_requests_total{{method="GET",{route},status="200"}}' in text
    assert f'distill_requests_total{{method="GET",{route},status="400"}}' in text
    assert f"distill_response_bytes_total{{{route}}}" in text
    assert f'distill_request_seconds_bucket{{le="0.01",{route}}}' in text
    for cache in ("files", "chunks"):
        for what in ("hits_total", "misses_total", "bytes"):
            line = f'distill_cache_{what}{{cache="{cache}"}}'
            value = [ln for ln in text.splitlines() if ln.startswith(line)]
            assert value and float(value[0].split()[-1]) > 0, line
        assert f'distill_cache_evicted_bytes_total{{cache="{cache}"}} 0.0' in text  # all fit


def test_openapi_documents_models(server: LiveServer) -> None:
    spec = requests.get(f"{server.url}/openapi.json").json()
    paths = spec["paths"]
    for p in ("/v1/stores", "/v1/stores/{name}", "/v1/stores/{name}/zarr/{key}",
              "/v1/stores/{name}/blocks/{view}", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert p in paths, p
    schemas = spec["components"]["schemas"]
    assert {"StoreList", "StoreDetail", "ErrorBody", "Health"} <= schemas.keys()
    assert "422" not in paths["/v1/stores/{name}/blocks/{view}"]["get"]["responses"]


def test_unreadable_store_is_listed_with_the_reason(
    server: LiveServer, served: dict[str, Path]
) -> None:
    import json

    from tests.store_fixtures import build_store, make_attrs

    store = build_store(served["root"] / "future", make_attrs(100), seed=9)
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["codec_version"] = 999
    (store / "zarr.json").write_text(json.dumps(meta))
    d = requests.get(f"{server.url}/v1/stores/future").json()
    assert d["state"] == "invalid" and "codec version 999" in d["error"]
    r = _block(server, "future", 0, 0, 10)
    assert r.status_code == 409 and r.json()["error"] == "store_invalid"
    assert "codec version 999" in r.json()["detail"]
