"""Generation in pair order (issue 13): one decode of each image serves both views of a pair.

Real photos (the demo's, as thumbnails copied under new names so that a unit holds more
samples than the replayer's 64-image cache), the real Lite0 teacher, real stores.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.store.arrays import LocalStore
from teacher_store.verify import verify_store
from teacher_store.views.pairing import slot_partners
from tests.store_fixtures import SMALL_GENERATE

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py

N, VIEWS = 256, 3  # one unit of 3 slots x 256 samples (4x the decode cache)


@pytest.fixture(scope="module")
def thumbs(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N small copies of the demo photos (48 px), in the demo's class folders."""
    root = tmp_path_factory.mktemp("thumbs") / "images"
    photos = sorted(p for p in demo_data.rglob("*") if p.is_file())
    for k in range(N):
        src = photos[k % len(photos)]
        with Image.open(src) as im:
            small = im.convert("RGB")
            small.thumbnail((48, 48))
        out = root / src.parent.name / f"{k:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        small.save(out)
    return root


def _run(data: Path, out: Path, order: str) -> tuple[Counter[int], dict]:
    decodes: Counter[int] = Counter()
    cfg = GenerateConfig(
        data=str(data),
        out=str(out),
        **{
            **SMALL_GENERATE,
            "views": VIEWS,
            "shard_samples": N,
            "shard_views": None,
            "batch_size": 32,
            "img_size": 32,
        },
        view_order=order,
    )
    summary = run_generate(cfg, decode_hook=lambda s: decodes.update([s]))
    return decodes, summary


def test_pair_order_decodes_each_pair_once(thumbs, tmp_path):
    pairs, s = _run(thumbs, tmp_path / "pairs", "pairs")
    assert s["complete"] and s["units"] == 1 and s["views_computed"] == VIEWS * N
    a = LocalStore(tmp_path / "pairs").attrs
    assert a.config["view_order"] == "pairs"
    partners = [slot_partners(a.store_seed, r, N) for r in range(VIEWS)]
    needed = VIEWS * N  # (slot, image) pairs the unit needs: every view's own, partners too
    pair_count = sum(len({frozenset((i, int(p[i]))) for i in range(N)}) for p in partners)
    # each image once for its own step, plus at most one partner decode per pair
    assert sum(pairs.values()) <= N + pair_count < needed
    assert set(pairs) == set(range(N))
    # the schedule before pair order decodes a partner per view (the cache misses most)
    before, _ = _run(thumbs, tmp_path / "sample", "sample")
    assert sum(before.values()) > N + pair_count
    # both stores are whole and their batches re-run to the same targets
    for name in ("pairs", "sample"):
        report = verify_store(str(tmp_path / name), str(thumbs), fraction=0.25, device="cpu")
        assert report.ok, report.reason


def test_a_store_made_in_sample_order_resumes_in_it(demo_data, tmp_path):
    """Stores made before pair order record no view order: resuming keeps theirs."""
    out = tmp_path / "old"
    cfg = GenerateConfig(data=str(demo_data), out=str(out), **SMALL_GENERATE, view_order="sample")
    first = run_generate(cfg)
    recorded = LocalStore(out).attrs.config
    assert "view_order" not in recorded  # as a store written before the option existed
    again = run_generate(cfg.model_copy(update={"view_order": None}))
    assert again["resumed"] and again["units_skipped"] == first["units"]
    assert again["units_written"] == 0
    with pytest.raises(ValueError, match=r"config\.view_order differ"):
        run_generate(cfg.model_copy(update={"view_order": "pairs"}))
