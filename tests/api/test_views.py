"""``GET /v1/stores/{name}/views/{slot}/{sample}.png`` and the view browser's fragment, over
HTTP on a real store of the demo photos (real Lite0 teacher) and a live uvicorn."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from teacher_store.show import show_view
from teacher_store.store.arrays import LocalStore
from teacher_store.views.codec import decode
from teacher_store.views.recipe import Recipe
from tests.store_fixtures import LiveServer, replace_same_size


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def test_view_png_is_show_s_render_with_an_etag(
    photo_server: LiveServer, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    url = f"{photo_server.url}/v1/stores/demo/views/1/3.png"
    r = requests.get(url, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = _pixels(r.content)
    show_view(str(photo_root / "demo"), str(demo_data), 3, 1, str(tmp_path / "show.png"))
    shown = _pixels((tmp_path / "show.png").read_bytes())
    assert got.shape[0] >= 224 and np.array_equal(got, shown[: got.shape[0], : got.shape[1]])
    etag = r.headers["etag"]
    again = requests.get(url, headers={"if-none-match": etag}, timeout=60)
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    other = requests.get(f"{photo_server.url}/v1/stores/demo/views/0/3.png", timeout=60)
    assert other.headers["etag"] != etag
    small = requests.get(url, params={"size": 32}, timeout=60)
    assert small.status_code == 200 and _pixels(small.content).shape[:2] == (224, 224)


def test_view_png_bad_input_is_json_4xx(photo_server: LiveServer) -> None:
    base = f"{photo_server.url}/v1/stores"
    cases = {
        # A view the store does not have is a missing resource: 404, as the schema says.
        f"{base}/demo/views/2/0.png": (404, "slots are 0..1"),
        f"{base}/demo/views/0/17.png": (404, "samples are 0..16"),
        f"{base}/demo/views/0/x.png": (400, "sample"),
        f"{base}/demo/views/-1/0.png": (400, "slot"),
        f"{base}/demo/views/0/0.png?size=4096": (400, "size"),
        f"{base}/nope/views/0/0.png": (404, "no store named 'nope'"),
    }
    for url, (status, words) in cases.items():
        r = requests.get(url, timeout=30)
        assert r.status_code == status, (url, r.text)
        body = r.json()
        assert body["status"] == status and words in body["detail"], (url, body)


def test_without_a_dataset_the_service_says_how_to_enable_it(
    photo_root: Path, tmp_path: Path
) -> None:
    from api.main import create_app
    from api.settings import Settings

    with LiveServer(create_app(Settings(root=photo_root))) as live:
        r = requests.get(f"{live.url}/v1/stores/demo/views/0/0.png", timeout=30)
        assert r.status_code == 409 and r.json()["error"] == "dataset_not_configured"
        assert "distill serve --data demo=DIR" in r.json()["detail"]
        page = requests.get(f"{live.url}/ui/fragments/stores/demo/view?slot=0&sample=2", timeout=30)
        assert page.status_code == 200
        assert "distill serve --data demo=DIR" in page.text and "<img" not in page.text
        # The top-5 needs no images; entries with a zero stored probability are left out.
        block = LocalStore(photo_root / "demo").read_block(0, 2, 3)
        nonzero = int(np.isfinite(block.logprobs()[0][:5]).sum())
        # This store's own list (other served stores of the same views list theirs after it).
        own = page.text.split('<ol class="top5">', 1)[1].split("</ol>", 1)[0]
        assert own.count('class="label"') == nonzero >= 1


def test_a_dataset_with_another_fingerprint_is_refused(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    from api.main import create_app
    from api.settings import Settings

    other = tmp_path / "other"
    shutil.copytree(demo_data, other)
    next(p for p in sorted(other.rglob("*")) if p.is_file()).unlink()
    with LiveServer(create_app(Settings(root=photo_root, data=f"demo={other}"))) as live:
        r = requests.get(f"{live.url}/v1/stores/demo/views/0/0.png", timeout=60)
        assert r.status_code == 409 and r.json()["error"] == "dataset_mismatch"
        assert "does not match the store" in r.json()["detail"]
        page = requests.get(f"{live.url}/ui/fragments/stores/demo/view", timeout=60)
        assert "does not match the store" in page.text and "<img" not in page.text


def test_an_image_replaced_by_one_of_the_same_size_is_409_never_rendered(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    """The fingerprint (names, sizes) matches; the image's content digest does not."""
    from api.main import create_app
    from api.settings import Settings
    from teacher_store.images.dataset import ImageFolder

    other = Path(shutil.copytree(demo_data, tmp_path / "other"))
    path = other / ImageFolder.scan(other).paths[3]
    replace_same_size(path)
    with LiveServer(create_app(Settings(root=photo_root, data=f"demo={other}"))) as live:
        for size in ("", "?size=32"):
            r = requests.get(f"{live.url}/v1/stores/demo/views/0/3.png{size}", timeout=60)
            assert r.status_code == 409 and r.headers["content-type"] == "application/json"
            body = r.json()
            assert body["error"] == "image_changed" and body["status"] == 409
            assert (
                f"image {path} (sample 3) is not the image the store was built from"
                in (body["detail"])
            )
            assert len(body["detail"].splitlines()) == 1
        # The view browser's page says why, in place of the picture.
        page = requests.get(f"{live.url}/ui/fragments/stores/demo/view?slot=0&sample=3", timeout=60)
        assert page.status_code == 200 and "<img" not in page.text
        assert "(sample 3) is not the image the store was built from" in page.text
        # Views that do not touch sample 3 (neither theirs nor their mixing partner) render.
        a = LocalStore(photo_root / "demo").attrs
        recipe = Recipe.from_dict(a.recipe)
        for slot in range(a.views):
            for s in range(a.num_samples):
                mix = decode(a.store_seed, slot, s, a.num_samples, recipe, a.views).mix
                touches = 3 in (s, mix.partner if mix else None)
                r = requests.get(f"{live.url}/v1/stores/demo/views/{slot}/{s}.png", timeout=60)
                assert r.status_code == (409 if touches else 200), (slot, s, r.text[:200])
        fragment = f"{live.url}/ui/fragments/stores/demo/view?slot={slot}&sample={s}"
        assert ("<img" in requests.get(fragment, timeout=60).text) is not touches


def test_data_setting_is_name_equals_dir() -> None:
    import pytest

    from api.settings import parse_data

    assert parse_data("demo=/a, other=/b/c") == {"demo": "/a", "other": "/b/c"}
    assert parse_data("") == {}
    for bad in ("demo", "=/a", "demo="):
        with pytest.raises(ValueError, match="write NAME=DIR"):
            parse_data(bad)


def test_pages_of_unusual_stores(server: LiveServer) -> None:
    """Fake-teacher stores (no class names, 70,000 classes, prob-u8) and an unfinished one."""
    listing = requests.get(f"{server.url}/ui/fragments/stores", timeout=30)
    assert listing.status_code == 200
    for name in ("demo", "wide", "partial"):
        assert f'data-store="{name}"' in listing.text
    assert 'data-state="incomplete"' in listing.text and "<progress" in listing.text
    wide = requests.get(f"{server.url}/ui/fragments/stores/wide", timeout=60)
    assert wide.status_code == 200 and "class " in wide.text and "<svg" in wide.text
    partial = requests.get(f"{server.url}/ui/fragments/stores/partial", timeout=30)
    assert partial.status_code == 200 and "units)" in partial.text and "<svg" not in partial.text
    view = requests.get(f"{server.url}/ui/fragments/stores/partial/view", timeout=30)
    assert view.status_code == 409 and view.json()["error"] == "store_incomplete"
    for path in ("/", "/ui/stores/wide", "/ui/stores/wide/views"):
        shell = requests.get(server.url + path, timeout=30)
        assert shell.status_code == 200 and 'data-token-required="false"' in shell.text
    bad = requests.get(f"{server.url}/ui/stores/..%2Fetc", timeout=30)
    assert bad.status_code in (400, 404) and bad.json()["status"] == bad.status_code


def test_stores_with_invalid_metadata_are_refused_by_pages_and_pngs(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    """Every edit of the metadata (bad types, empty objects, a 100000 px input size, attrs
    contradicting the arrays, consistent edits the digests catch): listed invalid naming the
    file, the store page says so (never a 500), the view page and the PNG answer 409."""
    from api.main import create_app
    from api.settings import Settings
    from tests.meta_edits import ATTR_EDITS, GENERATED_EDITS

    root = tmp_path / "root"
    edits = {**ATTR_EDITS, **GENERATED_EDITS}
    for name, (edit, _) in edits.items():
        edit(shutil.copytree(photo_root / "demo", root / name))
    data = ",".join(f"{name}={demo_data}" for name in edits)
    with LiveServer(create_app(Settings(root=root, data=data, rescan_interval_s=0.0))) as live:
        listed = requests.get(f"{live.url}/v1/stores", timeout=60).json()["stores"]
        states = {s["name"]: (s["state"], s["error"] or "") for s in listed}
        for name, (_, file) in edits.items():
            state, error = states[name]
            assert state == "invalid" and file in error and "\n" not in error, (name, error)
            page = requests.get(f"{live.url}/ui/fragments/stores/{name}", timeout=60)
            assert page.status_code == 200 and file in page.text, name
            for path in (f"/ui/fragments/stores/{name}/view", f"/v1/stores/{name}/views/0/0.png"):
                r = requests.get(live.url + path, timeout=60)
                assert r.status_code == 409 and file in r.json()["detail"], (name, path, r.text)
        assert requests.get(f"{live.url}/ui/fragments/stores", timeout=60).status_code == 200
