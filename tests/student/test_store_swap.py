"""`distill train --store http://…` while the served store is replaced: exit 1, one line.

A real uvicorn service and a real `distill train` subprocess. The swap is made deterministic by
a hook in front of the real app: it replaces the store's folder (two renames) just before the
service answers the first block of view slot 1, which training first asks for in epoch 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from teacher_store.store.blockfmt import store_identity
from tests.store_fixtures import SMALL_GENERATE, LiveServer


class _SwapBeforeSlot1:
    """ASGI wrapper: on the first ``/blocks/1`` request, swap the folders, then serve it."""

    def __init__(self, app: Any, store: Path, other: Path) -> None:
        self.app, self.store, self.other, self.swapped = app, store, other, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "/blocks/1" in scope["path"] and not self.swapped:
            self.swapped = True
            os.rename(self.store, self.store.with_name("demo.old"))
            os.rename(self.other, self.store)
        await self.app(scope, receive, send)


def _generate(data: Path, out: Path, seed: int) -> str:
    from teacher_store.generate import GenerateConfig, run_generate

    assert run_generate(GenerateConfig(data=str(data), out=str(out), seed=seed, **SMALL_GENERATE))[
        "complete"
    ]
    return store_identity((out / "_distill" / "manifest.json").read_bytes())


def test_train_stops_with_one_line_when_the_served_store_is_replaced(
    demo_data: Path, tmp_path: Path
) -> None:
    from api.main import create_app
    from api.settings import Settings

    root = tmp_path / "root"
    old = _generate(demo_data, root / "demo", seed=0)
    new = _generate(demo_data, tmp_path / "other", seed=1)
    assert old != new
    app = create_app(Settings(root=root, rescan_interval_s=0.0))
    hook = _SwapBeforeSlot1(app, root / "demo", tmp_path / "other")
    with LiveServer(hook) as live:
        url = f"{live.url}/v1/stores/demo"
        cmd = [
            sys.executable, "-m", "teacher_store.cli", "train", "--store", url,
            "--data", str(demo_data), "--model", "tf_efficientnetv2_b0",
            "--out", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "4",
            "--img-size", "64", "--workers", "0", "--val-fraction", "0.2", "--quiet",
        ]  # fmt: skip
        threads = str(torch.get_num_threads())
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert hook.swapped, r.stderr[-2000:]
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last == (
        f"distill train: store {url} changed while reading (identity {old} → {new}): it was "
        "regenerated or replaced; restart training against the new store"
    )
    epochs = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 1  # epoch 0 finished on the old store; epoch 1 never trained on the new
