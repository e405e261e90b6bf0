"""The trainer's targets: one store client (its cache and prefetch), the dataset check in it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from student.data import TargetCache, open_targets, target_block
from student.train import run_train
from teacher_store.client import DatasetMismatchError, StoreAddressError
from teacher_store.images.dataset import ImageFolder
from teacher_store.store.arrays import LocalStore
from teacher_store.views.codec import PAIR_TILE
from tests.store_fixtures import student_config


def test_target_blocks_are_whole_chunks_covering_a_pairing_tile(small_store: Path) -> None:
    attrs = LocalStore(small_store).attrs
    assert attrs.chunk_samples == 8 and target_block(attrs) == PAIR_TILE == 1024
    for chunk, block in ((64, 1024), (96, 1056), (1024, 1024), (4096, 4096)):
        assert target_block(attrs.model_copy(update={"chunk_samples": chunk})) == block


def test_gather_through_the_client_is_the_local_gather(small_store: Path) -> None:
    opened = open_targets(str(small_store))
    client: Any = opened.reader  # the StoreClient open_targets made
    assert opened.block == 1024 and client.max_cache_blocks > 0 and client.prefetch > 0
    targets = TargetCache(client, 8)  # blocks smaller than the store: several per gather
    inner, lock, reads = client._open().read_block, threading.Lock(), []

    def counting(slot: int, start: int, stop: int) -> Any:
        with lock:
            reads.append((slot, start, stop))
        return inner(slot, start, stop)

    client._open().read_block = counting
    plain = TargetCache(LocalStore(small_store), 8)
    assert targets.n == 17
    samples = np.array([9, 0, 3, 16, 8, 2])
    targets.prefetch(1, samples)  # blocks 0, 1 and 2 in the background
    for slot in (1, 1, 2):
        for a, b in zip(targets.gather(slot, samples), plain.gather(slot, samples), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert sorted(reads) == [(1, 0, 8), (1, 8, 16), (1, 16, 17), (2, 0, 8), (2, 8, 16), (2, 16, 17)]
    targets.close()


def test_open_targets_refuses_bad_addresses_and_other_datasets(small_store: Path) -> None:
    with pytest.raises(StoreAddressError, match="foo"):
        open_targets(f"foo://{small_store}")
    fp = LocalStore(small_store).attrs.dataset
    open_targets(str(small_store), expected_fingerprint=fp).close()
    # Without a content record on the expecting side, names and sizes decide.
    names_only = {k: v for k, v in fp.items() if k != "content"}
    with pytest.raises(DatasetMismatchError, match="sha256"):
        open_targets(str(small_store), expected_fingerprint={**names_only, "sha256": "0" * 64})
    # Both record the content: it decides (other names, e.g. the packed shards, are accepted).
    assert fp.get("content")
    open_targets(str(small_store), expected_fingerprint={**fp, "sha256": "0" * 64}).close()
    other = {**fp, "content": {**fp["content"], "sha256": "1" * 64}}
    with pytest.raises(DatasetMismatchError, match="content"):
        open_targets(str(small_store), expected_fingerprint=other)


def test_dataset_mismatch_message_and_allow_flag(
    small_store: Path, demo_data: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(demo_data, other)
    shutil.copy(other / "cat" / "chelsea.png", other / "cat" / "chelsea2.png")
    n = len(ImageFolder.scan(demo_data))
    with pytest.raises(ValueError) as err:
        run_train(student_config(small_store, other, tmp_path / "refused", epochs=1))
    assert str(err.value) == (
        f"--data {other} is not the dataset the store was built from ({n + 1} samples instead "
        f"of {n}); pass --allow-dataset-mismatch to train anyway"
    )
    cfg = student_config(
        small_store, other, tmp_path / "run", epochs=1, max_steps=1, allow_dataset_mismatch=True
    )
    assert run_train(cfg)["step"] == 1


def test_evaluate_does_not_import_train() -> None:
    code = "import sys, student.evaluate; assert 'student.train' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
