"""Damaged stores (files failing their schema) are listed as damaged, naming the file, answer 409
on data, and never stop the service or the other stores: at startup and swapped in while serving.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from teacher_store.store.arrays import LocalStore
from tests.meta_edits import ATTR_EDITS
from tests.reliability import record
from tests.store_fixtures import LiveServer, build_store, copy_store, make_attrs, plant_class_id

MANIFEST = "_distill/manifest.json"
Damage = Callable[[Path], None]


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _attr(name: str, value: int) -> Damage:
    def damage(store: Path) -> None:
        _edit_json(store / "zarr.json", lambda d: d["attributes"].__setitem__(name, value))

    return damage


def _manifest_files(value: Any) -> Damage:
    def damage(store: Path) -> None:
        _edit_json(store / MANIFEST, lambda d: d.__setitem__("files", value))

    return damage


def _consolidated_not_object(store: Path) -> None:
    _edit_json(
        store / "zarr.json", lambda d: d["consolidated_metadata"]["metadata"].__setitem__("ids", 5)
    )


def _truncate(key: str) -> Damage:
    def damage(store: Path) -> None:
        data = (store / key).read_bytes()
        (store / key).write_bytes(data[: len(data) // 2])

    return damage


def _write(key: str, data: bytes) -> Damage:
    def damage(store: Path) -> None:
        (store / key).write_bytes(data)

    return damage


def _size_of_first_shard(size: int) -> Damage:
    def damage(store: Path) -> None:
        def edit(d: dict[str, Any]) -> None:
            d["files"]["ids/c/0/0/0"]["size"] = size

        _edit_json(store / MANIFEST, edit)

    return damage


def _remove(key: str) -> Damage:
    def damage(store: Path) -> None:
        (store / key).unlink()

    return damage


SHARD = "ids/c/0/0/0"
# name -> (damage, the file the reason must name)
DAMAGES: dict[str, tuple[Damage, str]] = {
    "shard-missing": (_remove(SHARD), SHARD),
    "shard-truncated": (_truncate(SHARD), SHARD),
    "shard-grown": (_write(SHARD, b"\x00" * 10_000), SHARD),
    "files-list": (_manifest_files([]), MANIFEST),
    "files-string": (_manifest_files("oops"), MANIFEST),
    "consolidated-int": (_consolidated_not_object, "zarr.json"),
    "shard-views-0": (_attr("shard_views", 0), "zarr.json"),
    "shard-samples-0": (_attr("shard_samples", 0), "zarr.json"),
    "views-negative": (_attr("views", -1), "zarr.json"),
    "root-truncated": (_truncate("zarr.json"), "zarr.json"),
    "root-empty": (_write("zarr.json", b""), "zarr.json"),
    "root-garbage": (_write("zarr.json", b"\x00\xffnot json{"), "zarr.json"),
    "root-list": (_write("zarr.json", b"[1, 2]"), "zarr.json"),
    "manifest-garbage": (_write(MANIFEST, b'{\n  "files": oops'), MANIFEST),
    "manifest-truncated": (_truncate(MANIFEST), MANIFEST),
    "size-zero-existing": (_size_of_first_shard(0), "ids/c/0/0/0"),
    "size-negative": (_size_of_first_shard(-5), MANIFEST),
    # Attributes failing the schema, contradicting the arrays, or edited after the store was
    # finished (the manifest's metadata digests): listed invalid, naming the file, 409.
    **{f"attrs-{name}": edit for name, edit in ATTR_EDITS.items()},
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("pristine")
    return build_store(base / "good", make_attrs(64, views=2, topk=3, chunk=16, shard=32), seed=5)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, pristine: Path) -> Iterator[LiveServer]:
    """A server started over the good store and one copy per damage, all damaged at start."""
    from api.main import create_app
    from api.settings import Settings

    root = tmp_path_factory.mktemp("damaged-root")
    copy_store(pristine, root / "good")
    for name, (damage, _) in DAMAGES.items():
        damage(copy_store(pristine, root / f"start-{name}"))
    with LiveServer(create_app(Settings(root=root, rescan_interval_s=0.0))) as server:
        server.root = root  # type: ignore[attr-defined]
        yield server


def _lost(live: LiveServer, pristine: Path, name: str = "good") -> int:
    """Reads of store ``name`` that differ from the pristine store's bytes (0 when all agree)."""
    from teacher_store.client import StoreClient

    lost = 0
    for key in ("zarr.json", SHARD, "values/c/0/1/0", "valid/c/0/1"):
        r = requests.get(f"{live.url}/v1/stores/{name}/zarr/{key}", timeout=10)
        lost += r.status_code != 200 or r.content != (pristine / key).read_bytes()
    remote = StoreClient(f"{live.url}/v1/stores/{name}").read_block(1, 3, 40)
    local = LocalStore(pristine).read_block(1, 3, 40)
    for a, b in (
        (remote.ids, local.ids),
        (remote.values, local.values),
        (remote.valid, local.valid),
    ):
        lost += not np.array_equal(a, b)
    return lost


def _check_good(live: LiveServer, pristine: Path, test: str = "", faults: int = 0) -> None:
    lost = _lost(live, pristine)
    if test:
        record(test, faults_survived=faults, inputs_tried=faults, data_lost=lost)
    assert lost == 0


def _check_damaged(live: LiveServer, name: str, file: str) -> None:
    stores = {
        s["name"]: s for s in requests.get(f"{live.url}/v1/stores", timeout=10).json()["stores"]
    }
    assert stores[name]["state"] == "invalid", stores[name]
    assert file in stores[name]["error"] and "damaged" in stores[name]["error"]
    base = f"{live.url}/v1/stores/{name}"
    detail = requests.get(base, timeout=10)
    assert detail.status_code == 200 and detail.json()["state"] == "invalid"
    for path in ("/blocks/0?start=0&stop=4", "/zarr/zarr.json", "/zarr/ids/c/0/0/0"):
        r = requests.get(base + path, timeout=10)
        assert r.status_code == 409, (name, path, r.status_code, r.text[:200])
        assert file in r.json()["detail"]
    assert requests.get(f"{live.url}/readyz", timeout=10).status_code == 200


@pytest.mark.reliability
@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_at_start(live: LiveServer, pristine: Path, name: str) -> None:
    _check_damaged(live, f"start-{name}", DAMAGES[name][1])
    _check_good(live, pristine, "damaged store files, at the service's start", 1)


@pytest.mark.reliability
@pytest.mark.parametrize("name", sorted(DAMAGES))
def test_damaged_while_serving(live: LiveServer, pristine: Path, name: str) -> None:
    root: Path = live.root  # type: ignore[attr-defined]
    store = copy_store(pristine, root / f"live-{name}")
    assert requests.get(f"{live.url}/v1/stores/live-{name}/blocks/0?start=0&stop=4", timeout=10).ok
    DAMAGES[name][0](store)
    file = DAMAGES[name][1]
    # A shard is checked when it is read (the listing stays cheap): read it, then the store
    # is listed as damaged and all of its data refused.
    r = requests.get(f"{live.url}/v1/stores/live-{name}/zarr/{file}", timeout=10)
    assert r.status_code == 409 and r.headers["content-type"] == "application/json"
    _check_damaged(live, f"live-{name}", file)
    _check_good(live, pristine, "damaged store files, while serving", 1)
    shutil.rmtree(store)
    assert requests.get(f"{live.url}/v1/stores/live-{name}", timeout=10).status_code == 404


def test_shard_appearing_behind_a_size_zero_entry(live: LiveServer, pristine: Path) -> None:
    """A shard the manifest says was never written (size 0) must not read as fill values once a
    file is there: the zarr key and the block answer 409, naming the key."""
    root: Path = live.root  # type: ignore[attr-defined]
    store = copy_store(pristine, root / "appearing")
    key = "valid/c/0/1"  # slots 0-1 x samples [32, 64): forget it, as if it were never written
    shard = (store / key).read_bytes()
    (store / key).unlink()
    _edit_json(store / MANIFEST, lambda d: d["files"].__setitem__(key, {"size": 0, "crc32c": 0}))
    base = f"{live.url}/v1/stores/appearing"
    assert requests.get(f"{base}/zarr/{key}", timeout=10).status_code == 404  # fill value: right
    block = requests.get(f"{base}/blocks/1?start=32&stop=36", timeout=10)
    assert block.status_code == 200
    (store / key).write_bytes(shard)  # manifest unchanged: the store is not reopened
    r = requests.get(f"{base}/zarr/{key}", timeout=10)
    assert r.status_code == 409 and key in r.json()["detail"]
    r = requests.get(f"{base}/blocks/0?start=32&stop=36", timeout=10)  # chunk not cached yet
    assert r.status_code == 409 and key in r.json()["detail"]


def test_not_a_store_is_not_listed_but_damage_is_logged(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    root: Path = live.root  # type: ignore[attr-defined]
    (root / "plain-group").mkdir()
    (root / "plain-group" / "zarr.json").write_text('{"node_type": "group", "attributes": {}}')
    (root / "lost-root").mkdir()
    (root / "lost-root" / "_distill").mkdir()  # bookkeeping without zarr.json: a damaged store
    with caplog.at_level("WARNING", logger="distill.api"):
        stores = {
            s["name"]: s for s in requests.get(f"{live.url}/v1/stores", timeout=10).json()["stores"]
        }
    assert "plain-group" not in stores
    assert stores["lost-root"]["state"] == "invalid"
    assert "zarr.json is missing" in stores["lost-root"]["error"]
    assert any("lost-root" in r.getMessage() for r in caplog.records)


def _unit_record(how: str) -> Damage:
    def damage(store: Path) -> None:
        rec = store / "_distill/shards/0.0.json"
        rec.write_bytes(b"\x00garbage{" if how == "garbage" else rec.read_bytes()[:7])

    return damage


@pytest.mark.reliability
@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_damaged_unit_record(live: LiveServer, pristine: Path, how: str) -> None:
    """Unit records are the writer's progress notes; a finished store is defined by its
    manifest, which checks every file: a bad unit record changes nothing that is served (at
    start, via a restart, and while serving). An unfinished store with one stays unfinished
    (409 for its data; ``distill generate`` redoes an unreadable record's unit)."""
    from api.main import create_app
    from api.settings import Settings

    root: Path = live.root  # type: ignore[attr-defined]
    store = copy_store(pristine, root / f"unit-{how}")
    assert _lost(live, pristine, f"unit-{how}") == 0
    _unit_record(how)(store)  # while serving
    lost = _lost(live, pristine, f"unit-{how}")
    partial = root / f"partial-unit-{how}"
    build_store(partial, make_attrs(64, views=2, topk=3, chunk=16, shard=32), seed=5, units=1)
    _unit_record(how)(partial)
    with LiveServer(create_app(Settings(root=root, rescan_interval_s=0.0))) as fresh:  # at start
        lost += _lost(fresh, pristine, f"unit-{how}")
        listed = requests.get(f"{fresh.url}/v1/stores/partial-unit-{how}", timeout=10).json()
        assert listed["state"] == "incomplete"
        r = requests.get(
            f"{fresh.url}/v1/stores/partial-unit-{how}/blocks/0?start=0&stop=4", timeout=10
        )
        assert r.status_code == 409 and r.json()["error"] == "store_incomplete"
        lost += _lost(fresh, pristine)
    record("damaged store files, unit records", faults_survived=2, inputs_tried=2, data_lost=lost)
    assert lost == 0
    shutil.rmtree(partial)


def test_damage_found_on_a_replaced_store_spares_the_new_one(
    tmp_path: Path, pristine: Path
) -> None:
    """A request that read the old store (before a rescan replaced it) and found a file damaged
    must not mark the new store under the same name; on the current store it does."""
    from api.registry import Registry

    copy_store(pristine, tmp_path / "s")
    reg = Registry(tmp_path, rescan_interval_s=0.0)
    reg.scan()
    old = reg.get("s")
    assert old is not None and old.state == "complete"
    shutil.rmtree(tmp_path / "s")
    build_store(tmp_path / "s", make_attrs(64, views=2, topk=3, chunk=16, shard=32), seed=9)
    reg.scan()
    new = reg.get("s")
    assert new is not None and new is not old and new.uid != old.uid
    reg.mark_damaged(old, SHARD, "found damaged by a request on the old store")
    assert new.state == "complete" and new.error is None
    reg.mark_damaged(new, SHARD, f"store 's' is damaged: {SHARD} fails its crc32c checksum")
    assert new.state == "invalid" and SHARD in (new.error or "") and new.code == "store_damaged"


def test_class_ids_outside_the_classes_are_refused(live: LiveServer, pristine: Path) -> None:
    """A store whose files and digests agree but whose ids reach num_classes (bytes this code
    never writes) is refused where ids are decoded: its block answers 409 naming the array,
    the client raises one line, and nothing is served as targets (the other blocks still are)."""
    from teacher_store.client import StoreClient, StoreClientError

    root: Path = live.root  # type: ignore[attr-defined]
    classes = LocalStore(pristine).attrs.num_classes
    plant_class_id(copy_store(pristine, root / "bad-ids"), classes, slot=1, sample=5)
    base = f"{live.url}/v1/stores/bad-ids"
    r = requests.get(f"{base}/blocks/1?start=0&stop=16", timeout=10)
    assert r.status_code == 409 and r.json()["error"] == "store_damaged", r.text
    detail = r.json()["detail"]
    assert f"class id {classes}" in detail and "view slot 1, sample 5" in detail
    assert "\n" not in detail
    assert requests.get(f"{base}/blocks/0?start=0&stop=16", timeout=10).status_code == 200
    with pytest.raises(StoreClientError) as err:
        StoreClient(base, prefetch=0).read_block(1, 0, 16)
    assert f"class id {classes}" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=f"class id {classes} at view slot 1, sample 5"):
        LocalStore(root / "bad-ids").read_block(1, 0, 16)


def test_identity_and_etags_cover_the_metadata(live: LiveServer, pristine: Path) -> None:
    """Two finished stores with the same shard bytes but different attrs (one re-finished
    after its temperature changed) have different identities, block identity headers and
    ETags: a browser holding the old tag never gets a 304 for the other store."""
    from teacher_store.store.arrays import finalize, shard_units
    from teacher_store.store.blockfmt import IDENTITY_HEADER

    root: Path = live.root  # type: ignore[attr-defined]
    copy_store(pristine, root / "same-a")
    other = copy_store(pristine, root / "same-b")
    _edit_json(other / "zarr.json", lambda d: d["attributes"].__setitem__("temperature", 2.0))
    finalize(other, shard_units(LocalStore(pristine).attrs))  # the same units: only T differs
    assert (other / SHARD).read_bytes() == (pristine / SHARD).read_bytes()
    urls = [f"{live.url}/v1/stores/same-{x}" for x in "ab"]
    ids = [requests.get(u, timeout=10).json()["identity"] for u in urls]
    assert ids[0] and ids[1] and ids[0] != ids[1]
    blocks = [requests.get(f"{u}/blocks/0?start=0&stop=4", timeout=10) for u in urls]
    assert [b.headers[IDENTITY_HEADER] for b in blocks] == ids
    tags = [requests.get(f"{u}/zarr/{SHARD}", timeout=10).headers["ETag"] for u in urls]
    assert tags[0] != tags[1]
    again = requests.get(f"{urls[1]}/zarr/{SHARD}", headers={"If-None-Match": tags[0]}, timeout=10)
    assert again.status_code == 200


def test_a_store_finished_before_metadata_digests_is_served_with_a_note(
    live: LiveServer, pristine: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stores whose manifest predates the metadata digests stay readable (their other checks
    apply); the service logs one line saying edits of their attrs cannot be detected."""
    root: Path = live.root  # type: ignore[attr-defined]
    old = copy_store(pristine, root / "older")
    _edit_json(old / MANIFEST, lambda d: d.pop("meta"))
    with caplog.at_level("WARNING", logger="distill.api"):
        d = requests.get(f"{live.url}/v1/stores/older", timeout=10).json()
    assert d["state"] == "complete"
    notes = [r.getMessage() for r in caplog.records if "metadata digests" in r.getMessage()]
    assert notes and "'older'" in notes[0] and "re-run the same `distill generate`" in notes[0]
    assert _lost(live, pristine, "older") == 0
