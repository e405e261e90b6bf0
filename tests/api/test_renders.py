"""View PNG renders: their own bounded pool, queue and cache (issue 24 item 6), and image folders
that cannot render (item 8). A live uvicorn over a real store of the demo photos (Lite0)."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import decode_block
from tests.store_fixtures import LiveServer


def _block_ok(url: str, store: Path) -> bool:
    """A block read answers 200 with exactly the store's targets."""
    r = requests.get(f"{url}/v1/stores/demo/blocks/1?start=0&stop=17", timeout=120)
    if r.status_code != 200:
        return False
    got, want = decode_block(r.content), LocalStore(store).read_block(1, 0, 17)
    return all(
        np.array_equal(g, w)
        for g, w in ((got.ids, want.ids), (got.values, want.values), (got.valid, want.valid))
    )


def test_a_render_flood_is_refused_while_block_reads_answer(
    photo_root: Path, demo_data: Path
) -> None:
    """One render worker and one queued render: a flood of distinct renders gets 503 with
    Retry-After (renders refused first), block reads beside it answer 200 with right bytes, a
    refused render succeeds when retried, and a repeated render comes from the cache."""
    from api.main import create_app
    from api.settings import Settings

    settings = Settings(
        root=photo_root, data=f"demo={demo_data}", render_workers=1, render_queue=1,
        rescan_interval_s=0.0,
    )  # fmt: skip
    views = [f"/v1/stores/demo/views/{slot}/{sample}.png" for slot in (0, 1) for sample in range(8)]
    with LiveServer(create_app(settings)) as live, ThreadPoolExecutor(len(views)) as pool:
        # The first render starts the worker process (seconds): the flood arrives meanwhile.
        flood = [pool.submit(requests.get, live.url + v, timeout=300) for v in views]
        blocks = [_block_ok(live.url, photo_root / "demo") for _ in range(5)]
        answers = [f.result() for f in flood]
        assert all(blocks), "block reads must answer right while renders queue"
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 503} and 503 in codes and 200 in codes, codes
        for r in answers:
            if r.status_code == 503:
                body = r.json()
                assert body["error"] == "renders_busy" and "retry after" in body["detail"]
                assert int(r.headers["retry-after"]) >= 1
            else:
                assert r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
        refused = views[codes.index(503)]
        again = requests.get(live.url + refused, timeout=300)
        assert again.status_code == 200 and again.headers["x-distill-render-cache"] == "miss"
        cached = requests.get(live.url + refused, timeout=60)
        assert cached.status_code == 200 and cached.headers["x-distill-render-cache"] == "hit"
        assert cached.content == again.content
        metrics = requests.get(f"{live.url}/metrics", timeout=30).text
        hits = next(
            line
            for line in metrics.splitlines()
            if line.startswith('distill_cache_hits_total{cache="renders"}')
        )
        assert float(hits.split()[-1]) >= 1


def test_an_image_folder_without_class_folders_is_409_and_remembered(
    photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    """``--data demo=DIR`` where DIR holds the photos but no class folders: the PNG answers 409
    JSON with the reason (was a 500 ValueError), the view page says it, the folder is walked
    once (not per request), and once the folder is fixed the views render."""
    from api.main import create_app
    from api.settings import Settings

    flat = tmp_path / "flat"
    flat.mkdir()
    for photo in sorted(p for p in demo_data.rglob("*") if p.is_file()):
        shutil.copy(photo, flat / photo.name)
    app = create_app(Settings(root=photo_root, data=f"demo={flat}", rescan_interval_s=0.0))
    with LiveServer(app) as live:
        for slot, sample in ((0, 0), (1, 3), (0, 0)):
            r = requests.get(f"{live.url}/v1/stores/demo/views/{slot}/{sample}.png", timeout=60)
            assert r.status_code == 409, r.text
            body = r.json()
            assert body["error"] == "dataset_unusable" and str(flat) in body["detail"]
            assert "expected root/<class>/<img>" in body["detail"]
        page = requests.get(f"{live.url}/ui/fragments/stores/demo/view?slot=1", timeout=60)
        assert page.status_code == 200 and "cannot be used" in page.text and "<img" not in page.text
        assert app.state.service.dashboard.scans == 1  # remembered, failure included
        for photo in flat.iterdir():  # fix the folder: the class folders the store was built from
            photo.unlink()
        for folder in demo_data.iterdir():
            shutil.copytree(folder, flat / folder.name)
        r = requests.get(f"{live.url}/v1/stores/demo/views/0/0.png", timeout=300)
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
        assert app.state.service.dashboard.scans == 2


def test_a_killed_render_worker_is_replaced(photo_root: Path, demo_data: Path) -> None:
    """A render worker killed (out of memory, by hand) costs at most a 503 with Retry-After,
    never a 500; the next renders start a new worker."""
    import os
    import signal
    import time

    from api.main import create_app
    from api.settings import Settings

    app = create_app(Settings(root=photo_root, data=f"demo={demo_data}", rescan_interval_s=0.0))
    with LiveServer(app) as live:
        first = requests.get(f"{live.url}/v1/stores/demo/views/0/1.png", timeout=300)
        assert first.status_code == 200
        pool = app.state.service.renders._pool
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        codes = []
        for _ in range(30):
            r = requests.get(f"{live.url}/v1/stores/demo/views/1/2.png", timeout=300)
            codes.append(r.status_code)
            if r.status_code == 200:
                break
            assert r.status_code == 503 and "retry-after" in r.headers, r.text
            time.sleep(0.5)
        assert codes[-1] == 200 and r.content[:4] == b"\x89PNG", codes
        assert app.state.service.renders._pool is not pool
        assert _block_ok(live.url, photo_root / "demo")
