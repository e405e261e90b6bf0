"""`distill copy`: real stores (demo photos, Lite0, CPU), a real service, moto's S3.

The source has 5 view slots at K=10 (one slot per shard unit, 15 units). A copy of slots 2:5 at
K=5 is compared with a store generated at K=5 from the start: slot r of a store's views is a
pure function of (store seed, r, sample), so the copy's slots 0..2 must equal the fresh
store's slots 2..4 wherever that is exact (see the test).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teacher_store.cli import main
from teacher_store.copy_source import SourceChangedError
from teacher_store.errors import StoreDamaged
from teacher_store.images.dataset import ImageFolder
from teacher_store.info import store_info
from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import store_identity
from teacher_store.store.layout import MANIFEST, SHARDS, FileRecord, is_temporary
from teacher_store.store.schema import CopiedFrom
from teacher_store.store_copy import CopyConfig, run_copy
from teacher_store.verify import verify_store
from teacher_store.views.replay import Replayer
from tests.store_fixtures import LiveServer, build_store, file_digests, generate_small, make_attrs

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
GEOMETRY = {"views": 5, "shard_views": 1}  # 5 slots, one per unit: 15 units of 17 samples


@pytest.fixture(scope="module")
def stores(one_thread, tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Any:
    """root/src (K=10) and ref (K=5, same config otherwise), generated once."""
    base = tmp_path_factory.mktemp("copy")
    (base / "root").mkdir()
    src = generate_small(demo_data, base / "root" / "src", topk=10, **GEOMETRY)
    ref = generate_small(demo_data, base / "ref", topk=5, **GEOMETRY)
    return src, ref


def _identity(store: Path) -> str:
    return store_identity((store / MANIFEST).read_bytes())


def _copy(src: str, dst: Any, **kw: Any) -> dict[str, Any]:
    return run_copy(CopyConfig(src=src, dst=str(dst), progress=False, **kw))


def _serve(root: Path) -> LiveServer:
    from api.main import create_app
    from api.settings import Settings

    return LiveServer(create_app(Settings(root=root, rescan_interval_s=0.0)))


def test_a_slot_range_at_smaller_k_from_the_service_equals_a_fresh_store(
    stores: Any, demo_data: Path, tmp_path: Path
) -> None:
    src, ref = stores
    with _serve(src.parent) as live:
        url = f"{live.url}/v1/stores/src"
        s = _copy(url, tmp_path / "copy", slots=(2, 5), topk=5)
    assert (s["units"], s["units_byte_copied"], s["topk"]) == (9, 0, [10, 5])
    assert s["topk_kl"] > 0 and s["encoding_kl"] == 0.0  # the smaller K costs, u8 -> u8 not
    copy, fresh, source = LocalStore(tmp_path / "copy"), LocalStore(ref), LocalStore(src)
    a = copy.attrs
    assert (a.views, a.topk, a.first_slot, a.schedule_views) == (3, 5, 2, 5)
    origin = CopiedFrom.from_dict(a.copied_from or {})
    assert (origin.identity, origin.address, origin.slots) == (_identity(src), url, [2, 5])
    assert (origin.topk, origin.views, origin.batches_kept) == (10, 5, True)
    for r in range(3):
        got, want = copy.read_block(r, 0, 17), fresh.read_block(r + 2, 0, 17)
        big = source.read_block(r + 2, 0, 17)  # the source's top-10 of the same views
        assert (got.valid == want.valid).all()
        assert (got.ids[:, 0] == want.ids[:, 0]).all()  # top-1: exact
        assert (got.values == want.values).all()  # the 5 largest values, exactly
        # Ids are exact except where the encoding cannot order them: a value tied with the
        # source's 6th (decoded in class-id order; the teacher ranked them by float), or 0
        # (an entry that names no class: its id is filled in when decoded).
        exact = got.values > big.values[:, 5:6]
        assert (got.ids[exact] == want.ids[exact]).all()
        assert exact[:, :3].mean() > 0.8  # most entries: small-valued tails tie often
    # The copy's slot r replays the source's slot 2 + r: same seeds, crops, partners.
    folder = ImageFolder.scan(demo_data)
    mine, theirs = Replayer(folder, a), Replayer(folder, source.attrs)
    assert all(mine.params(r, i) == theirs.params(r + 2, i) for r in range(3) for i in range(17))
    assert mine.params(0, 3) != theirs.params(0, 3)
    report = verify_store(str(tmp_path / "copy"), str(demo_data), fraction=0.3)
    assert report.ok, report.reason  # the copy's own teacher spot check, on slots 2..4
    info = store_info(str(tmp_path / "copy"))
    assert info["copied_from"]["topk_kl"] == pytest.approx(s["topk_kl"])
    assert [st["slots"] for st in info["recipe"]["schedule"]] == [[0, 2]]


def test_a_whole_copy_is_the_source_byte_for_byte_with_its_origin(
    stores: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = stores
    assert main(["copy", str(src), str(tmp_path / "whole"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "15 shard units written (15 byte for byte)" in out and "+0.0000 nats" in out
    theirs, mine = file_digests(src), file_digests(tmp_path / "whole")
    shards = [k for k in theirs if not k.startswith("_distill") and not k.endswith("zarr.json")]
    assert len(shards) == 45 and all(mine[k] == theirs[k] for k in shards)
    copy = LocalStore(tmp_path / "whole")
    assert copy.attrs.copied_from is not None and copy.attrs.copied_from["slots"] == [0, 5]
    assert (copy.attrs.slot_offset, copy.attrs.slot_span) == (None, None)
    assert _identity(tmp_path / "whole") != _identity(src)  # its attrs say what it is
    assert verify_store(str(tmp_path / "whole"), None).ok
    info = store_info(str(tmp_path / "whole"))
    assert info["copied_from"]["kl_vs_float_topk"] == pytest.approx(
        store_info(str(src))["encoding_kl"]
    )


def test_top_k2_keeps_the_largest_and_another_encoding_records_its_cost(tmp_path: Path) -> None:
    """Synthetic float16 targets: top-3 of top-5 are the first 3 entries, exactly; prob-u8
    costs a KL the copy computes, records and `info` shows."""
    attrs = make_attrs(300, views=3, topk=5, num_classes=50, chunk=64, shard=128, shard_views=2)
    src = build_store(tmp_path / "src", attrs, seed=3)
    s = _copy(str(src), tmp_path / "k3", topk=3)
    a, b = LocalStore(src), LocalStore(tmp_path / "k3")
    for r in range(3):
        x, y = a.read_block(r, 0, 300), b.read_block(r, 0, 300)
        ok = x.valid  # ~5% invalid views: their entries are fill values in the copy
        assert (y.valid == ok).all() and (~ok).sum() > 0 and (y.values[~ok] == 0).all()
        assert (y.ids[ok] == x.ids[ok, :3]).all() and (y.values[ok] == x.values[ok, :3]).all()
    assert s["topk_kl"] > 0.01
    s2 = _copy(str(src), tmp_path / "u8", encoding="prob-u8", slots=(1, 3))
    assert s2["encoding_kl"] > 0 and s2["topk_kl"] == 0.0
    y = LocalStore(tmp_path / "u8").read_block(0, 0, 300)
    x = a.read_block(1, 0, 300)
    ok = y.valid
    assert (np.abs(np.exp(y.logprobs()[ok]) - np.exp(x.logprobs()[ok])) <= 1 / 510 + 1e-6).all()
    info = store_info(str(tmp_path / "u8"))
    assert info["copied_from"]["encoding_kl_added"] == pytest.approx(s2["encoding_kl"])
    assert info["value_encoding"] == "prob-u8" and info["views"] == 2


def test_another_encoding_keeps_zeros_unknown_and_verifies_with_both_roundings(
    stores: Any, demo_data: Path, tmp_path: Path
) -> None:
    """prob-u8 -> logprob-f16: an entry the source rounded to 0 names no class; it stays
    -inf (the loss's rest mass), never a class given p = 0; verify allows both roundings."""
    src, _ = stores
    s = _copy(str(src), tmp_path / "f16", slots=(3, 5), encoding="logprob-f16")
    assert s["value_encoding"] == ["prob-u8", "logprob-f16"] and s["encoding_kl"] >= 0
    a, b = LocalStore(src), LocalStore(tmp_path / "f16")
    zeros = 0
    for r in range(2):
        x, y = a.read_block(r + 3, 0, 17), b.read_block(r, 0, 17)
        ok, gone = x.valid, x.values == 0  # [n], [n, K]: entries the source rounded to p = 0
        zeros += int(gone[ok].sum())
        assert np.isneginf(y.logprobs()[ok][gone[ok]]).all()
        lx = x.logprobs()[ok].astype(np.float64)
        px, py = np.exp(lx), np.exp(y.logprobs()[ok].astype(np.float64))
        # float16 holds log(q/255) to half an ulp: |Δ log p| <= 2^-11 |log p|
        half_ulp = np.where(np.isfinite(lx), np.abs(lx), 0.0) * 2.0**-11
        assert (np.abs(px - py) <= px * np.expm1(half_ulp) + 1e-9).all()
        assert (y.ids[ok][~gone[ok]] == x.ids[ok][~gone[ok]]).all()
    assert zeros > 0  # the case was exercised
    report = verify_store(str(tmp_path / "f16"), str(demo_data), fraction=0.5)
    assert report.ok and "prob-u8 + logprob-f16" in report.summary, report.reason


def test_files_the_manifest_lists_beside_the_units_are_copied_checked(tmp_path: Path) -> None:
    """A store-wide file the source's manifest lists (not a shard of any unit) travels with
    the copy, checked against its record like a shard; a damaged one stops the copy."""
    attrs = make_attrs(200, views=2, topk=3, chunk=64, shard=128, shard_views=1)
    src = build_store(tmp_path / "src", attrs)
    extra = b"per-sample records " * 50
    (src / "_distill" / "side.bin").write_bytes(extra)
    manifest = json.loads((src / MANIFEST).read_text())
    manifest["files"]["_distill/side.bin"] = FileRecord.of(extra).to_dict()
    (src / MANIFEST).write_text(json.dumps(manifest))
    _copy(str(src), tmp_path / "a")
    assert (tmp_path / "a" / "_distill" / "side.bin").read_bytes() == extra
    (src / "_distill" / "side.bin").write_bytes(extra[::-1])
    with pytest.raises(StoreDamaged, match=r"side\.bin fails its"):
        _copy(str(src), tmp_path / "b")


def test_a_source_changed_mid_copy_is_refused_in_one_line(stores: Any, tmp_path: Path) -> None:
    src, ref = stores
    here = shutil.copytree(src, tmp_path / "root" / "src")
    other = shutil.copytree(ref, tmp_path / "other")

    def swap(done: int, total: int) -> None:
        if done == 2:  # two units committed: replace the source by another store
            os.rename(here, tmp_path / "old")
            os.rename(other, here)

    with pytest.raises(SourceChangedError) as err:
        run_copy(CopyConfig(src=str(here), dst=str(tmp_path / "a"), progress=False), swap)
    msg = str(err.value)
    assert (
        "\n" not in msg and "changed during the copy" in msg and isinstance(err.value, ValueError)
    )
    assert not (tmp_path / "a" / MANIFEST).exists()  # never finished from two stores
    # Re-running the same copy now would mix two stores: refused in one line, exit 2.
    assert main(["copy", str(here), str(tmp_path / "a"), "--quiet"]) == 2
    # Through the service: the served store is replaced while the copy reads it.
    os.rename(here, tmp_path / "other2")
    os.rename(tmp_path / "old", here)
    with _serve(tmp_path / "root") as live:
        url = f"{live.url}/v1/stores/src"

        def swap_served(done: int, total: int) -> None:
            if done == 2:
                os.rename(here, tmp_path / "old2")
                os.rename(tmp_path / "other2", here)

        with pytest.raises(SourceChangedError) as err:
            run_copy(CopyConfig(src=url, dst=str(tmp_path / "b"), progress=False), swap_served)
    assert "\n" not in str(err.value) and url in str(err.value)


def test_bad_options_are_one_line_errors(
    stores: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = stores
    cases = [
        (["--slots", "3:9"], "--slots 3:9 is not a slot range"),
        (["--slots", "4:2"], "--slots 4:2 is not a slot range"),
        (["--slots", "x"], "want A:B"),
        (["--topk", "20"], "exceeds the source's top-10"),
        (["--topk", "0"], "--topk"),
        (["--workers", "0"], "--workers"),
    ]
    for extra, words in cases:
        assert main(["copy", str(src), str(tmp_path / "x"), "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err
        assert not (tmp_path / "x").exists()  # nothing created on bad input
    assert main(["copy", str(src), str(src / "inner"), "--quiet"]) == 2
    assert "overlaps the source" in capsys.readouterr().err
    assert main(["copy", str(tmp_path / "none"), str(tmp_path / "y"), "--quiet"]) == 2
    assert "is not a store" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# killed mid-copy, then resumed: the same store as an uninterrupted copy


def _kill_at(point: str, src: str, dst: str, extra: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISTILL_CRASH_AT": point}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [str(BIN / "distill"), "copy", src, dst, "--quiet", "--workers", "1", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])


def _records(keys: list[str]) -> int:
    return sum(
        1 for k in keys if k.startswith(f"{SHARDS}/") and not is_temporary(k.rsplit("/", 1)[-1])
    )


@pytest.mark.parametrize("extra", [[], ["--slots", "1:4", "--topk", "4"]], ids=["whole", "part"])
def test_killed_mid_copy_resumes_to_the_same_store(
    stores: Any, tmp_path: Path, extra: list[str]
) -> None:
    src, _ = stores
    assert main(["copy", str(src), str(tmp_path / "ref"), "--quiet", *extra]) == 0
    _kill_at("record-written:3", str(src), str(tmp_path / "cut"), extra)
    left = file_digests(tmp_path / "cut")
    assert MANIFEST not in left and _records(list(left)) == 3
    assert main(["copy", str(src), str(tmp_path / "cut"), "--quiet", *extra]) == 0
    assert file_digests(tmp_path / "cut") == file_digests(tmp_path / "ref")


def test_copy_between_s3_prefixes_killed_and_resumed(
    stores: Any, s3_server: Any, tmp_path: Path
) -> None:
    src, _ = stores
    s3_src = s3_server.url("copy-src")
    fs = s3_server.fs()
    for f in sorted(p for p in src.rglob("*") if p.is_file()):  # the store's files, as they are
        fs.pipe_file(
            f"{s3_src.removeprefix('s3://')}/{f.relative_to(src).as_posix()}", f.read_bytes()
        )
    dst, ref = s3_server.url("copy-dst"), s3_server.url("copy-ref")
    extra = ["--slots", "2:5", "--topk", "5"]
    assert main(["copy", s3_src, ref, "--quiet", *extra]) == 0
    _kill_at("shard-written:7", s3_src, dst, extra)  # in the 3rd unit's files
    assert _records(list(s3_server.objects(dst))) == 2
    assert main(["copy", s3_src, dst, "--quiet", *extra]) == 0
    got, want = s3_server.objects(dst), s3_server.objects(ref)
    assert got == want and MANIFEST in got
    local = tmp_path / "local"
    assert main(["copy", dst, str(local), "--quiet"]) == 0  # and back to a folder
    assert LocalStore(local).attrs.first_slot == 2  # a copy of a copy keeps the views' slots
