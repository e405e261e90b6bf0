"""A small real store (real teacher, real photos, 64 px) shared by the student tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_store(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from teacher_store.generate import GenerateConfig, run_generate

    out = tmp_path_factory.mktemp("student") / "store"
    cfg = GenerateConfig(
        data=str(demo_data),
        out=str(out),
        views=3,
        topk=10,
        img_size=64,
        batch_size=8,
        chunk_samples=8,
        shard_samples=8,
        shard_views=3,
        workers=0,
        progress=False,
    )
    assert run_generate(cfg)["complete"]
    return out
