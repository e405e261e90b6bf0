"""Read-ahead of image bytes (teacher_store.images.prefetch): the same bytes, errors, views,
store files and student batches with it off, on, and at any thread count; bounded; safe
across a fork and a pickle."""

from __future__ import annotations

import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest
import torch

from student import StoreLoader
from teacher_store.errors import ImageChangedError
from teacher_store.images.dataset import CorruptImageError, ImageFolder
from teacher_store.images.digests import SampleDigests
from teacher_store.images.prefetch import ReadAhead, read_ahead, wanted
from teacher_store.options import OptionsError, validate_options
from tests.store_fixtures import BATCH_TENSORS, file_digests, generate_small, replace_same_size


class _Slow:
    """An ImageFolder whose reads wait until released, and record which thread ran them."""

    def __init__(self, folder: ImageFolder) -> None:
        self.folder = folder
        self.threads: dict[int, str] = {}
        self.gate = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.folder, name)

    def __len__(self) -> int:
        return len(self.folder)

    def read(self, i: int) -> bytes:
        self.gate.wait(30)
        self.threads[i] = threading.current_thread().name
        return self.folder.read(i)


def test_read_ahead_gives_the_sources_bytes_and_errors_as_they_are(demo_data, tmp_path):
    data = shutil.copytree(demo_data, tmp_path / "data")
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 20)
    folder = ImageFolder.scan(data)
    bad = folder.paths.index("cat/broken.jpg")
    with pytest.raises(CorruptImageError) as plain:
        folder.load(bad)
    ahead = ReadAhead(folder, threads=3)
    try:
        ahead.want(range(len(folder)))
        assert ahead.pending() == len(folder)
        for i in range(len(folder)):
            if i == bad:
                with pytest.raises(CorruptImageError) as got:
                    ahead.load(i)
                assert str(got.value) == str(plain.value)  # the message a store records
            else:
                assert ahead.read(i) == folder.read(i)
        assert ahead.pending() == 0
        # Not wanted: read in place, by the source itself.
        assert ahead.read(0) == folder.read(0)
        assert ahead.load(1).tobytes() == folder.load(1).tobytes()
    finally:
        ahead.close()

    # A changed image read ahead is refused as when read in place: same type, same line.
    digests = folder.sample_digests()
    victim = 2
    replace_same_size(data / folder.paths[victim])
    checked = folder.with_content(digests)
    with pytest.raises(ImageChangedError) as in_place:
        checked.read(victim)
    ahead = ReadAhead(checked, threads=2)
    try:
        ahead.want([victim])
        with pytest.raises(ImageChangedError) as early:
            ahead.read(victim)
        assert str(early.value) == str(in_place.value) and early.value.sample == victim
    finally:
        ahead.close()


def test_read_ahead_runs_reads_in_its_threads_bounded_and_drops_unwanted(demo_data):
    slow = _Slow(ImageFolder.scan(demo_data))
    ahead = ReadAhead(slow, threads=2, depth=4)  # type: ignore[arg-type]
    try:
        ahead.want(range(10))
        assert ahead.pending() == 4  # depth bounds the samples wanted at once
        ahead.want([2, 3, 4, 5])  # 0 and 1 no longer wanted: dropped
        assert ahead.pending() == 4 and sorted(ahead._pending) == [2, 3, 4, 5]
        slow.gate.set()
        for i in (2, 3, 4, 5):
            assert ahead.read(i) == slow.folder.read(i)
        assert all(slow.threads[i].startswith("read-ahead") for i in (2, 3, 4, 5))
    finally:
        ahead.close()

    # Held bytes bound: no read is started while the finished ones hold max_bytes.
    folder = ImageFolder.scan(demo_data)
    small = ReadAhead(folder, threads=1, max_bytes=1)
    try:
        small.want([0, 1, 2])
        small._pending[0].result()  # the first read is done, and holds more than 1 byte
        small.want([0, 1, 2, 3])
        assert 3 not in small._pending
    finally:
        small.close()


def test_read_ahead_survives_a_pickle_and_a_fork(demo_data):
    folder = ImageFolder.scan(demo_data)
    ahead = ReadAhead(folder, threads=2)
    ahead.want([0, 1])
    copy = pickle.loads(pickle.dumps(ahead))  # no threads, no pending reads travel
    assert copy.pending() == 0 and copy.read(0) == folder.read(0)
    copy.want([3])
    assert copy.read(3) == folder.read(3)
    copy.close()

    pid = os.fork()
    if pid == 0:  # the child: the parent's pool has no threads here; a fresh one starts
        ok = ahead.pending() == 0 and ahead.read(1) == folder.read(1)
        ahead.want([4])
        ok = ok and ahead.read(4) == folder.read(4)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert ahead.read(1) == folder.read(1)
    ahead.close()


def test_read_ahead_wrapper_is_an_image_source(demo_data):
    from teacher_store.images.source import ImageSource

    folder = ImageFolder.scan(demo_data)
    ahead = read_ahead(folder, 2)
    assert isinstance(ahead, ReadAhead) and isinstance(ahead, ImageSource)
    assert read_ahead(folder, 0) is folder and read_ahead(ahead, 0) is folder
    assert ahead.fingerprint() == folder.fingerprint() and len(ahead) == len(folder)
    assert [ahead.label(i) for i in range(len(folder))] == list(folder.labels)
    assert ahead.where(3) == folder.where(3) and ahead.key(3) == folder.key(3)
    digests = SampleDigests.compute(folder.read, len(folder))
    checked = ahead.with_content(digests)
    assert isinstance(checked, ReadAhead) and checked.content is digests
    wanted(folder, [1, 2])  # a source that does not read ahead: nothing happens


@pytest.mark.parametrize("value", [-1, 257, "x"])
def test_read_threads_out_of_range_is_a_one_line_option_error(value):
    from teacher_store.generate import GenerateConfig

    with pytest.raises(OptionsError) as e:
        validate_options(GenerateConfig, {"data": "d", "out": "o", "read_threads": value})
    (line,) = e.value.problems
    assert line.startswith(f"--read-threads {value}") and "\n" not in line


@pytest.fixture(scope="module")
def reference(one_thread, demo_data: Path, tmp_path_factory) -> Path:
    """The small store made with every image read in place (--read-threads 0)."""
    out = tmp_path_factory.mktemp("ref") / "store"
    return generate_small(demo_data, out, read_threads=0, progress=False)


@pytest.mark.parametrize("threads, workers", [(1, 0), (3, 0), (8, 2)])
def test_generate_with_read_ahead_writes_the_same_store_bytes(
    reference, demo_data, tmp_path, threads, workers, monkeypatch
):
    from teacher_store.store.arrays import LocalStore

    served: list[int] = []
    close = ReadAhead.close

    def closing(self: ReadAhead) -> None:  # the job closes its read-ahead when done
        served.append(self.served)
        close(self)

    monkeypatch.setattr(ReadAhead, "close", closing)
    out = generate_small(
        demo_data, tmp_path / "store", read_threads=threads, workers=workers, progress=False
    )
    assert file_digests(out) == file_digests(reference)
    assert "read_threads" not in LocalStore(out).attrs.config  # not a store-deciding option
    if not workers:  # this process rendered: most of its reads came from the read-ahead
        assert served and served[0] >= len(ImageFolder.scan(demo_data))


def test_store_loader_batches_are_the_same_whatever_the_read_ahead(reference, demo_data):
    opts = {"img_size": 48, "batch_size": 4, "val_fraction": 0.2, "epochs": 2}
    runs = []
    for threads, workers in ((0, 0), (1, 0), (4, 0), (2, 2)):
        with StoreLoader(
            str(reference), demo_data, read_threads=threads, workers=workers, **opts
        ) as loader:
            batches = []
            for epoch in range(2):
                loader.set_epoch(epoch)
                batches += list(loader)
            assert loader.config.read_threads == threads
            if threads and not workers:  # the reads came from the read-ahead (this process's)
                assert isinstance(loader.views.folder, ReadAhead)
                assert loader.views.folder.served >= len(batches) * 4 // 2
            runs.append(batches)
    first = runs[0]
    assert len(first) >= 4
    for other in runs[1:]:
        assert len(other) == len(first)
        for a, b in zip(first, other, strict=True):
            for name in BATCH_TENSORS:
                assert torch.equal(getattr(a, name), getattr(b, name)), name
