"""``distill serve --data NAME=...`` takes every image source: view PNGs drawn from tar shards
(local or on S3) or from an ImageFolder on S3 are the pixels drawn from the local folder, and a
replaced image inside a shard is a 409 naming its shard and key, never a picture."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from teacher_store.images.pack import pack_images
from tests.s3_fixtures import S3Server
from tests.store_fixtures import LiveServer, replace_same_size

SHARD_BYTES = 2_000_000  # the 17 demo photos make 3 shards
VIEWS = ((0, 0), (1, 3), (1, 9), (0, 16))  # (slot, sample), mixed views among them


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def _views(photo_root: Path, data: str) -> list[np.ndarray]:
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(root=photo_root, data=f"demo={data}", rescan_interval_s=0.0)
    with LiveServer(create_app(settings)) as live:
        got = []
        for slot, sample in VIEWS:
            r = requests.get(f"{live.url}/v1/stores/demo/views/{slot}/{sample}.png", timeout=60)
            assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300]
            got.append(_pixels(r.content))
    return got


@pytest.fixture(scope="module")
def sources(s3_server: S3Server, demo_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The demo photos as local shards, shards on S3 and an ImageFolder on S3."""
    local = pack_images(str(demo_data), str(tmp_path_factory.mktemp("shards")), SHARD_BYTES)
    on_s3 = pack_images(str(demo_data), s3_server.url("view-shards"), SHARD_BYTES)
    url = s3_server.url("view-photos")
    fs, root = s3_server.fs(), url.removeprefix("s3://")
    for path in sorted(demo_data.rglob("*")):
        if path.is_file():
            fs.pipe_file(f"{root}/{path.relative_to(demo_data).as_posix()}", path.read_bytes())
    return {"local shards": local.pattern, "S3 shards": on_s3.pattern, "S3 folder": url + "/"}


@pytest.mark.parametrize("kind", ["local shards", "S3 shards", "S3 folder"])
def test_views_from_any_source_are_the_folders_views(
    kind: str, sources: dict[str, str], photo_root: Path, demo_data: Path
) -> None:
    want = _views(photo_root, str(demo_data))
    got = _views(photo_root, sources[kind])
    assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_a_replaced_image_in_a_shard_is_409_naming_its_key(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    import shutil

    from api.main import create_app
    from api.settings import Settings
    from teacher_store.images.dataset import ImageFolder

    other = Path(shutil.copytree(demo_data, tmp_path / "other"))
    key = ImageFolder.scan(other).paths[3]
    replace_same_size(other / key)  # then packed: the shards' own index agrees with them
    pattern = pack_images(str(other), str(tmp_path / "shards"), SHARD_BYTES).pattern
    settings = Settings(root=photo_root, data=f"demo={pattern}", rescan_interval_s=0.0)
    with LiveServer(create_app(settings)) as live:
        r = requests.get(f"{live.url}/v1/stores/demo/views/0/3.png", timeout=60)
        body = r.json()
        assert r.status_code == 409 and body["error"] in ("image_changed", "dataset_mismatch")
        assert key in body["detail"] and len(body["detail"].splitlines()) == 1
        assert r.headers["content-type"] == "application/json"
