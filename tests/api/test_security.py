"""Traversal never leaks a byte, the bearer token guards /v1, damaged stores never serve data."""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import requests
import zarr

from teacher_store.client import StoreClient, StoreClientError
from teacher_store.errors import StoreError
from tests.api.conftest import SECRET
from tests.reliability import record
from tests.store_fixtures import LiveServer, copy_store


def _raw_get(server: LiveServer, path: str) -> tuple[int, bytes]:
    """Send ``path`` byte for byte (no client-side normalisation of dots or escapes)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _traversals(served: dict[str, Path]) -> list[str]:
    secret = str(served["secret"])
    z = "/v1/stores/demo/zarr/"
    return [
        z + "../../../secret.txt",
        z + "ids/../../../secret.txt",
        z + "..%2F..%2F..%2Fsecret.txt",
        z + "%2e%2e/%2e%2e/%2e%2e/secret.txt",
        z + "%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        z + "..%5C..%5C..%5Csecret.txt",
        z + "ids\\..\\..\\..\\secret.txt",
        z + "/" + secret.lstrip("/"),
        z + secret.replace("/", "%2F"),
        z + "zarr.json%00../../../secret.txt",
        z + "%252e%252e/%252e%252e/secret.txt",
        "/v1/stores/..%2Fsecret.txt/zarr/zarr.json",
        "/v1/stores/%2e%2e/zarr/secret.txt",
        "/v1/stores/../zarr/secret.txt",
        "/v1/stores/demo/blocks/0/../../../../secret.txt?start=0&stop=1",
        "/../../secret.txt",
    ]


def test_traversal_never_leaks(server: LiveServer, served: dict[str, Path]) -> None:
    for path in _traversals(served):
        status, body = _raw_get(server, path)
        assert SECRET not in body, path
        assert status in (400, 404, 405), (path, status, body[:200])
        assert json.loads(body)["status"] == status


def test_symlinks_out_of_the_root(server: LiveServer, served: dict[str, Path]) -> None:
    root = served["root"]
    store = copy_store(served["demo"], root / "linked")
    shard = store / "ids/c/0/0/0"
    shard.unlink()
    shard.symlink_to(served["secret"])  # a committed key now points outside the root
    (store / "ids/c/evil").symlink_to(served["secret"])  # an uncommitted key, too
    outside = served["base"] / "outside-store"
    copy_store(served["demo"], outside)
    (root / "escaped").symlink_to(outside, target_is_directory=True)  # a store dir outside
    try:
        base = f"{server.url}/v1/stores"
        r = requests.get(f"{base}/linked/zarr/ids/c/0/0/0", timeout=10)
        assert r.status_code == 409 and SECRET not in r.content
        assert "outside the store" in r.json()["detail"]
        r = requests.get(f"{base}/linked/zarr/ids/c/evil", timeout=10)  # the store is damaged:
        assert r.status_code == 409 and SECRET not in r.content  # all of its data is refused
        r = requests.get(f"{base}/linked/blocks/0?start=0&stop=10", timeout=10)
        assert r.status_code == 409 and SECRET not in r.content
        assert requests.get(f"{base}/escaped/zarr/zarr.json", timeout=10).status_code == 404
        names = [s["name"] for s in requests.get(base, timeout=10).json()["stores"]]
        assert "escaped" not in names and "linked" in names
    finally:
        os.unlink(root / "escaped")


def test_token_required(token_server: tuple[LiveServer, str], served: dict[str, Path]) -> None:
    live, token = token_server
    url = f"{live.url}/v1/stores/demo"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        for path in ("", "/zarr/zarr.json", "/blocks/0?start=0&stop=4"):
            r = requests.get(url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (headers, path)
            assert r.json()["error"] == "unauthorized" and token not in r.text
            assert r.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{live.url}/v1/stores", timeout=10).status_code == 401
    ok = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["complete"]
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert requests.get(live.url + open_path, timeout=10).status_code == 200
    with pytest.raises(StoreClientError) as err:
        StoreClient(url, retries=1)
    assert err.value.status == 401
    client = StoreClient(url, token=token)
    local = StoreClient(served["demo"])
    np.testing.assert_array_equal(client.read_block(1, 3, 99).ids, local.read_block(1, 3, 99).ids)
    remote = zarr.open_group(
        f"{url}/zarr/",
        mode="r",
        storage_options={"client_kwargs": {"headers": {"Authorization": f"Bearer {token}"}}},
    )
    np.testing.assert_array_equal(remote["values"][:], zarr.open_group(served["demo"])["values"][:])


def _damaged(served: dict[str, Path], name: str, key: str, how: str) -> Path:
    store = copy_store(served["demo"], served["root"] / name)
    f = store / key
    data = bytearray(f.read_bytes())
    if how == "truncate":
        f.write_bytes(bytes(data[:-10]))
    else:
        data[len(data) // 3] ^= 0x10
        f.write_bytes(bytes(data))
    return store


@pytest.mark.parametrize(("how", "phrase"), [("truncate", "manifest says"), ("flip", "checksum")])
def test_damaged_shard_clear_error_never_wrong_data(
    server: LiveServer, served: dict[str, Path], how: str, phrase: str
) -> None:
    key = "values/c/1/1/0"  # slot 2, samples [256, 512)
    _damaged(served, f"damaged-{how}", key, how)
    base = f"{server.url}/v1/stores/damaged-{how}"
    r = requests.get(f"{base}/zarr/{key}", timeout=10)
    assert r.status_code == 409
    body = r.json()
    assert body["error"] == "store_damaged" and key in body["detail"] and phrase in body["detail"]
    assert "regenerate" in body["detail"].lower()
    assert requests.head(f"{base}/zarr/{key}", timeout=10).status_code == 409
    r = requests.get(f"{base}/blocks/2?start=250&stop=300", timeout=10)
    assert r.status_code == 409 and key in r.json()["detail"]
    with pytest.raises(StoreError, match="damaged"):
        StoreClient(base, retries=1).read_block(2, 300, 310)
    # One damaged file: the whole store is listed as damaged (naming the file) and refuses its
    # data, never mixing good and bad shards; the other stores serve as before.
    listed = requests.get(f"{base}", timeout=10).json()
    assert listed["state"] == "invalid" and key in listed["error"]
    r = requests.get(f"{base}/blocks/0?start=250&stop=300", timeout=10)
    assert r.status_code == 409 and r.json()["error"] == "store_damaged"
    demo = zarr.open_group(f"{server.url}/v1/stores/demo/zarr/", mode="r")
    np.testing.assert_array_equal(
        demo["values"][2, :], zarr.open_group(served["demo"])["values"][2, :]
    )
    shutil.copyfile(served["demo"] / key, served["root"] / f"damaged-{how}" / key)  # restored
    remote = zarr.open_group(f"{base}/zarr/", mode="r")
    np.testing.assert_array_equal(
        remote["values"][2, :], zarr.open_group(served["demo"])["values"][2, :]
    )


def test_swapped_shard_with_matching_crc32c_is_refused(
    server: LiveServer, served: dict[str, Path]
) -> None:
    """A shard replaced by another of the same segment layout keeps size and whole-file crc32c
    (zarr shards are chains of crc32c-suffixed segments); the manifest's sha256 catches it."""
    import json

    store = copy_store(served["demo"], served["root"] / "swapped")
    files = json.loads((store / "_distill" / "manifest.json").read_text())["files"]
    pair = next(
        (a, b)
        for a in sorted(files)
        for b in sorted(files)
        if a < b
        and files[a]["size"] == files[b]["size"] > 0
        and files[a]["crc32c"] == files[b]["crc32c"]
        and files[a]["sha256"] != files[b]["sha256"]
    )
    (store / pair[0]).write_bytes((store / pair[1]).read_bytes())
    r = requests.get(f"{server.url}/v1/stores/swapped/zarr/{pair[0]}", timeout=10)
    assert r.status_code == 409
    assert pair[0] in r.json()["detail"] and "sha256" in r.json()["detail"]


REPO = Path(__file__).resolve().parents[2]


def _leaks(body: bytes, served: dict[str, Path], token: str | None = None) -> list[str]:
    """What a response body must never carry: a traceback, a filesystem path outside the
    served root (the test folder above it, the code's own folder, site-packages), the token."""
    bad = [b"Traceback", b'File "', b"site-packages", str(REPO).encode()]
    bad.append(str(served["base"]).encode())  # every path outside the root starts above it
    if token:
        bad.append(token.encode())
    return [b.decode() for b in bad if b in body]


def _hostile_paths() -> list[str]:
    """Store names and keys with unicode, encoded separators, CR/LF and 10k-character lengths."""
    long_ascii, long_unicode = "a" * 10_000, "é" * 10_000
    names = [
        "d%C3%ABmo", "%E6%97%A5%E6%9C%AC", "demo%E2%80%AE", "demo%2Fzarr", "demo%5Czarr",
        "demo%00", "%2E", "demo%0D%0AX-Injected:%201", "", "demo/", "demo%0AX-Injected:%201",
        "demo%3Bx=1",
        "demo%20", "-demo", ".demo", long_ascii, quote(long_unicode[:3000]),
    ]  # fmt: skip
    keys = [
        "zarr.json%00", "ids%5Czarr.json", "", "ids/", "%C3%A9/zarr.json",
        "ids/c/0/0/0%0D%0AX-Injected:%201", "ids/c/%E2%80%AE0/0/0", long_ascii,
        quote(long_unicode[:3000]), "ids/" + "c/" * 3000 + "0",
    ]  # fmt: skip
    out = []
    for name in names:
        out += [f"/v1/stores/{name}", f"/v1/stores/{name}/zarr/zarr.json",
                f"/v1/stores/{name}/blocks/0?start=0&stop=1"]  # fmt: skip
    out += [f"/v1/stores/demo/zarr/{key}" for key in keys]
    out += [f"/v1/stores/demo/blocks/{v}?start=0&stop=1" for v in ("%C3%A9", long_ascii, "-1")]
    out += [f"/v1/stores/demo/blocks/0?start={long_ascii}&stop=1", f"/{long_ascii}"]
    return out


def _raw(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


@pytest.mark.reliability
def test_hostile_names_and_keys(
    token_server: tuple[LiveServer, str], served: dict[str, Path]
) -> None:
    """Unicode, encoded separators, CR/LF (header injection) and 10k-character store names and
    keys: a 4xx, JSON when the app answers, no injected header, nothing leaked."""
    live, token = token_server
    paths = _hostile_paths()
    failures = []
    for path in paths:
        spoofed = {"Authorization": f"Bearer {token}", "Host": "evil.example"}
        status, headers, body = _raw(live, "GET", path, spoofed)
        names = {k.lower() for k, _ in headers}
        why = _leaks(body, served, token)
        if any("evil.example" in v for _, v in headers) or b"evil.example" in body:
            why.append("the Host header is reflected")
        if not 400 <= status < 500:
            why.append(f"status {status}")
        if "x-injected" in names or any("\r" in v or "\n" in v for _, v in headers):
            why.append("header injected")
        if dict((k.lower(), v) for k, v in headers).get("content-type") == "application/json":
            if json.loads(body)["status"] != status:
                why.append("JSON body disagrees with the status")
        elif status != 400:  # only uvicorn's own 400 for a malformed request head is not JSON
            why.append(f"non-JSON {status}")
        if why:
            failures.append((path[:80], why))
    record("security: hostile store names and keys", inputs_tried=len(paths),
           data_lost=len(failures))  # fmt: skip
    assert not failures


def test_encoded_slash_in_a_key_is_the_same_key(server: LiveServer) -> None:
    """uvicorn decodes %2F in the path: ``ids%2Fzarr.json`` is the key ``ids/zarr.json`` (the
    same bytes), never another file."""
    _, _, body = _raw(server, "GET", "/v1/stores/demo/zarr/ids%2Fzarr.json", {})
    assert (
        body == requests.get(f"{server.url}/v1/stores/demo/zarr/ids/zarr.json", timeout=10).content
    )


@pytest.mark.reliability
def test_options_and_trace_refused(
    token_server: tuple[LiveServer, str], served: dict[str, Path]
) -> None:
    """OPTIONS and TRACE are refused everywhere (405 JSON, or 404 where nothing is); TRACE never
    echoes the request (its headers, the token)."""
    live, token = token_server
    paths = ["/", "/v1/stores", "/v1/stores/demo", "/v1/stores/demo/zarr/zarr.json",
             "/v1/stores/demo/blocks/0?start=0&stop=1", "/healthz", "/readyz", "/metrics",
             "/docs", "/openapi.json", "/static/swagger-ui/swagger-ui.css", "/ui/static/x",
             "/nowhere", "*"]  # fmt: skip
    probe = {"Authorization": f"Bearer {token}", "X-Probe": "probe-3c1f"}
    tried = 0
    for method in ("OPTIONS", "TRACE"):
        for path in paths:
            status, _, body = _raw(live, method, path, probe)
            tried += 1
            assert status in (400, 404, 405), (method, path, status)
            assert b"probe-3c1f" not in body and not _leaks(body, served, token), (method, path)
            assert json.loads(body)["status"] == status, (method, path, body[:200])
    record("security: OPTIONS and TRACE refused", inputs_tried=tried)


@pytest.mark.reliability
def test_token_compared_in_constant_time(
    token_server: tuple[LiveServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every token check goes through hmac.compare_digest (constant time in the length of the
    configured token), given the whole presented token, whatever its length or prefix."""
    import hmac

    live, token = token_server
    real, calls = hmac.compare_digest, []

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tries = ["", "x", token[:-1], token + "x", token[:5] + "?" * (len(token) - 5), "é" * 40, token]
    for given in tries:
        r = requests.get(
            f"{live.url}/v1/stores", headers={"Authorization": f"Bearer {given}"}, timeout=10
        )
        assert r.status_code == (200 if given == token else 401), given
    presented = [a for a, _ in calls]
    assert {b for _, b in calls} == {token.encode()}
    assert [t.encode() for t in tries if t] == [p for p in presented if p], presented
    record("security: token compared in constant time", inputs_tried=len(tries))
