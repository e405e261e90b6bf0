"""`distill info` on real stores (real photos, real Lite0 teacher, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.errors import StoreDamaged
from teacher_store.info import format_info, store_info
from teacher_store.store.arrays import BOOK
from teacher_store.verify import verify_store
from tests.meta_edits import ATTR_EDITS, GENERATED_EDITS, one_line
from tests.store_fixtures import copy_store

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py


def _copy(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "copy")


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
    assert info["bad_samples"] == [] and info["value_encoding"] == "prob-u8"  # v2's at K=5
    assert info["tinyvit_bytes_per_view"] == 24 and info["layout"]["id_order"] == "head-sorted-pad"
    assert info["layout"]["class_order"] == "teacher"
    text = format_info(info)
    assert "entries in head-sorted-pad order (teacher)" in text
    assert "complete (6 shard units)" in text and "B per view" in text
    assert "TinyViT's layout: 24 B per view (4 + 4K)" in text
    assert 0 < info["encoding_kl"] < 0.05  # recorded at generation (prob-u8 at K=5, 64 px)
    assert f"KL vs float32 top-K +{info['encoding_kl']:.4f} nats/view" in text
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


def test_info_cli_paths(store, tmp_path, capsys):
    assert main(["info", str(store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["complete"] is True
    missing = str(tmp_path / "nope")
    assert main(["info", missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a store" in err and "Traceback" not in err


EDITS = {**ATTR_EDITS, **GENERATED_EDITS}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_info_refuses_invalid_metadata_in_one_line(store, tmp_path, capsys, name):
    """Attrs failing the schema, contradicting the arrays, or edited after the store was
    finished: exit 2 and one line naming the store and the file, never a believed summary."""
    edit, file = EDITS[name]
    bad = copy_store(store, tmp_path / name)
    edit(bad)
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"store {bad}: {file} " in err, err
    with pytest.raises(StoreDamaged) as e:
        store_info(str(bad))
    assert e.value.file == file


def test_info_notes_a_store_finished_before_metadata_digests(store, tmp_path, capsys):
    """Older stores (manifest without metadata digests) are described, with one line saying
    that an edit of their attrs cannot be detected and how to record the digests."""
    old = copy_store(store, tmp_path / "old")
    manifest = old / BOOK / "manifest.json"
    manifest.write_text(
        json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "meta"})
    )
    assert store_info(str(store))["metadata_digests"] is True
    info = store_info(str(old))
    assert info["complete"] and info["metadata_digests"] is False
    assert main(["info", str(old)]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "metadata digests" in line]
    assert len(notes) == 1 and "re-run the same `distill generate`" in notes[0]
