"""The web dashboard in a real browser: Playwright driving Debian's Chromium (no browser
download) against a live uvicorn on 127.0.0.1 serving a real store of the demo photos.

Every page is checked for console errors and for failed or refused requests; a screenshot of
each page is saved under the test's temporary folder. The documentation's pictures come from
the demo's own store instead: ``make pictures`` (bench/pictures.py).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from teacher_store.show import show_view
from teacher_store.store.arrays import LocalStore
from tests.store_fixtures import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-background-networking"]
ARGS += ["--disable-component-update"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():  # `make setup` installs it (apt-get, as root)
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` as root, or apt-get install chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    """A fresh tab; at the end: no console error, no failed request, no 4xx/5xx answer."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else 0)
    tab.on("pageerror", lambda e: problems.append(f"page error {e}"))
    tab.on("requestfailed", lambda r: problems.append(f"failed {r.url}: {r.failure}"))
    tab.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else 0)
    tab.set_default_timeout(60_000)
    yield tab
    context.close()
    assert not problems, problems


def _shot(tab: Any, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.png"
    tab.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 1000
    return out


# The pixels the browser decoded from the <img>, read back through a canvas: [H, W, 3] uint8.
_READ_PIXELS = """img => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = "";
  for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
  return [c.height, c.width, btoa(s)];
}"""


def _decoded_pixels(tab: Any, selector: str) -> np.ndarray:
    h, w, b64 = tab.eval_on_selector(selector, _READ_PIXELS)
    rgba = np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)
    assert (rgba[..., 3] == 255).all()
    return rgba[..., :3]


_ROW_STATE = """name => {
  const row = document.querySelector(`tr[data-store="${name}"]`);
  const bar = row && row.querySelector("progress");
  return [row ? row.dataset.state : null, bar ? Number(bar.value) : 0, bar ? Number(bar.max) : 0];
}"""


def _cells(tab: Any, store: str) -> list[str]:
    return [t.strip() for t in tab.locator(f'tr[data-store="{store}"] td').all_inner_texts()]


def test_stores_page_lists_the_demo_store(
    page: Any, photo_server: LiveServer, photo_root: Path, tmp_path: Path
) -> None:
    page.goto(photo_server.url + "/")
    page.wait_for_selector('tr[data-store="demo"]')
    store = LocalStore(photo_root / "demo")
    a = store.attrs
    files = store.manifest["files"].items()  # target arrays' files; not _distill bookkeeping
    data_bytes = sum(rec["size"] for key, rec in files if not key.startswith("_distill/"))
    want = [
        "demo",
        "efficientnet_lite0",
        str(a.topk),
        str(a.views),
        str(a.num_samples),
        a.value_encoding,
        f"{data_bytes / (a.views * a.num_samples):.1f}",
        str(4 + 4 * a.topk),
    ]
    cells = _cells(page, "demo")
    assert cells[:8] == want and cells[8].startswith("complete")
    _shot(page, tmp_path, "stores")
    page.click('tr[data-store="demo"] a >> text=demo')
    page.wait_for_selector("svg.chart")
    arrays = page.locator("table.arrays td").all_inner_texts()
    assert sum(int(t) for t in arrays[1::3]) == data_bytes
    assert page.locator("table.schedule th").first.inner_text() == "slots 0–1"
    bars = page.locator("svg.chart").first.locator("rect").count()
    assert 1 <= bars <= 20
    _shot(page, tmp_path, "store")


def test_view_browser_shows_show_s_pixels_and_top5(
    page: Any, photo_server: LiveServer, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    with page.expect_response(lambda r: r.url.endswith("/views/1/3.png")):
        page.goto(photo_server.url + "/ui/stores/demo/views?slot=1&sample=3")
    page.wait_for_selector("#view-image[src]")
    pixels = _decoded_pixels(page, "#view-image")
    natural = page.eval_on_selector("#view-image", "i => [i.naturalHeight, i.naturalWidth]")
    assert natural == list(pixels.shape[:2])
    top = show_view(str(photo_root / "demo"), str(demo_data), 3, 1, str(tmp_path / "s.png"))
    with Image.open(tmp_path / "s.png") as im:
        shown = np.asarray(im.convert("RGB"))
    assert np.array_equal(pixels, shown[: pixels.shape[0], : pixels.shape[1]])
    assert page.locator(".top5 .label").all_inner_texts() == [name for name, _ in top]
    assert page.locator(".mix").inner_text()  # "mixed with sample N (...)" or "not mixed"
    _shot(page, tmp_path, "view")
    with page.expect_response(lambda r: r.url.endswith(".png") and r.status == 200):
        page.click("#random-view")
    page.wait_for_selector("#view-image[src]")
    assert "slot=" in page.url and "sample=" in page.url


def test_progress_bar_advances_while_a_store_is_generated(
    page: Any, photo_server: LiveServer, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    out = photo_root / "growing"
    cmd = [sys.executable, "-m", "teacher_store.cli", "generate", "--data", str(demo_data)]
    cmd += ["--out", str(out), "--views", "4", "--topk", "5", "--img-size", "64"]
    cmd += ["--batch-size", "2", "--workers", "0", "--shard-samples", "2"]
    cmd += ["--chunk-samples", "2", "--shard-views", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        page.goto(photo_server.url + "/?refresh_ms=200")
        seen: list[int] = []
        state, totals = None, set()
        deadline = time.monotonic() + 240
        while state != "complete" and time.monotonic() < deadline:
            state, value, total = page.evaluate(_ROW_STATE, "growing")  # one atomic read
            if state == "incomplete":
                totals.add(total)
            if state == "incomplete" and (not seen or seen[-1] != value):
                seen.append(value)
                if len(seen) == 2:
                    _shot(page, tmp_path, "progress")
            time.sleep(0.05)
        assert job.wait(timeout=120) == 0, job.stdout.read() if job.stdout else ""
    finally:
        job.kill()
        job.wait()
    assert state == "complete", (state, seen)
    assert totals == {36} and seen == sorted(seen) and len(seen) >= 2, (totals, seen)
    assert any(0 < v < 36 for v in seen), seen  # 9 shards x 4 slots: seen part-way
    page.wait_for_selector('tr[data-store="growing"] .state.complete')


def test_a_token_is_asked_for_once_and_sent_as_a_bearer_header(
    page: Any, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    from api.main import create_app
    from api.settings import Settings

    token = "dash-board-token-7c1e"
    (tmp_path / "token").write_text(token)
    settings = Settings(root=photo_root, token_file=tmp_path / "token", data=f"demo={demo_data}")
    with LiveServer(create_app(settings)) as live:
        refused = requests.get(f"{live.url}/ui/fragments/stores", timeout=30)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        page.goto(live.url + "/")
        page.wait_for_selector("#token-form:not([hidden])")
        assert page.locator("table.stores").count() == 0
        assert "demo" not in page.locator("main").inner_text()
        _shot(page, tmp_path, "token")
        page.fill("#token-input", token)
        page.click("#token-form button")
        page.wait_for_selector('tr[data-store="demo"]')
        page.goto(live.url + "/ui/stores/demo/views?slot=0&sample=5")  # asked once: kept
        page.wait_for_selector("#view-image[src]")
        assert page.locator("#token-form").is_hidden()


def test_view_page_shows_each_teachers_top5_on_the_same_views(
    page: Any, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    """Two served stores of one view identity (B made with `generate --like A` by a
    random-weight resnet10t): A's view page shows B's top-5 beside A's, and links to B's."""
    import shutil

    import timm
    import torch

    from api.main import create_app
    from api.settings import Settings
    from teacher_store.generate import GenerateConfig, run_generate
    from tests.store_fixtures import SMALL_GENERATE

    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(photo_root / "demo", root / "a")
    torch.manual_seed(0)
    ckpt = tmp_path / "resnet10t.pth"
    torch.save(timm.create_model("resnet10t", num_classes=1000).state_dict(), ckpt)
    kw = {k: v for k, v in SMALL_GENERATE.items() if k not in ("views", "img_size")}
    run_generate(
        GenerateConfig(
            data=str(demo_data), out=str(root / "b"), like=str(root / "a"), teacher="resnet10t",
            checkpoint=str(ckpt), value_encoding="logprob-f16", **kw,
        )  # float16 log-probs: a random network's small probabilities stay non-zero
    )  # fmt: skip
    with LiveServer(create_app(Settings(root=root, data=f"a={demo_data}"))) as live:
        with page.expect_response(lambda r: r.url.endswith("/views/1/3.png")):
            page.goto(live.url + "/ui/stores/a/views?slot=1&sample=3")
        page.wait_for_selector('.teacher.peer[data-store="b"]')
        page.wait_for_function("document.querySelector('#view-image').complete")
        want = show_view(str(root / "b"), str(demo_data), 3, 1, str(tmp_path / "b.png"))
        got = page.locator('.teacher.peer[data-store="b"] .peer-top5 .label').all_inner_texts()
        assert got == [name for name, _ in want] and len(got) == 5
        mine = show_view(str(root / "a"), str(demo_data), 3, 1, str(tmp_path / "a.png"))
        assert page.locator(".top5 .label").all_inner_texts() == [name for name, _ in mine]
        assert "resnet10t" in page.locator(".teacher.peer h2").inner_text()
        _shot(page, tmp_path, "view-peers")
        page.click('.teacher.peer[data-store="b"] h2 a')
        page.wait_for_selector(".teacher.peer[data-store='a']")  # B's page shows A's in turn
        assert "/ui/stores/b/views?slot=1&sample=3" in page.url
        page.goto(live.url + "/ui/stores/b")
        page.wait_for_selector("td.view-identity")
        assert "the views of a store of teacher efficientnet_lite0" in page.inner_text(
            "td.view-identity"
        )
