"""/docs works offline: its page references only same-origin URLs, and those serve the assets."""

from __future__ import annotations

import re

import requests

from tests.store_fixtures import LiveServer


def test_docs_assets_are_served_from_the_package(server: LiveServer) -> None:
    r = requests.get(f"{server.url}/docs", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "cdn" not in html.lower() and "://" not in html  # no absolute URL at all
    urls = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(urls) == 4, urls  # css, favicon, js, openapi.json
    want = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "json"}
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = requests.get(server.url + url, timeout=10)
        kind = next(v for k, v in want.items() if url.endswith(k))
        assert asset.status_code == 200 and kind in asset.headers["content-type"], url
        assert len(asset.content) > 100, url
    js = requests.get(server.url + next(u for u in urls if u.endswith(".js")), timeout=10)
    assert b"SwaggerUIBundle" in js.content
    assert requests.get(f"{server.url}/redoc", timeout=10).status_code == 404
