"""`distill verify` on real stores (real photos, real Lite0 teacher, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.images.dataset import ImageFolder
from teacher_store.info import store_info
from teacher_store.store.arrays import BOOK, LocalStore, shard_units
from teacher_store.verify import unit_batches, verify_store
from teacher_store.views.pairing import unit_view_order
from tests.meta_edits import ATTR_EDITS, GENERATED_EDITS, one_line
from tests.store_fixtures import copy_store, generate_small, plant_class_id

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py


def _copy(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "copy")


def test_verify_ok_reruns_the_teacher_on_the_stored_batches(store, demo_data):
    report = verify_store(str(store), str(demo_data), fraction=1.0, device="cpu")
    assert report.ok, report.reason
    assert "18 shard files match their crc32c (and the samples' content digests)" in report.summary
    assert "dataset matches (17 images' content)" in report.summary
    assert "10 of 10 teacher batches (34 views)" in report.summary
    assert "top-K ids equal" in report.summary


def test_verify_ok_on_a_prob_u8_store(demo_data, tmp_path):
    out = generate_small(demo_data, tmp_path / "u8", value_encoding="prob-u8", views=1)
    report = verify_store(str(out), str(demo_data), fraction=1.0, device="cpu")
    assert report.ok, report.reason
    assert "values within the prob-u8 error" in report.summary


def test_unit_batches_follow_generate_order(store):
    s = LocalStore(store)
    a = s.attrs
    assert a.config["view_order"] == "pairs"
    unit = next(u for u in shard_units(a) if (u.slot_start, u.start) == (1, 0))  # 8 samples
    steps = unit_view_order(a.store_seed, a.num_samples, range(1, 2), range(8), "pairs")
    order = [key for step in steps for key in step]
    assert sorted(order) == [(1, i) for i in range(8)] and order != sorted(order)
    valid = s.group["valid"][1:2, 0:8] != 0
    assert unit_batches(unit, valid, a) == [order[:4], order[4:]]
    valid[0, order[1][1]] = False
    assert unit_batches(unit, valid, a)[0] == [order[0], *order[2:5]]
    # a store made before pair order records none: sample-major, as generation then ran it
    old = a.model_copy(update={"config": {k: v for k, v in a.config.items() if k != "view_order"}})
    gone = order[1][1]
    assert unit_batches(unit, valid, old)[0] == [(1, i) for i in range(8) if i != gone][:4]


def test_verify_fails_naming_a_damaged_shard(store, demo_data, tmp_path, capsys):
    out = _copy(store, tmp_path)
    f = out / "values" / "c" / "0" / "1" / "0"
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    report = verify_store(str(out), str(demo_data))
    assert not report.ok
    assert report.reason.startswith("shard values/c/0/1/0 fails its checksum (crc32c ")
    assert "regenerate the store or restore it" in report.reason
    assert main(["verify", str(out), "--data", str(demo_data)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "values/c/0/1/0" in err and "Traceback" not in err


def test_verify_fails_on_a_truncated_shard(store, demo_data, tmp_path):
    out = _copy(store, tmp_path)
    f = out / "ids" / "c" / "1" / "2" / "0"
    f.write_bytes(f.read_bytes()[:-7])
    report = verify_store(str(out), str(demo_data))
    assert not report.ok and "ids/c/1/2/0" in report.reason
    assert store_info(str(out))["complete"]  # info still describes a damaged store


def test_verify_fails_on_a_mismatched_dataset(store, demo_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    shutil.copyfile(data / "cat" / "chelsea.png", data / "cat" / "chelsea2.png")
    report = verify_store(str(store), str(data))
    assert not report.ok
    assert "does not match the store (18 samples instead of 17)" in report.reason
    assert main(["verify", str(store), "--data", str(data)]) == 1
    assert "18 samples instead of 17" in capsys.readouterr().err


def test_verify_spot_check_catches_targets_of_other_views(store, demo_data, tmp_path):
    """Swap view slots 0 and 1 (files and manifest entries): checksums pass, targets do not."""
    out = _copy(store, tmp_path)
    manifest_path = out / BOOK / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for a, b in (("ids/c/0/0/0", "ids/c/1/0/0"), ("values/c/0/0/0", "values/c/1/0/0")):
        fa, fb = out / a, out / b
        da, db = fa.read_bytes(), fb.read_bytes()
        fa.write_bytes(db)
        fb.write_bytes(da)
        manifest["files"][a], manifest["files"][b] = manifest["files"][b], manifest["files"][a]
    manifest_path.write_text(json.dumps(manifest))
    report = verify_store(str(out), str(demo_data), fraction=1.0, device="cpu")
    assert not report.ok
    assert report.reason.startswith("spot check: view ")
    assert "differs from a fresh teacher run" in report.reason and "max |Δp|" in report.reason


def test_verify_refuses_an_unknown_schema_version(store, demo_data, tmp_path):
    out = _copy(store, tmp_path)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 99
    (out / "zarr.json").write_text(json.dumps(meta))
    report = verify_store(str(out), str(demo_data))
    assert not report.ok and "schema version 99" in report.reason


def test_verify_catches_a_swapped_shard_of_the_same_layout(tmp_path, demo_data):
    """Two shards with the same segment lengths share a whole-file crc32c; sha256 tells them
    apart, so a swapped shard is caught even though every crc32c still matches."""
    import json
    import shutil

    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.verify import verify_store

    out = tmp_path / "s"
    cfg = GenerateConfig(
        data=str(demo_data), out=str(out), views=2, topk=5, img_size=64, batch_size=4,
        shard_samples=8, chunk_samples=8, shard_views=1, workers=0, progress=False,
    )  # fmt: skip
    run_generate(cfg)
    files = json.loads((out / "_distill" / "manifest.json").read_text())["files"]
    valid = sorted(k for k in files if k.startswith("valid/") and files[k]["size"])
    pair = next(
        (a, b)
        for i, a in enumerate(valid)
        for b in valid[i + 1 :]
        if files[a]["size"] == files[b]["size"] and files[a]["sha256"] != files[b]["sha256"]
    )
    shutil.copyfile(out / pair[1], out / pair[0])
    report = verify_store(str(out), str(demo_data), fraction=0.01, device="cpu")
    assert not report.ok
    assert pair[0] in report.reason and "sha256" in report.reason


def test_verify_cli_paths(store, demo_data, tmp_path, capsys):
    assert main(["verify", str(store), "--data", str(demo_data)]) == 0
    assert "OK (" in capsys.readouterr().out
    missing = str(tmp_path / "nope")
    assert main(["verify", missing, "--data", str(demo_data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distill verify: FAILED:") and err.count("\n") == 1
    assert main(["verify", str(store), "--data", str(demo_data), "--fraction", "2"]) == 2
    assert "--fraction" in capsys.readouterr().err


def test_checksums_only_checks_the_files_without_data_or_teacher(store, tmp_path, capsys):
    assert main(["verify", "--checksums-only", str(store)]) == 0
    out = capsys.readouterr().out
    assert "18 shard files match" in out and "spot check skipped (--checksums-only)" in out
    copy = _copy(store, tmp_path)
    f = copy / "ids" / "c" / "0" / "0" / "0"
    raw = bytearray(f.read_bytes())
    raw[-5] ^= 0x10
    f.write_bytes(bytes(raw))
    assert main(["verify", "--checksums-only", str(copy)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill verify: FAILED: shard ids/c/0/0/0 fails its")
    assert len(err.splitlines()) == 1
    # Neither --data nor --checksums-only (or both): bad options, one line saying which to pass.
    assert main(["verify", str(store)]) == 2
    assert capsys.readouterr().err.startswith("distill verify: error: pass --data DATA")
    assert main(["verify", str(store), "--data", str(tmp_path), "--checksums-only"]) == 2
    assert "drop --data" in capsys.readouterr().err


def test_verify_names_an_image_replaced_by_one_of_the_same_size(store, replaced, capsys):
    """Checked for every image, whatever --fraction: the fingerprint (names, sizes) matches."""
    data, i = replaced
    path = data / ImageFolder.scan(data).paths[i]
    report = verify_store(str(store), str(data), fraction=0.0)
    assert not report.ok and len(report.reason.splitlines()) == 1
    assert f"image {path} (sample {i}) is not the image the store was built from" in report.reason
    assert main(["verify", str(store), "--data", str(data), "--fraction", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("distill verify: FAILED: ") and f"(sample {i})" in err
    assert len(err.splitlines()) == 1


def test_verify_of_a_damaged_digest_record(store, demo_data, tmp_path):
    copy = _copy(store, tmp_path)
    key = copy / BOOK / "sample_digests.u64"
    raw = bytearray(key.read_bytes())
    raw[0] ^= 1
    key.write_bytes(bytes(raw))  # same size: the manifest's checksums catch it
    report = verify_store(str(copy), str(demo_data), fraction=0.0)
    assert not report.ok and "sample_digests.u64" in report.reason


EDITS = {**ATTR_EDITS, **GENERATED_EDITS}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_verify_reports_invalid_metadata_in_one_line(store, demo_data, tmp_path, capsys, name):
    edit, file = EDITS[name]
    bad = copy_store(store, tmp_path / name)
    edit(bad)
    for args in (["--checksums-only"], ["--data", str(demo_data)]):
        assert main(["verify", str(bad), *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("distill verify: FAILED: ") and one_line(err), err
        assert f"store {bad}: {file} " in err, err


def test_verify_refuses_class_ids_outside_the_classes(store, demo_data, tmp_path, capsys):
    """Every stored id is checked (not only the spot-checked views'): an id at num_classes,
    in a store whose checksums all match, fails verify in one line naming the view."""
    classes = LocalStore(store).attrs.num_classes
    bad = plant_class_id(copy_store(store, tmp_path / "bad"), classes, slot=1, sample=9)
    for args in (["--checksums-only"], ["--data", str(demo_data), "--fraction", "0.01"]):
        assert main(["verify", str(bad), *args]) == 1
        err = capsys.readouterr().err
        assert one_line(err) and f"class id {classes} at view slot 1, sample 9" in err, err


def test_an_older_store_is_verified_with_a_note_and_generate_records_its_digests(
    store, demo_data, tmp_path, capsys
):
    """A store finished before the manifest held metadata digests: verify reports OK with a
    note; re-running the same `distill generate` finishes it again with the digests (and an
    attr edited afterwards is then refused)."""
    old = copy_store(store, tmp_path / "old")
    manifest = old / BOOK / "manifest.json"
    doc = json.loads(manifest.read_text())
    digests = doc.pop("meta")
    manifest.write_text(json.dumps(doc))
    report = verify_store(str(old), None)
    assert report.ok and "metadata digests" in report.summary and "\n" not in report.summary
    generate_small(demo_data, old)
    assert json.loads(manifest.read_text())["meta"] == digests
    assert verify_store(str(old), None).summary == verify_store(str(store), None).summary
    EDITS["store-seed"][0](old)
    assert main(["verify", "--checksums-only", str(old)]) == 1
    assert "zarr.json was changed after the store was finished" in capsys.readouterr().err
