"""The documentation's pictures, made from the demo's default store (what `make demo` builds).

1. ``distill demo-data`` and ``distill generate`` exactly as the Makefile's demo runs them: the
   17 bundled photos, the real EfficientNet-Lite0 teacher, 8 views, top-10 (prob-u8), 160 px.
2. The service over that store (uvicorn on 127.0.0.1, with ``--data`` for the view pictures),
   driven by Playwright in Debian's Chromium (/usr/bin/chromium, no browser download):
   ``dashboard-stores.png`` (the stores list), ``dashboard-store.png`` (one store's page),
   ``dashboard-view.png`` (the view browser) and ``dashboard-token.png`` (a service with a token
   asks for it). Each page must load with no console error and no failed request.
3. ``distill show`` of sample 0 / view 0 and sample 9 / view 5, as the demo prints them:
   ``show-sample0-view0.png`` and ``show-sample9-view5.png``.

Screenshots are cut to at most 900 px wide; pages of text and charts get a 64-colour palette
(small files for the docs), the view browser keeps its photo's colours.

Usage: ``.venv/bin/python bench/pictures.py [--out docs/images] [--work .demo/pictures]``
(``make pictures``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update"]
# The Makefile's `distill generate` line for the demo store (keep the two in step).
DEMO_GENERATE = ["--views", "8", "--topk", "10", "--img-size", "160", "--batch-size", "16"]
DEMO_GENERATE += ["--workers", "1", "--overwrite", "--quiet"]
SHOW = ((0, 0), (9, 5))  # (sample, view) pairs, as `make demo` shows them
VIEW_PAGE = (6, 1)  # (slot, sample) of the view browser's picture: the coffee cup, little changed


def _distill(*args: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "teacher_store.cli", *args], env=env, check=True)


def demo_store(work: Path) -> tuple[Path, Path]:
    """(images, store): the demo's photos and its default store under ``work``."""
    images, store = work / "images", work / "stores" / "demo"
    _distill("demo-data", str(images))
    _distill("generate", "--data", str(images), "--out", str(store), *DEMO_GENERATE)
    return images, store


def shrink(src: Path, dst: Path, colours: int | None = 64) -> None:
    """At most 900 px wide and, unless ``colours`` is None, that many colours: what docs hold."""
    from PIL import Image

    with Image.open(src) as im:
        small = im.convert("RGB")
    if small.width > 900:
        small = small.resize((900, round(small.height * 900 / small.width)), Image.LANCZOS)
    if colours is not None:
        small = small.quantize(colours, method=Image.Quantize.MEDIANCUT)  # type: ignore[assignment]
    small.save(dst, optimize=True)


@contextmanager
def _tab(browser: Any) -> Iterator[Any]:
    """A fresh tab that fails on any console error, failed request or 4xx/5xx answer."""
    # A short viewport: full-page shots then end where the page's content ends.
    context = browser.new_context(viewport={"width": 1100, "height": 240})
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else 0)
    tab.on("pageerror", lambda e: problems.append(f"page error {e}"))
    tab.on("requestfailed", lambda r: problems.append(f"failed {r.url}: {r.failure}"))
    tab.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else 0)
    tab.set_default_timeout(60_000)
    try:
        yield tab
    finally:
        context.close()
    if problems:
        raise RuntimeError(f"the dashboard page had problems: {problems}")


def _shot(tab: Any, tmp: Path, out: Path, name: str, colours: int | None = 64) -> Path:
    raw = tmp / f"{name}.raw.png"
    tab.screenshot(path=str(raw), full_page=True)
    shrink(raw, out / f"{name}.png", colours)
    return out / f"{name}.png"


def dashboard_pictures(browser: Any, root: Path, images: Path, out: Path, tmp: Path) -> list[Path]:
    """The four dashboard screenshots from a live service over ``root``."""
    from api.main import create_app
    from api.settings import Settings
    from tests.store_fixtures import LiveServer

    made = []
    with LiveServer(create_app(Settings(root=root, data=f"demo={images}"))) as live:
        with _tab(browser) as tab:
            tab.goto(live.url + "/")
            tab.wait_for_selector('tr[data-store="demo"]')
            made.append(_shot(tab, tmp, out, "dashboard-stores"))
            tab.click('tr[data-store="demo"] a >> text=demo')
            tab.wait_for_selector("svg.chart")
            made.append(_shot(tab, tmp, out, "dashboard-store"))
        with _tab(browser) as tab:
            slot, sample = VIEW_PAGE
            tab.goto(f"{live.url}/ui/stores/demo/views?slot={slot}&sample={sample}")
            tab.wait_for_selector("#view-image[src]")
            tab.wait_for_function("document.querySelector('#view-image').complete")
            made.append(_shot(tab, tmp, out, "dashboard-view", colours=None))
    token = tmp / "token"
    token.write_text("a-token-for-the-picture\n")
    settings = Settings(root=root, data=f"demo={images}", token_file=token)
    with LiveServer(create_app(settings)) as live, _tab(browser) as tab:
        tab.goto(live.url + "/")
        tab.wait_for_selector("#token-form:not([hidden])")
        made.append(_shot(tab, tmp, out, "dashboard-token"))
    return made


def show_pictures(store: Path, images: Path, out: Path) -> list[Path]:
    """``distill show`` of the demo's two views (the command the demo prints)."""
    made = []
    for sample, view in SHOW:
        dst = out / f"show-sample{sample}-view{view}.png"
        _distill("show", str(store), "--data", str(images), "--sample", str(sample),
                 "--view", str(view), "--out", str(dst))  # fmt: skip
        made.append(dst)
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "images"), help="where the PNGs go")
    p.add_argument("--work", help="folder for the demo store (default: a temporary one)")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing: apt-get install chromium (make setup as root)")
        return 2
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-pictures-"))
    images, store = demo_store(work)
    made = show_pictures(store, images, out)
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            made += dashboard_pictures(browser, store.parent, images, out, Path(tmp))
        finally:
            browser.close()
    for path in made:
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
