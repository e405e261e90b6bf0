"""A view picture through the dashboard's endpoint vs ``distill show``, side by side in one run.

Builds the demo store (17 real photos, the real Lite0 teacher, 2 views, 64 px) in a temp dir,
starts the service in-process on loopback with ``--data`` for it, and measures per view:

- ``distill show`` as a function (``show_view``: opens the store, scans and fingerprints the
  image folder, replays, draws the text panel, writes a PNG) — what a user did before;
- ``GET /v1/stores/demo/views/{slot}/{sample}.png`` with the server's renderer warm (the folder
  scanned once per store identity), and a revalidation with ``If-None-Match`` (304).

Usage: ``.venv/bin/python bench/dashboard.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _per_view(fn, views: list[tuple[int, int]], repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for slot, sample in views:
            fn(slot, sample)
        best = min(best, (time.perf_counter() - t0) / len(views))
    return best


def main() -> None:
    import requests
    import torch

    from api.main import create_app
    from api.settings import Settings
    from teacher_store.images.demo_data import write_demo_data
    from teacher_store.show import show_view
    from teacher_store.testing import LiveServer, generate_small

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    data, root = tmp / "images", tmp / "root"
    write_demo_data(data)
    root.mkdir()
    store = generate_small(data, root / "demo")
    views = [(slot, sample) for slot in range(2) for sample in range(17)]
    settings = Settings(root=root, data=f"demo={data}", rescan_interval_s=1.0)
    with LiveServer(create_app(settings)) as live, requests.Session() as http:
        url = live.url + "/v1/stores/demo/views/{}/{}.png"
        http.get(url.format(0, 0), timeout=60).raise_for_status()  # renderer warm
        etags = {v: http.get(url.format(*v), timeout=60).headers["etag"] for v in views}

        def show(slot: int, sample: int) -> None:
            show_view(str(store), str(data), sample, slot, str(tmp / "show.png"))

        def endpoint(slot: int, sample: int) -> None:
            http.get(url.format(slot, sample), timeout=60).raise_for_status()

        def revalidate(slot: int, sample: int) -> None:
            r = http.get(url.format(slot, sample), headers={"if-none-match": etags[slot, sample]})
            assert r.status_code == 304

        t_show = _per_view(show, views, args.repeat)
        t_end = _per_view(endpoint, views, args.repeat)
        t_304 = _per_view(revalidate, views, args.repeat)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch threads 1")
    print(f"distill show (show_view)      {1e3 * t_show:7.1f} ms/view   1.00x")
    print(f"views endpoint, warm renderer {1e3 * t_end:7.1f} ms/view   {t_show / t_end:.2f}x")
    print(f"views endpoint, 304           {1e3 * t_304:7.1f} ms/view   {t_show / t_304:.1f}x")


if __name__ == "__main__":
    main()
