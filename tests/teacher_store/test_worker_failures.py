"""A fatal error raised where images are read in a DataLoader worker (a shard gone, storage
refused, an image replaced) reaches the user as itself: its type and its one line, never the
worker's traceback wrapped in a RuntimeError; generation and the student's loader alike."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from student.loader import StoreLoader
from teacher_store.errors import StoreDamaged, portable
from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.images.pack import pack_images
from teacher_store.images.shard_index import ShardIndexError
from teacher_store.store.arrays import BOOK
from tests.store_fixtures import SMALL_GENERATE

SHARD_BYTES = 2_000_000  # the 17 demo photos make 3 shards
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/teacher_store/conftest.py


class _Unpicklable(ValueError):
    def __init__(self, message: str, handle: object) -> None:
        super().__init__(message)
        self.handle = handle


def test_portable_keeps_a_typed_error_and_falls_back_to_its_message() -> None:
    kept = StoreDamaged("zarr.json", "is missing", "store S: zarr.json is missing")
    assert portable(kept) is kept
    lost = portable(_Unpicklable("shard x is gone; restore it", lambda: None))
    assert type(lost) is ValueError and str(lost) == "shard x is gone; restore it"


@pytest.fixture()
def shards(demo_data: Path, tmp_path: Path) -> tuple[str, Path]:
    """The demo photos packed into 3 local shards: (pattern, the last shard's file)."""
    result = pack_images(str(demo_data), str(tmp_path / "shards"), SHARD_BYTES)
    last = sorted((tmp_path / "shards").glob("*.tar"))[-1]
    return result.pattern, last


def _first_line_only(e: BaseException, *parts: str) -> None:
    text = str(e)
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert all(p in text for p in parts), text


def test_generation_raises_a_shard_gone_in_a_worker_as_one_line(shards, tmp_path) -> None:
    pattern, last = shards
    seen: list[int] = []

    def hook(sample: int) -> None:  # runs in the DataLoader worker (fork): the shard goes
        seen.append(sample)
        if last.exists():
            os.remove(last)

    cfg = GenerateConfig(data=pattern, out=str(tmp_path / "store"),  # type: ignore[arg-type]
                         **{**SMALL_GENERATE, "workers": 2, "read_threads": 0})  # fmt: skip
    with pytest.raises(ShardIndexError) as e:
        run_generate(cfg, decode_hook=hook)
    _first_line_only(e.value, last.name, "is gone", "distill images index")
    assert not (tmp_path / "store" / BOOK / "manifest.json").exists()  # never finished


def test_the_loader_raises_a_shard_gone_in_a_worker_as_one_line(shards, tmp_path) -> None:
    pattern, last = shards
    cfg = GenerateConfig(data=pattern, out=str(tmp_path / "store"), **SMALL_GENERATE)  # type: ignore[arg-type]
    run_generate(cfg)
    opts = {"img_size": 32, "batch_size": 4, "val_fraction": 0.0, "workers": 2}
    with StoreLoader(str(tmp_path / "store"), pattern, read_threads=0, **opts) as loader:
        os.remove(last)  # after the index was opened and checked: gone while training
        with pytest.raises(ShardIndexError) as e:
            for _ in loader:
                pass
    _first_line_only(e.value, last.name, "is gone")
