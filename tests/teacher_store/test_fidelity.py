"""`distill verify --record`: a fidelity record beside the store that names the identity it
checked and never changes it (real store of the demo photos, real Lite0 re-run, CPU)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.fidelity import FidelityRecord, fidelity_status
from teacher_store.info import store_info
from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import store_identity
from teacher_store.store.layout import FIDELITY, MANIFEST
from tests.store_fixtures import copy_store, file_digests, generate_small

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py


@pytest.fixture(scope="module")
def recorded(
    store: Path, demo_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str], str]:
    """A copy of the module's store after `verify --record`, its files before, the output."""
    path = copy_store(store, tmp_path_factory.mktemp("fid") / "store")
    before = file_digests(path)
    args = ["verify", str(path), "--data", str(demo_data), "--fraction", "0.5", "--record"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return path, before, out.getvalue()


def _identity(store: Path) -> str:
    return store_identity((store / MANIFEST).read_bytes())


def test_record_holds_what_was_measured_and_names_the_identity(recorded) -> None:
    path, _, out = recorded
    rec = FidelityRecord.from_dict(json.loads((path / FIDELITY).read_text()))
    assert rec.store_identity == _identity(path) and rec.ok and rec.version == 1
    assert rec.teacher_weights_sha256 == LocalStore(path).attrs.teacher["weights_sha256"]
    assert rec.views_total == 34 and 0 < rec.views_rerun < 34
    assert rec.fraction_rerun == pytest.approx(rec.views_rerun / 34)
    assert rec.ids_agreement == 1.0 and rec.top1_agreement == 1.0  # same device, same batches
    assert 0 < rec.max_dp <= 1 / 510 + 1e-5 and rec.kl > 0 and rec.tolerance == "same-device"
    assert rec.date.endswith("Z") and rec.device == "cpu"
    assert f"store identity {rec.store_identity}" in out


def test_recording_changes_no_file_of_the_store_and_not_its_identity(recorded) -> None:
    path, before, _ = recorded
    after = file_digests(path)
    assert set(after) - set(before) == {FIDELITY}
    assert all(after[k] == v for k, v in before.items())  # manifest, attrs, shards: untouched
    manifest = json.loads((path / MANIFEST).read_text())
    assert FIDELITY not in json.dumps(manifest)  # the manifest does not list the record
    # Readers still accept the store as it was: its metadata digests (which the manifest
    # records) and its identity hold with the record beside them.
    opened = LocalStore(path)
    assert opened.complete and opened.checked.meta_recorded
    assert opened.checked.identity == store_identity((path / MANIFEST).read_bytes())


def test_info_shows_the_record_current_then_stale(recorded, tmp_path: Path, capsys) -> None:
    path, _, _ = recorded
    info = store_info(str(path))
    assert info["fidelity"]["state"] == "current"
    assert info["fidelity"]["record"]["store_identity"] == _identity(path)
    assert main(["info", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  fidelity"))
    assert "passed on" in line and "ids agreement 1.000" in line and "STALE" not in line
    # The same record beside another store (a regenerated one at this address): stale.
    other = copy_store(path, tmp_path / "other")
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["bad_samples"] = [{"sample": 0, "path": "x", "error": "y"}]  # another identity
    (other / MANIFEST).write_text(json.dumps(manifest))
    status = fidelity_status(str(other))
    assert status is not None and status.state == "stale"
    assert status.identity == _identity(other) != status.record.store_identity  # type: ignore[union-attr]
    assert main(["info", str(other)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  fidelity"))
    assert line.startswith("  fidelity  STALE (recorded for store identity")


def test_a_broken_record_is_shown_invalid_and_the_store_stays_usable(
    recorded, tmp_path: Path, capsys
) -> None:
    path, _, _ = recorded
    other = copy_store(path, tmp_path / "broken")
    for junk in (b"{not json", b'{"kind": "distill-fidelity-record", "version": 9}'):
        (other / FIDELITY).write_bytes(junk)
        assert main(["info", str(other)]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  fidelity"))
        assert line.startswith("  fidelity  INVALID: _distill/fidelity.json")
    (other / FIDELITY).unlink()
    assert store_info(str(other))["fidelity"] is None


def test_record_refused_without_a_spot_check_and_not_written_on_failure(
    store: Path, demo_data: Path, tmp_path: Path, capsys
) -> None:
    path = copy_store(store, tmp_path / "s")
    assert main(["verify", str(path), "--checksums-only", "--record"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--record records a teacher spot check" in err
    args = ["verify", str(path), "--data", str(demo_data), "--fraction", "0", "--record"]
    assert main(args) == 2
    capsys.readouterr()
    shard = next(p for p in sorted((path / "ids").rglob("*")) if p.is_file())
    data = shard.read_bytes()
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # damaged: no spot check runs
    args = ["verify", str(path), "--data", str(demo_data), "--fraction", "0.2", "--record"]
    assert main(args) == 1
    assert "nothing recorded" in capsys.readouterr().err
    assert not (path / FIDELITY).exists()


def test_a_regenerated_store_shows_the_old_record_as_stale(demo_data: Path, tmp_path: Path) -> None:
    """The user's case: record, then regenerate the store in place (--overwrite, new seed)."""
    path = generate_small(demo_data, tmp_path / "s", views=1)
    args = ["verify", str(path), "--data", str(demo_data), "--fraction", "0.3", "--record"]
    assert main(args) == 0
    record = (path / FIDELITY).read_bytes()
    generate_small(demo_data, path, views=1, seed=5, overwrite=True)
    (path / FIDELITY).write_bytes(record)  # --overwrite clears the folder: put it back
    status = fidelity_status(str(path))
    assert status is not None and status.state == "stale"
    shutil.rmtree(path)
