"""The store identity over HTTP: metadata, every block's header and response header, ETags."""

from __future__ import annotations

from pathlib import Path

import requests

from teacher_store.store.blockfmt import IDENTITY_HEADER, decode_block_with_header, store_identity
from tests.store_fixtures import LiveServer


def test_identity_in_metadata_blocks_and_etags(served: dict[str, Path], server: LiveServer) -> None:
    want = store_identity((served["demo"] / "_distill" / "manifest.json").read_bytes())
    base = f"{server.url}/v1/stores/demo"
    assert requests.get(base, timeout=10).json()["identity"] == want
    assert requests.get(f"{server.url}/v1/stores/partial", timeout=10).json()["identity"] is None
    r = requests.get(f"{base}/blocks/1", params={"start": 3, "stop": 9}, timeout=10)
    assert r.status_code == 200 and r.headers[IDENTITY_HEADER] == want
    header, block = decode_block_with_header(bytearray(r.content))
    assert header.identity == want and block.ids.shape[0] == 6
    for key in ("zarr.json", "ids/zarr.json", "_distill/manifest.json"):
        z = requests.get(f"{base}/zarr/{key}", timeout=10)
        assert z.status_code == 200 and z.headers["ETag"].startswith(f'"{want}-'), key
        assert z.headers[IDENTITY_HEADER] == want
        again = requests.get(
            f"{base}/zarr/{key}", headers={"If-None-Match": z.headers["ETag"]}, timeout=10
        )
        assert again.status_code == 304 and again.headers[IDENTITY_HEADER] == want
        # the same bytes under a tag without this store's identity do not revalidate
        bare = '"' + z.headers["ETag"].split("-", 1)[1]
        assert (
            requests.get(
                f"{base}/zarr/{key}", headers={"If-None-Match": bare}, timeout=10
            ).status_code
            == 200
        )
