"""The zarr key space over HTTP: stock zarr-python reads it, and the DESIGN.md §3 contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import zarr

from tests.store_fixtures import LiveServer


def _zarr_url(server: LiveServer, name: str) -> str:
    return f"{server.url}/v1/stores/{name}/zarr/"


@pytest.mark.parametrize("name", ["demo", "wide", "v2", "v1"])  # v2: transposed multi-slot chunks
def test_stock_zarr_reads_every_array_identical(
    server: LiveServer, served: dict[str, Path], name: str
) -> None:
    remote = zarr.open_group(_zarr_url(server, name), mode="r")
    local = zarr.open_group(served["root"] / name, mode="r")
    assert dict(remote.attrs) == dict(local.attrs)
    assert sorted(remote.array_keys()) == sorted(local.array_keys()) == ["ids", "valid", "values"]
    for key in local.array_keys():
        a, b = local[key], remote[key]
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
        np.testing.assert_array_equal(b[:], a[:])
        np.testing.assert_array_equal(b[1, 37:301], a[1, 37:301])  # partial shard reads


def _get(server: LiveServer, key: str, **headers: str) -> requests.Response:
    return requests.get(f"{_zarr_url(server, 'demo')}{key}", headers=headers, timeout=10)


SHARD = "values/c/0/1/0"


def test_full_get_headers(server: LiveServer, served: dict[str, Path]) -> None:
    want = (served["demo"] / SHARD).read_bytes()
    r = _get(server, SHARD, **{"Accept-Encoding": "gzip, deflate"})
    assert r.status_code == 200 and r.content == want
    h = r.headers
    assert h["Content-Length"] == str(len(want))
    assert h["Content-Type"] == "application/octet-stream"
    assert h["Accept-Ranges"] == "bytes"
    assert h["ETag"].startswith('"') and not h["ETag"].startswith("W/")
    assert "immutable" in h["Cache-Control"]
    assert "Content-Encoding" not in h and "Transfer-Encoding" not in h
    meta = _get(server, "zarr.json")
    assert meta.headers["Content-Type"] == "application/json"
    assert meta.json()["consolidated_metadata"]["metadata"].keys() == {"ids", "values", "valid"}
    assert _get(server, "ids/zarr.json").json()["node_type"] == "array"


@pytest.mark.parametrize(
    ("spec", "lo", "hi"),
    [("bytes=0-9", 0, 10), ("bytes=5-5", 5, 6), ("bytes=100-", 100, None), ("bytes=-20", -20, None),
     ("bytes=-999999", 0, None), ("bytes=10-999999", 10, None), ("bytes = 3 - 7", 3, 8)],
)  # fmt: skip
def test_range_206(
    server: LiveServer, served: dict[str, Path], spec: str, lo: int, hi: int | None
) -> None:
    want = (served["demo"] / SHARD).read_bytes()
    part = want[lo:hi]
    r = _get(server, SHARD, Range=spec)
    assert r.status_code == 206, r.text
    assert r.content == part
    assert r.headers["Content-Length"] == str(len(part))
    first = want.index(part) if lo >= 0 else len(want) - len(part)
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(part) - 1}/{len(want)}"


@pytest.mark.parametrize("spec", ["bytes=999999-", "bytes=999999-1000000", "bytes=-0"])
def test_range_416(server: LiveServer, served: dict[str, Path], spec: str) -> None:
    total = (served["demo"] / SHARD).stat().st_size
    r = _get(server, SHARD, Range=spec)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{total}"
    assert r.json()["status"] == 416


@pytest.mark.parametrize(
    "spec", ["bytes=0-1,4-5", "bytes=abc", "bytes=9-2", "items=0-1", "bytes=-", "bytes 0-1"]
)
def test_malformed_or_multi_range_gives_200(
    server: LiveServer, served: dict[str, Path], spec: str
) -> None:
    r = _get(server, SHARD, Range=spec)
    assert r.status_code == 200
    assert r.content == (served["demo"] / SHARD).read_bytes()


def test_head_etag_and_304(server: LiveServer, served: dict[str, Path]) -> None:
    url = f"{_zarr_url(server, 'demo')}{SHARD}"
    size = (served["demo"] / SHARD).stat().st_size
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(size)
    etag = head.headers["ETag"]
    assert requests.get(url, timeout=10).headers["ETag"] == etag
    ranged = requests.head(url, headers={"Range": "bytes=-16"}, timeout=10)
    assert ranged.status_code == 206 and ranged.headers["Content-Length"] == "16"
    for inm in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        r = requests.get(url, headers={"If-None-Match": inm}, timeout=10)
        assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == etag
    assert requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10).status_code == 200
    stale = requests.get(url, headers={"Range": "bytes=0-3", "If-Range": '"old"'}, timeout=10)
    assert stale.status_code == 200 and len(stale.content) == size


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_405(server: LiveServer, method: str) -> None:
    r = requests.request(method, f"{_zarr_url(server, 'demo')}zarr.json", timeout=10)
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"] and "HEAD" in r.headers["Allow"]
    assert r.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "key", [".zarray", ".zgroup", "ids/.zarray", "ids/c/9/9/0", "nope/zarr.json", "_distill/x"]
)
def test_absent_keys_404_json(server: LiveServer, key: str) -> None:
    r = _get(server, key)
    assert r.status_code == 404
    assert r.json()["error"] == "no_such_key" and key in r.json()["detail"]


def test_manifest_served_read_only(server: LiveServer, served: dict[str, Path]) -> None:
    r = _get(server, "_distill/manifest.json")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    assert r.content == (served["demo"] / "_distill/manifest.json").read_bytes()
    assert _get(server, "_distill/shards/0.0.json").status_code == 404


def test_etags_identify_content_not_the_degenerate_crc(
    server: LiveServer, served: dict[str, Path]
) -> None:
    """A zarr shard is a chain of crc32c-suffixed segments, so its whole-file crc32c (what the
    manifest records) depends only on segment lengths: different shards share it. ETags must not."""
    import json

    files = json.loads((served["demo"] / "_distill/manifest.json").read_text())["files"]
    by_crc: dict[int, list[str]] = {}
    for key, rec in files.items():
        by_crc.setdefault(rec["crc32c"], []).append(key)
    same = next(keys for keys in by_crc.values() if len(keys) > 1)
    contents = {(served["demo"] / k).read_bytes() for k in same}
    assert len(contents) == len(same)  # different bytes, one crc32c
    etags = {_get(server, k).headers["ETag"] for k in same}
    assert len(etags) == len(same)
