"""Growing a store (`distill generate --views R2` on a store of R slots): only the new views are
computed, no stored value of an existing slot changes, and the result equals a store made with
R2 slots from the start; refusals; a kill mid-growth and a resume, on local disk and S3.

Real teacher (Lite0) on the 17 demo photos at 64 px, K=5 (tests/store_fixtures.SMALL_GENERATE).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from teacher_store.cli import main
from teacher_store.store._faults import ENV
from teacher_store.store.arrays import LocalStore
from teacher_store.store.blockfmt import store_identity
from teacher_store.store.grow import GROWTH, GrowthRefused, begin_growth
from teacher_store.store.layout import MANIFEST, ROOT_META, shard_units
from tests.reliability import full_scale
from tests.s3_fixtures import S3Server, local_objects
from tests.store_fixtures import build_store, copy_store, file_digests, generate_small, make_attrs

pytestmark = pytest.mark.usefixtures("one_thread")
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
DEFAULT_LAYOUT = {"shard_views": None}  # the layout generate picks (slots per shard from R)
MIXED = {"shard_views": 2}  # R=3 -> 4: slots 2..3 share a shard (a mixed unit)


def _arrays(path: Path | str, slots: range) -> list[tuple[np.ndarray, ...]]:
    store = LocalStore(path)
    n = store.attrs.num_samples
    return [(b.ids, b.values, b.valid) for b in (store.read_block(s, 0, n) for s in slots)]


def _shard_keys(path: Path, slot_stop: int) -> set[str]:
    """Zarr keys of the shard units holding only slots below ``slot_stop``."""
    attrs = LocalStore(path).attrs
    return {k for u in shard_units(attrs) if u.slot_stop <= slot_stop for k in u.keys().values()}


def _manifest(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / MANIFEST).read_text()))


@pytest.fixture(scope="module")
def base(one_thread, tmp_path_factory, demo_data) -> dict[str, Path]:
    """2-slot stores: one slot per shard (shard_views 1) and the default layout (2 per shard)."""
    root = tmp_path_factory.mktemp("grow-base")
    return {
        "one": generate_small(demo_data, root / "one"),
        "default": generate_small(demo_data, root / "default", **DEFAULT_LAYOUT),
    }


def test_growth_computes_only_new_views_and_equals_a_store_made_with_them(
    base, demo_data, tmp_path
):
    grown = copy_store(base["one"], tmp_path / "grown")
    before = file_digests(grown)
    identity = store_identity((grown / MANIFEST).read_bytes())
    s = run(demo_data, grown, views=4)
    assert s["complete"] and s["grown_from_views"] == 2
    assert s["views_computed"] == 2 * 17  # the two new slots, nothing else
    assert s["units_skipped"] == 6 and s["units_written"] == 6
    after = file_digests(grown)
    kept = _shard_keys(grown, 2)
    assert kept and {k: after[k] for k in kept} == {k: before[k] for k in kept}
    assert _manifest(grown)["grown_from"] == [{"views": 2, "identity": identity}]
    from teacher_store.info import format_info, store_info

    info = store_info(str(grown))
    assert info["views"] == 4 and info["views_of"]["base_views"] == 2
    assert info["views_of"]["grown_from"] == [{"views": 2, "identity": identity}]
    assert "grown from 2 slots" in format_info(info)
    assert not (grown / GROWTH).exists() and not (grown / "_distill" / "growth").exists()

    fresh = generate_small(demo_data, tmp_path / "fresh", views=4)  # R2 from the start
    for got, want in zip(_arrays(grown, range(4)), _arrays(fresh, range(4)), strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    # Same layout (one slot per shard): the shard files themselves are byte-identical.
    fresh_files = file_digests(fresh)
    shards = _shard_keys(fresh, 4)
    assert {k: after[k] for k in shards} == {k: fresh_files[k] for k in shards}


def test_grown_store_is_byte_identical_to_one_made_with_base_views(base, demo_data, tmp_path):
    """Default layout: the grown store keeps the 2-slot shards; a store made with --views 4
    --base-views 2 has the same layout, and every file but the manifest's lineage is equal."""
    grown = copy_store(base["default"], tmp_path / "grown")
    before = file_digests(grown)
    run(demo_data, grown, views=4, **DEFAULT_LAYOUT)
    pinned = generate_small(demo_data, tmp_path / "pinned", views=4, base_views=2, **DEFAULT_LAYOUT)
    got, want = file_digests(grown), file_digests(pinned)
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if k != MANIFEST} == {
        k: v for k, v in want.items() if k != MANIFEST
    }
    manifest = _manifest(grown)
    assert len(manifest.pop("grown_from")) == 1 and manifest == _manifest(pinned)
    assert all(got[k] == before[k] for k in _shard_keys(grown, 2))
    attrs = LocalStore(grown).attrs
    assert (attrs.views, attrs.base_views, attrs.shard_views) == (4, 2, 2)


@pytest.fixture(scope="module")
def mixed(one_thread, tmp_path_factory, demo_data) -> dict[str, Path]:
    """A 3-slot store with 2 slots per shard (slot 2 shares a shard with the slot 3 a growth
    adds), and that store grown to 4 slots."""
    root = tmp_path_factory.mktemp("grow-mixed")
    r3 = generate_small(demo_data, root / "r3", views=3, **MIXED)
    grown = copy_store(r3, root / "grown")
    run(demo_data, grown, views=4, **MIXED)
    return {"r3": r3, "grown": grown}


def test_mixed_shard_keeps_the_stored_values_of_its_old_slots(mixed, demo_data):
    r3, grown = mixed["r3"], mixed["grown"]
    old, new = file_digests(r3), file_digests(grown)
    untouched = _shard_keys(r3, 2)  # slots 0..1: their shards stay byte-identical
    assert untouched and all(old[k] == new[k] for k in untouched)
    assert new["ids/c/1/0/0"] != old["ids/c/1/0/0"]  # slots 2..3: one shard, rewritten
    for got, want in zip(_arrays(grown, range(3)), _arrays(r3, range(3)), strict=True):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)  # copied, not recomputed
    ids, values, valid = _arrays(grown, range(3, 4))[0]
    assert valid.all() and (ids[:, 0] != ids[:, 1]).all() and values[:, 0].max() > 0
    rec = json.loads((grown / "_distill" / "shards" / "1.0.json").read_text())
    assert rec["slots"] == [2, 4] and not any(k.startswith("_distill") for k in rec["files"])
    from teacher_store.verify import verify_store

    report = verify_store(str(grown), str(demo_data), fraction=0.3)  # the teacher agrees
    assert report.ok, report.reason


def test_growth_keeps_a_staged_recipes_slots_and_extends_its_last_stage(demo_data) -> None:
    """The schedule of a grown store spans its base slots; later slots take the last one's
    knobs, so every existing slot keeps its meaning (a store made with 6 slots would not)."""
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.views.codec import decode
    from teacher_store.views.recipe import get_recipe
    from teacher_store.views.replay import Replayer

    recipe = get_recipe("efficientnetv2-progressive")  # 4 stages
    old = make_attrs(num_samples=17, views=4).model_copy(update={"recipe": recipe.to_dict()})
    grown = _grown_attrs(old, 6, 4)
    folder = ImageFolder.scan(demo_data)
    before, after = Replayer(folder, old), Replayer(folder, grown)
    assert grown.schedule_views == old.schedule_views == 4
    for slot in range(4):
        for sample in (0, 5, 16):
            assert after.params(slot, sample) == before.params(slot, sample)
    last = recipe.at_slot(3, 4)  # the knobs of the last slot the schedule spans
    assert last.randaug_m == 15.0  # its last stage
    for slot in (4, 5):  # appended slots: the knobs of slot 3, their own seeds
        p = after.params(slot, 5)
        assert p.base == decode(7, slot, 5, 17, last, 1).base
        assert p.seed != after.params(3, 5).seed
    # Six slots from the start would put slot 2 in stage 1, not 2: what growth must not do.
    assert recipe.stage_of(2, 4) == 2 and recipe.stage_of(2, 6) == 1


def _grown_attrs(attrs: Any, views: int, base: int | None) -> Any:
    config = {**attrs.config, "views": views, "base_views": base}
    if base is None:
        config.pop("base_views")
    return attrs.model_copy(update={"views": views, "base_views": base, "config": config})


def test_refusals(tmp_path):
    """A growth that would change existing slots, a shrink, and a second growth while one is
    under way are refused in one line; another config is no growth (create_store refuses)."""
    attrs = make_attrs(num_samples=40, views=3, shard_views=2)
    path = build_store(tmp_path / "s", attrs)
    with pytest.raises(GrowthRefused, match=r"would change its existing slots.*drop --base-views"):
        begin_growth(path, _grown_attrs(attrs, 5, None))
    with pytest.raises(GrowthRefused, match="has 3 view slots: --views 2 would drop slots"):
        begin_growth(path, _grown_attrs(attrs, 2, None))
    assert begin_growth(path, attrs.model_copy(update={"topk": 4, "views": 5})) is None
    growth = begin_growth(path, _grown_attrs(attrs, 5, 3))
    assert growth is not None and growth.from_views == 3 and set(growth.kept) == {"1.0"}
    with pytest.raises(GrowthRefused, match=r"being grown from 3 to 5 view slots.*--views 5"):
        begin_growth(path, _grown_attrs(attrs, 7, 3))
    assert LocalStore(path).attrs.views == 3  # the store is still the 3-slot one meanwhile


def test_cli_refuses_a_growth_that_changes_existing_slots(base, demo_data, tmp_path, capsys):
    out = copy_store(base["one"], tmp_path / "s")
    before = file_digests(out)
    assert main([*_args(demo_data, out, views=4, shard_views=1), "--base-views", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "would change its existing slots" in err
    assert file_digests(out) == before


def run(data: Path, out: Path | str, **kw: Any) -> dict[str, Any]:
    from teacher_store.generate import GenerateConfig, run_generate
    from tests.store_fixtures import SMALL_GENERATE

    return run_generate(GenerateConfig(data=str(data), out=str(out), **{**SMALL_GENERATE, **kw}))


def _args(data: Path, out: Path | str, views: int, shard_views: int) -> list[str]:
    flags = {
        "views": views, "topk": 5, "img-size": 64, "batch-size": 4, "shard-samples": 8,
        "chunk-samples": 4, "shard-views": shard_views, "workers": 0,
    }  # fmt: skip
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    return ["generate", "--data", str(data), "--out", str(out), *args, "--quiet"]


# (point, n) to kill the growth of the mixed store (3 units of slots 2..3, staged, then moved
# into place at the end: 9 staged shard writes, then 9 moves), the CI ones marked True.
_KILLS = [
    ("growth-written", 1, False),  # the plan written, nothing else
    ("batch", 1, True),  # the first teacher batch of the new slot
    ("shard-written", 4, False),  # the second unit's first staged shard
    ("record-written", 3, False),  # every unit committed, not finished
    ("shard-written", 12, True),  # moving the staged shards into place
    ("root-meta-written", 1, False),  # the root written, the manifest not yet
    ("manifest-torn", 1, False),
]
_S3_KILLS = [("batch", 1, True), ("shard-written", 12, True), ("record-written", 2, False)]


def _kills(table: list[tuple[str, int, bool]]) -> list[Any]:
    return [pytest.param(p, n, id=f"{p}-{n}") for p, n, ci in table if ci or full_scale()]


def _kill_at(point: str, n: int, data: Path, out: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", ENV: f"{point}:{n}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [str(BIN / "distill"), *_args(data, out, views=4, shard_views=2)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])


def _still_the_old_store(address: str, old_identity: str) -> None:
    """Until the growth finishes, a reader opening the store finds the 3-slot store (or, in
    the instant the root is written before the manifest, the final slots with the old
    identity), or is told in one line to open it again in a moment."""
    from teacher_store.client import open_store
    from teacher_store.errors import StoreIncomplete

    try:
        client = open_store(address)
    except StoreIncomplete as e:
        assert "is finishing a growth" in str(e)
        return
    with client:
        assert client.identity == old_identity
        assert client.attrs.views in (3, 4)
        assert client.read_block(2, 0, 17).valid.all()


@pytest.mark.parametrize(("point", "n"), _kills(_KILLS))
def test_kill_mid_growth_then_resume_local(point, n, mixed, demo_data, tmp_path):
    out = copy_store(mixed["r3"], tmp_path / "s")
    old_identity = store_identity((out / MANIFEST).read_bytes())
    _kill_at(point, n, demo_data, str(out))
    assert (out / GROWTH).exists()  # killed while growing
    _still_the_old_store(str(out), old_identity)
    from teacher_store.info import format_info, store_info

    assert "growing to 4 view slots" in format_info(store_info(str(out))).splitlines()[0]
    assert main(_args(demo_data, out, views=4, shard_views=2)) == 0
    assert local_objects(out) == local_objects(mixed["grown"])
    assert not (out / GROWTH).exists()


@pytest.mark.parametrize(("point", "n"), _kills(_S3_KILLS))
def test_kill_mid_growth_then_resume_s3(point, n, mixed, demo_data, s3_server: S3Server):
    url = s3_server.url("grow")
    fs = s3_server.fs()
    for key, data in local_objects(mixed["r3"]).items():
        fs.pipe_file(f"{url.removeprefix('s3://')}/{key}", data)
    old_identity = store_identity(local_objects(mixed["r3"])[MANIFEST])
    _kill_at(point, n, demo_data, url)
    assert GROWTH in s3_server.objects(url)
    _still_the_old_store(url, old_identity)
    assert main(_args(demo_data, url, views=4, shard_views=2)) == 0
    got = s3_server.objects(url)
    assert got == local_objects(mixed["grown"])
    assert json.loads(got[ROOT_META])["attributes"]["views"] == 4
