"""`distill info`, `verify` and `show` on real stores (real photos, real Lite0 teacher, CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from teacher_store.cli import main
from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.inspection import format_info, show_view, store_info, unit_batches, verify_store
from teacher_store.store import BOOK, LocalStore, shard_units
from tests.store_fixtures import SMALL_GENERATE

SMALL = SMALL_GENERATE


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread here: on 2 busy cores, 2 threads can run the teacher 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _generate(data: Path, out: Path, **kw: object) -> Path:
    run_generate(GenerateConfig(data=str(data), out=str(out), **{**SMALL, **kw}))  # type: ignore[arg-type]
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    return _generate(demo_data, tmp_path_factory.mktemp("insp") / "store")


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> tuple[Path, Path]:
    """(data with an unreadable cat/broken.jpg, its store)."""
    root = tmp_path_factory.mktemp("broken")
    data = root / "data"
    shutil.copytree(demo_data, data)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 20)
    return data, _generate(data, root / "store")


def _copy(store: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(store, out)
    return out


# -- info ------------------------------------------------------------------------------------


def test_info_on_a_complete_store(store):
    info = store_info(str(store))
    json.dumps(info)  # JSON-safe
    assert info["complete"] and (info["units_committed"], info["units_total"]) == (6, 6)
    assert (info["views"], info["samples"], info["topk"], info["num_classes"]) == (2, 17, 5, 1000)
    assert info["views_written"] == 34
    data = sum(info["data_bytes_per_array"].values())
    assert info["bytes_per_view"] == pytest.approx(data / 34)
    assert 0 < data < info["bytes_on_disk"]
    assert info["teacher"]["name"] == "efficientnet_lite0"
    assert info["teacher"]["input_size"] == [3, 64, 64]
    assert len(info["teacher"]["weights_sha256"]) == 64
    assert info["recipe"]["name"] == "default"
    assert [s["slots"] for s in info["recipe"]["schedule"]] == [[0, 1]]
    assert info["dataset"]["num_samples"] == 17 and info["dataset"]["classes"] == 8
    assert info["bad_samples"] == [] and info["value_encoding"] == "logprob-f16"
    text = format_info(info)
    assert "complete (6 shard units)" in text and "B per view" in text
    assert "efficientnet_lite0" in text and "RandAugment n=2" in text


def test_info_on_an_unfinished_store(store, tmp_path, capsys):
    out = _copy(store, tmp_path)
    (out / BOOK / "manifest.json").unlink()
    for name in ("0.2", "1.2"):
        (out / BOOK / "shards" / f"{name}.json").unlink()
    info = store_info(str(out))
    assert not info["complete"] and (info["units_committed"], info["units_total"]) == (4, 6)
    assert info["views_written"] == 2 * 8 * 2
    assert "UNFINISHED (4/6 shard units committed)" in format_info(info)
    assert main(["info", str(out)]) == 0
    assert "UNFINISHED" in capsys.readouterr().out
    report = verify_store(str(out), "unused", fraction=0.0)
    assert not report.ok
    assert report.reason == (
        "incomplete: 4/6 shard units committed; re-run the same distill generate"
    )


def test_info_lists_bad_samples(broken):
    _, out = broken
    info = store_info(str(out))
    assert [b["path"] for b in info["bad_samples"]] == ["cat/broken.jpg"]
    assert "cat/broken.jpg" in format_info(info)


# -- verify ----------------------------------------------------------------------------------


def test_verify_ok_reruns_the_teacher_on_the_stored_batches(store, demo_data):
    report = verify_store(str(store), str(demo_data), fraction=1.0, device="cpu")
    assert report.ok, report.reason
    assert "18 shard files match" in report.summary
    assert "10 of 10 teacher batches (34 views)" in report.summary
    assert "top-K ids equal" in report.summary


def test_verify_ok_on_a_prob_u8_store(demo_data, tmp_path):
    out = _generate(demo_data, tmp_path / "u8", value_encoding="prob-u8", views=1)
    report = verify_store(str(out), str(demo_data), fraction=1.0, device="cpu")
    assert report.ok, report.reason
    assert "values within the prob-u8 error" in report.summary


def test_unit_batches_follow_generate_order(store):
    s = LocalStore(store)
    unit = shard_units(s.attrs)[0]  # slot 0, samples 0..7
    valid = s.group["valid"][0:1, 0:8] != 0
    batches = unit_batches(unit, valid, 4)
    assert batches == [[(0, i) for i in range(4)], [(0, i) for i in range(4, 8)]]
    valid[0, 1] = False
    assert unit_batches(unit, valid, 4)[0] == [(0, 0), (0, 2), (0, 3), (0, 4)]


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


# -- show ------------------------------------------------------------------------------------


def test_show_writes_the_view_and_the_top5(store, demo_data, tmp_path):
    png = tmp_path / "view.png"
    top = show_view(str(store), str(demo_data), sample=3, view=1, out=str(png))
    assert len(top) == 5
    names = LocalStore(store).attrs.teacher["class_names"]
    assert all(isinstance(n, str) and n in names for n, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-3
    with Image.open(png) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 224 + 300 <= w <= 2000 and 224 <= h <= 1000  # view (upscaled to >= 224) + text
    top300 = show_view(str(store), str(demo_data), 3, 1, str(tmp_path / "v300.png"), size=300)
    assert top300 == top
    with Image.open(tmp_path / "v300.png") as im:
        assert im.size[1] == 300


def test_show_bounds_and_unreadable_views(store, broken, demo_data, tmp_path):
    out = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="out of range"):
        show_view(str(store), str(demo_data), sample=17, view=0, out=out)
    with pytest.raises(ValueError, match="out of range"):
        show_view(str(store), str(demo_data), sample=0, view=2, out=out)
    data, bstore = broken
    bad = json.loads((bstore / BOOK / "manifest.json").read_text())["bad_samples"][0]["sample"]
    with pytest.raises(ValueError, match="unreadable"):
        show_view(str(bstore), str(data), sample=bad, view=0, out=out)


# -- CLI -------------------------------------------------------------------------------------


def test_cli_paths(store, demo_data, tmp_path, capsys):
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    assert main(["verify", str(store), "--data", str(demo_data)]) == 0
    assert "OK (" in capsys.readouterr().out
    png = tmp_path / "v.png"
    args = ["show", str(store), "--data", str(demo_data), "--sample", "0", "--view", "0"]
    assert main([*args, "--out", str(png)]) == 0
    assert png.is_file() and capsys.readouterr().out.count("\n") == 6

    missing = str(tmp_path / "nope")
    assert main(["info", missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a store" in err and "Traceback" not in err
    assert main(["verify", missing, "--data", str(demo_data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("distill verify: FAILED:") and err.count("\n") == 1
    args = ["show", str(store), "--data", str(demo_data), "--sample", "99", "--view", "0"]
    assert main([*args, "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["verify", str(store), "--data", str(demo_data), "--fraction", "2"]) == 2
    assert "--fraction" in capsys.readouterr().err


def test_verify_catches_a_swapped_shard_of_the_same_layout(tmp_path, demo_data):
    """Two shards with the same segment lengths share a whole-file crc32c; sha256 tells them
    apart, so a swapped shard is caught even though every crc32c still matches."""
    import json
    import shutil

    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.inspection import verify_store

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
