"""`distill serve --root s3://...`: the service over stores on a real S3 server (moto, 127.0.0.1).

Stock zarr-python and the block client read through it exactly what the local stores hold; an
object whose bytes changed on S3 is a 409 naming it, never wrong data.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import zarr

from teacher_store.client import StoreClient
from tests.s3_fixtures import S3Server, local_objects

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _upload(s3: S3Server, served: dict[str, Path]) -> str:
    """demo, v2 and partial under one S3 prefix, a demo copy with one byte flipped, and a
    folder that is no store."""
    url = s3.url("served")
    fs, root = s3.fs(), url.removeprefix("s3://")
    for name in ("demo", "v2", "partial"):
        for key, data in local_objects(served["root"] / name).items():
            fs.pipe_file(f"{root}/{name}/{key}", data)
    for key, data in local_objects(served["demo"]).items():
        if key == "values/c/0/1/0":
            data = data[:40] + bytes([data[40] ^ 1]) + data[41:]
        fs.pipe_file(f"{root}/flipped/{key}", data)
    fs.pipe_file(f"{root}/not-a-store/zarr.json", b'{"attributes": {}}')
    # A store under a name the API cannot address: listed as skipped, with the reason.
    fs.pipe_file(f"{root}/_hidden/zarr.json", (served["demo"] / "zarr.json").read_bytes())
    return url


@pytest.fixture(scope="module")
def s3_service(s3_server: S3Server, served: dict[str, Path]) -> Iterator[str]:
    """`distill serve --root s3://BUCKET/served-N` as a subprocess; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root",
           _upload(s3_server, served), "--port", str(port), "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()


def test_serve_s3_root_lists_its_stores(s3_service: str) -> None:
    listing = requests.get(f"{s3_service}/v1/stores", timeout=10).json()
    states = {s["name"]: s["state"] for s in listing["stores"]}
    assert states == {
        "demo": "complete",
        "v2": "complete",
        "flipped": "complete",
        "partial": "incomplete",
    }
    partial = requests.get(f"{s3_service}/v1/stores/partial", timeout=10).json()
    assert partial["progress"]["committed_units"] == 3
    (skipped,) = listing["skipped"]
    assert skipped["name"] == "_hidden" and "starts with '_'" in skipped["reason"]


@pytest.mark.parametrize("name", ["demo", "v2"])
def test_stock_zarr_reads_an_s3_store_through_the_service(
    s3_service: str, served: dict[str, Path], name: str
) -> None:
    remote = zarr.open_group(f"{s3_service}/v1/stores/{name}/zarr/", mode="r")
    local = zarr.open_group(served["root"] / name, mode="r")
    assert dict(remote.attrs) == dict(local.attrs)
    for key in ("ids", "values", "valid"):
        np.testing.assert_array_equal(remote[key][:], local[key][:])
        np.testing.assert_array_equal(remote[key][1, 37:301], local[key][1, 37:301])
    r = requests.get(
        f"{s3_service}/v1/stores/{name}/zarr/ids/c/0/0/0", headers={"Range": "bytes=-16"}
    )
    want = (served["root"] / name / "ids/c/0/0/0").read_bytes()
    assert r.status_code == 206 and r.content == want[-16:]


def test_blocks_of_an_s3_store_match_the_local_store(
    s3_service: str, served: dict[str, Path]
) -> None:
    with StoreClient(f"{s3_service}/v1/stores/demo") as client, StoreClient(served["demo"]) as ref:
        for slot in range(3):
            got, want = client.read_block(slot, 100, 700), ref.read_block(slot, 100, 700)
            for field in ("ids", "values", "valid"):
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_a_changed_object_on_s3_is_a_409_naming_it(s3_service: str) -> None:
    r = requests.get(f"{s3_service}/v1/stores/flipped/zarr/values/c/0/1/0", timeout=10)
    assert r.status_code == 409 and r.headers["content-type"] == "application/json"
    assert "values/c/0/1/0" in r.json()["detail"] and "crc32c" in r.json()["detail"]
    blocks = requests.get(
        f"{s3_service}/v1/stores/flipped/blocks/0", params={"start": 300, "stop": 400}, timeout=10
    )
    assert blocks.status_code == 409 and "values/c/0/1/0" in blocks.json()["detail"]


def test_serve_refuses_a_missing_bucket_in_one_line(s3_server: S3Server) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "teacher_store.cli", "serve", "--root", "s3://no-such-bucket/x"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "bucket 'no-such-bucket' does not exist" in r.stderr
