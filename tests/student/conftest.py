"""A small real store (real teacher, real photos, 64 px) shared by the student tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def _small(data: Path, out: Path, seed: int = 0) -> Path:
    from teacher_store.generate import GenerateConfig, run_generate

    cfg = GenerateConfig(
        data=str(data),
        out=str(out),
        seed=seed,
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


@pytest.fixture(scope="session")
def small_store(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small(demo_data, tmp_path_factory.mktemp("student") / "store")


@pytest.fixture(scope="session")
def other_store(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same data and options as ``small_store`` under another seed: another teacher store
    (other views, other targets) of the same dataset."""
    return _small(demo_data, tmp_path_factory.mktemp("student") / "other", seed=1)
