"""teacher_store.store.layout (the store's key space over fsspec) and teacher_store.errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import fsspec
import pytest

from teacher_store import errors
from teacher_store.store import layout
from teacher_store.store.arrays import LocalStore
from teacher_store.store.layout import MANIFEST, FileRecord, Location
from tests.store_fixtures import build_store, make_attrs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("layout")
    return build_store(base / "s", make_attrs(64, views=2, topk=3, chunk=16, shard=32), seed=1)


def test_every_error_is_a_value_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), ValueError), name
    e = pickle.loads(pickle.dumps(errors.StoreDamaged("ids/c/0/0/0", "is missing")))
    assert (str(e), e.file, e.reason) == ("ids/c/0/0/0 is missing", "ids/c/0/0/0", "is missing")


def test_readers_raise_typed_errors(store: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.StoreNotFound, match="not a store"):
        LocalStore(tmp_path)
    unfinished = build_store(tmp_path / "u", make_attrs(64, views=2, chunk=16, shard=32), units=1)
    with pytest.raises(errors.StoreIncomplete, match="unfinished"):
        LocalStore(unfinished)


def test_manifest_and_records_round_trip_on_any_fsspec_filesystem(
    store: Path, tmp_path: Path
) -> None:
    """The same calls work on an in-memory filesystem: nothing assumes local disk."""
    local = Location.local(store)
    mem = Location(fsspec.filesystem("memory"), f"/{tmp_path.name}")
    for p in sorted(store.rglob("*")):
        if p.is_file():
            mem.fs.pipe_file(mem.path(p.relative_to(store).as_posix()), p.read_bytes())
    assert layout.read_manifest(mem) == layout.read_manifest(local)
    assert layout.manifest_bytes(mem) == (store / MANIFEST).read_bytes()
    raw, manifest = layout.load_manifest(mem)
    assert raw == layout.manifest_bytes(local) and manifest.units == 2
    assert layout.count_unit_records(mem) == layout.count_unit_records(local) == 2
    assert layout.read_unit_record(mem, "0.0") == layout.read_unit_record(local, "0.0")
    layout.check_files(mem, layout.read_manifest(mem)["files"])  # type: ignore[index]
    layout.write_unit_record(mem, "9.9", {"unit": "9.9", "files": {}, "bad": []})
    assert layout.read_unit_record(mem, "9.9") == {"unit": "9.9", "files": {}, "bad": []}


def test_file_checks_name_the_file(store: Path, tmp_path: Path) -> None:
    mem = Location(fsspec.filesystem("memory"), f"/{tmp_path.name}")
    files = json.loads((store / MANIFEST).read_text())["files"]
    key = next(k for k, v in sorted(files.items()) if v["size"])
    mem.fs.pipe_file(mem.path(key), b"x" * files[key]["size"])
    with pytest.raises(errors.StoreDamaged, match="fails its checksum") as e:
        layout.check_files(mem, {key: files[key]})
    assert e.value.file == key
    with pytest.raises(errors.StoreDamaged, match="missing: regenerate") as e:
        layout.check_files(mem, {"values/c/0/0/0": files[key]})
    assert e.value.file == "values/c/0/0/0"
    with pytest.raises(errors.StoreDamaged, match=f"{MANIFEST} is missing"):
        layout.load_manifest(mem)


def test_file_record_and_hasher_agree() -> None:
    data = bytes(range(256)) * 1000
    hasher = layout.FileHasher()
    for i in range(0, len(data), 4096):
        hasher.update(data[i : i + 4096])
    rec = FileRecord.of(data)
    assert hasher.record() == rec and rec.size == len(data)
    assert FileRecord.from_dict(rec.to_dict()) == rec
    assert rec.mismatch(rec.crc32c, rec.sha256) is None
    assert rec.mismatch(rec.crc32c ^ 1, rec.sha256) == "crc32c"
    assert rec.mismatch(rec.crc32c, "0" * 64) == "sha256"
    assert FileRecord(rec.size, rec.crc32c).mismatch(rec.crc32c, "0" * 64) is None  # no sha kept


def test_api_maps_store_errors_in_one_table() -> None:
    from api.errors import STORE_ERRORS, StoreDamaged, store_status

    assert store_status(StoreDamaged("s", "k", "is missing")) == (409, "store_damaged")
    assert store_status(errors.StoreIncomplete("x")) == (409, "store_incomplete")
    assert store_status(errors.StoreNotFound("x")) == (404, "unknown_store")
    assert store_status(errors.StoreAccessError("x")) == (502, "storage_unavailable")
    assert all(issubclass(t, errors.StoreError) for t in STORE_ERRORS)


def test_keys_and_leftover_temporaries_of_a_relative_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loc = Location.local("s")
    assert loc.keys() == [] and loc.remove_temporaries() == 0  # no folder yet
    loc.write_atomic("ids/c/0/0", b"shard")
    loc.write_atomic("zarr.json", b"{}")
    (tmp_path / "s" / "ids" / "c" / "0" / ".1.tmp4242").write_bytes(b"half")  # a killed write
    assert sorted(loc.keys()) == ["ids/c/0/.1.tmp4242", "ids/c/0/0", "zarr.json"]
    assert loc.remove_temporaries() == 1
    assert sorted(loc.keys()) == ["ids/c/0/0", "zarr.json"]


def test_causes_walks_the_chain_outermost_first() -> None:
    inner = OSError(28, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("zarr wrapped it") from e
    except RuntimeError as outer:
        chain = list(errors.causes(outer))
    assert [type(c) for c in chain] == [RuntimeError, OSError] and chain[1] is inner
