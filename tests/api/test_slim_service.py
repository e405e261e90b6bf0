"""The service where the image code cannot be imported (the slim API image: no Pillow, no
torch): stores and pages are served, a view picture is a 409 ``rendering_unavailable`` in one
line, never a 500, whatever the ``--data`` source (a folder or tar shards)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from teacher_store.images.pack import pack_images
from teacher_store.testing import ServiceProcess, free_port

REPO = Path(__file__).resolve().parents[2]
# Run `distill serve` (one worker: in this process) with Pillow and torch unimportable.
_SLIM = (
    "import sys; sys.modules.update(dict.fromkeys(('PIL', 'torch', 'torchvision'))); "
    "from teacher_store.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_without_the_image_code_views_are_409_not_500(
    source: str, photo_root: Path, demo_data: Path, tmp_path: Path
) -> None:
    data = str(demo_data)
    if source == "shards":
        data = pack_images(str(demo_data), str(tmp_path / "shards"), 2_000_000).pattern
    port = free_port()
    cmd = [sys.executable, "-c", _SLIM, "serve", "--root", str(photo_root), "--port", str(port),
           "--data", f"demo={data}"]  # fmt: skip
    with ServiceProcess(cmd, port, cwd=REPO, log=tmp_path / "serve.log") as live:
        r = requests.get(f"{live.url}/v1/stores/demo/views/0/0.png", timeout=60)
        assert r.status_code == 409, (r.status_code, r.text[:300])
        body = r.json()
        assert body["error"] == "rendering_unavailable" and len(body["detail"].splitlines()) == 1
        assert requests.get(f"{live.url}/v1/stores/demo", timeout=30).status_code == 200
        page = requests.get(f"{live.url}/ui/stores/demo", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
