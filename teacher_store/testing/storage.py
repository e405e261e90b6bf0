"""The storage contract: what every storage backend of :class:`Location` must do, as a pytest
class to subclass (as zarr's ``StoreTests``).

A backend's test gives two fixtures: ``location``, a fresh empty :class:`Location` on it, and
``broken``, a location whose writes fail (a root under a file, a bucket that does not exist).
tests/teacher_store/storage/test_contract.py runs it on local disk, fsspec's memory filesystem
and S3 (moto's server); a new backend is one line there.
"""

from __future__ import annotations

import time

import pytest

from teacher_store.errors import StoreNotFound
from teacher_store.storage.failures import provider_of, storage_failure
from teacher_store.storage.location import Location, is_temporary

_DATA = bytes(range(256)) * 4  # 1,024 bytes, every byte value


class StorageContract:
    """Tests every storage backend passes; subclass and give ``location`` and ``broken``."""

    def test_write_atomic_then_read(self, location: Location) -> None:
        location.write_atomic("a/b/c.bin", b"one")
        assert location.read("a/b/c.bin") == b"one"
        assert location.is_file("a/b/c.bin") and location.exists("a/b/c.bin")
        assert location.is_dir("a/b") and not location.is_file("a/b")
        location.write_atomic("a/b/c.bin", b"two, longer")  # replaced whole
        assert location.read("a/b/c.bin") == b"two, longer"
        assert location.size("a/b/c.bin") == len(b"two, longer")
        location.write_atomic("a/b/c.bin", b"")
        assert location.read("a/b/c.bin") == b"" and location.size("a/b/c.bin") == 0

    def test_ranged_reads(self, location: Location) -> None:
        location.write_atomic("r", _DATA)
        for start, stop in ((0, 10), (100, 356), (1000, 1024), (1023, 1024), (0, 1024)):
            assert location.read_range("r", start, stop) == _DATA[start:stop], (start, stop)
        assert location.read_range("r", 1020, 2000) == _DATA[1020:]  # short at the end
        with location.open("r") as f:
            assert f.read(5) == _DATA[:5] and f.read() == _DATA[5:]

    def test_open_atomic(self, location: Location) -> None:
        with location.open_atomic("w/big.bin") as f:
            f.write(_DATA)
            f.write(b"end")
        assert location.read("w/big.bin") == _DATA + b"end"
        with pytest.raises(RuntimeError), location.open_atomic("w/big.bin") as f:
            f.write(b"half")
            raise RuntimeError("the writer fails midway")
        assert location.read("w/big.bin") == _DATA + b"end"  # the old file, whole
        with pytest.raises(RuntimeError), location.open_atomic("w/new.bin") as f:
            raise RuntimeError("no file at all")
        assert not location.exists("w/new.bin") and location.keys() == ["w/big.bin"]

    def test_listing(self, location: Location) -> None:
        assert location.keys() == [] and location.is_empty() and location.sizes() == (0, 0)
        files = {"zarr.json": b"{}", "ids/c/0/0": _DATA, "ids/c/0/1": b"x", "_d/s/0.json": b"{}"}
        for key, data in files.items():
            location.write_atomic(key, data)
        assert location.keys() == sorted(files)
        assert location.file_sizes() == {k: len(v) for k, v in files.items()}
        assert location.file_sizes("ids/c") == {"ids/c/0/0": 1024, "ids/c/0/1": 1}
        assert location.sizes() == (sum(map(len, files.values())), len(files))
        assert sorted(location.names("ids/c/0")) == ["0", "1"]
        assert location.folders() == ["_d", "ids"] and not location.is_empty()
        assert location.child("ids").keys() == ["c/0/0", "c/0/1"]

    def test_missing_keys(self, location: Location) -> None:
        location.write_atomic("there", b"x")
        with pytest.raises(FileNotFoundError):
            location.read("not/there")
        with pytest.raises(FileNotFoundError):
            location.read_range("not/there", 0, 1)
        with pytest.raises(FileNotFoundError):
            location.signature("not/there")
        assert location.size("not/there") is None and not location.is_file("not/there")
        assert not location.exists("not/there") and not location.lexists("not/there")
        assert location.names("not") == [] and location.file_sizes("not") == {}
        location.remove("not/there")  # nothing to do, no error
        assert location.keys() == ["there"]

    def test_change_signatures(self, location: Location) -> None:
        location.write_atomic("k", b"aaaa")
        first = location.signature("k")
        assert location.signature("k") == first and not first.weak
        assert (first.type, first.size) == ("file", 4)
        time.sleep(0.01)  # coarse clocks: a later write is a later time
        location.write_atomic("k", b"bbbb")  # same size, other bytes
        second = location.signature("k")
        assert second != first and second.size == 4
        location.write_atomic("k", b"bbbbbb")
        assert location.signature("k").size == 6
        location.remove("k")
        with pytest.raises(FileNotFoundError):
            location.signature("k")

    def test_remove_and_clear(self, location: Location) -> None:
        for key in ("a", "b/c", "b/d/e"):
            location.write_atomic(key, key.encode())
        location.remove("b/c")
        assert location.keys() == ["a", "b/d/e"]
        location.clear()
        assert location.keys() == [] and location.is_empty()
        location.clear()  # nothing left: no error

    def test_failures_are_classified(self, location: Location, broken: Location) -> None:
        location.probe()  # healthy: nothing to say
        for other in (ValueError("ours"), KeyError("k"), FileNotFoundError("k")):
            assert storage_failure(location, other) is None, other
        provider = provider_of(broken.fs)
        if provider is not None:  # an object store names what is missing, in one line
            with pytest.raises(StoreNotFound, match="does not exist") as e:
                broken.probe()
            assert "\n" not in str(e.value)
        with pytest.raises(Exception) as err:
            broken.write_atomic("k", b"x")
        failure = storage_failure(broken, err.value)
        if provider is None:
            assert failure is None  # a folder's errors are the OS's own, already one line
            return
        assert failure is not None and all("\n" not in part for part in failure)
        assert "no longer exists" in failure[0] and "create it" in failure[1]

    def test_leftovers(self, location: Location) -> None:
        for key in ("a/x", "a/y", "z"):
            location.write_atomic(key, b"data")
        written = location.keys()
        assert not [k for k in written if is_temporary(k.rsplit("/", 1)[-1])]
        # A writer killed mid-write leaves its temporary file (local disk: a rename commits a
        # write); an object store's PUT leaves nothing, and an object is never a leftover.
        location.fs.pipe_file(location.path("a/.x.tmp4242"), b"half")
        removed = location.remove_temporaries()
        assert removed == (1 if location.is_local else 0)
        left = set(location.keys()) - {"a/x", "a/y", "z"}
        assert left == (set() if location.is_local else {"a/.x.tmp4242"})


__all__ = ["StorageContract"]
