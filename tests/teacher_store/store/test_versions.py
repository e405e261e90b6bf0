"""Schema version 2 stores decode with stock zarr + numpy; version 1 stores stay readable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from teacher_store.errors import UnsupportedStoreVersion
from teacher_store.info import format_info, store_info
from teacher_store.store.arrays import LocalStore
from teacher_store.store.schema import StoreAttrs
from tests.store_fixtures import V1_FIXTURE, build_store, make_attrs


def _readme_decode(ids: np.ndarray, q: np.ndarray, head: int, tail_scale: float) -> tuple:
    """docs/store-format.md's decode of a head-sorted prob-u8x3 view: ranked (ids, probs)."""
    tail_ids = np.cumsum(ids[head:].astype(np.int64))
    order = np.argsort(-q[head:].astype(np.int64), kind="stable")
    out_ids = np.concatenate([ids[:head], tail_ids[order]])
    p = np.concatenate([q[:head] / 255.0, q[head:][order] / tail_scale])
    return out_ids, p


def _readme_decode_pad(ids: np.ndarray, q: np.ndarray, head: int, order: list[int]) -> tuple:
    """docs/store-format.md's decode of a head-sorted-pad prob-u8x3 view, entry by entry."""
    classes = [order[int(p)] for p in np.cumsum(ids[head:].astype(np.int64))]
    pairs = list(zip(classes, q[head:].tolist(), strict=True))
    used = {int(c) for c in ids[:head]} | {c for c, v in pairs if v}
    free = iter(c for c in range(len(order)) if c not in used)
    tail = [(c if v else next(free), v) for c, v in pairs]
    tail.sort(key=lambda e: (-e[1], e[0]))  # descending value, ties by ascending class id
    out_ids = [int(c) for c in ids[:head]] + [c for c, _ in tail]
    p = [v / 255.0 for v in q[:head]] + [v / 765.0 for _, v in tail]
    return np.array(out_ids), np.array(p)


@pytest.fixture(scope="module")
def padded_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    base = make_attrs(200, views=4, topk=12, num_classes=1000, encoding="prob-u8x3", chunk=50,
                      shard=100, shard_views=4)  # fmt: skip
    order = np.random.default_rng(9).permutation(1000).tolist()
    attrs = StoreAttrs.from_dict(
        {**base.to_dict(), "chunk_views": 4, "id_order": "head-sorted-pad", "class_order": order}
    )
    return build_store(tmp_path_factory.mktemp("v2pad") / "store", attrs), order


def test_stock_zarr_reads_padded_v2_and_the_readme_decode_matches(
    padded_store: tuple[Path, list[int]],
) -> None:
    path, order = padded_store
    group = zarr.open_group(path, mode="r")  # stock zarr-python, no code of ours
    assert group.attrs["class_order"] == order and group.attrs["id_order"] == "head-sorted-pad"
    ids, q = np.asarray(group["ids"][:]), np.asarray(group["values"][:])
    assert (q[..., 2:] == 0).mean() > 0.05  # padding is exercised
    local = LocalStore(path)
    for slot in range(4):
        block = local.read_block(slot, 0, 200)
        for i in range(0, 200, 3):
            want_ids, want_p = _readme_decode_pad(ids[slot, i], q[slot, i], 2, order)
            np.testing.assert_array_equal(block.ids[i], want_ids)
            np.testing.assert_allclose(np.exp(block.logprobs()[i]), want_p, rtol=1e-6)


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    attrs = make_attrs(200, views=4, topk=12, num_classes=1000, encoding="prob-u8x3", chunk=50,
                       shard=100, shard_views=4)  # fmt: skip
    attrs = attrs.model_copy(update={"chunk_views": 4, "id_order": "head-sorted"})
    return build_store(tmp_path_factory.mktemp("v2") / "store", attrs)


def test_stock_zarr_reads_v2_and_the_readme_decode_matches(v2_store: Path) -> None:
    group = zarr.open_group(v2_store, mode="r")  # stock zarr-python, no code of ours
    meta = json.loads((v2_store / "ids" / "zarr.json").read_text())
    inner = [c["name"] for c in meta["codecs"][0]["configuration"]["codecs"]]
    assert inner == ["transpose", "bytes", "blosc", "crc32c"]
    ids, q = np.asarray(group["ids"][:]), np.asarray(group["values"][:])
    assert ids.shape == q.shape == (4, 200, 12)
    local = LocalStore(v2_store)
    for slot in range(4):
        block = local.read_block(slot, 0, 200)
        for i in range(0, 200, 7):
            want_ids, want_p = _readme_decode(ids[slot, i], q[slot, i], 2, 765.0)
            np.testing.assert_array_equal(block.ids[i], want_ids)
            np.testing.assert_allclose(np.exp(block.logprobs()[i]), want_p, rtol=1e-6)


def test_v1_fixture_reads_and_describes() -> None:
    store = LocalStore(V1_FIXTURE)
    a = store.attrs
    assert (a.schema_version, a.id_order, a.chunk_views, a.value_encoding) == (
        1, "rank", 1, "logprob-f16",
    )  # fmt: skip
    block = store.read_block(1, 0, a.num_samples)
    p = np.exp(block.logprobs().astype(np.float64))
    assert block.valid.all() and block.ids.shape == (17, 5)
    assert (np.diff(p, axis=1) <= 0).all() and (p.sum(1) <= 1 + 1e-3).all()
    info = store_info(str(V1_FIXTURE))
    assert info["schema_version"] == 1 and info["tinyvit_bytes_per_view"] == 24
    assert "TinyViT's layout: 24 B per view" in format_info(info)


def test_unknown_version_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = shutil.copytree(V1_FIXTURE, tmp_path / "v3")
    meta = json.loads((bad / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 3
    (bad / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(UnsupportedStoreVersion) as e:
        LocalStore(bad)
    assert "schema version 3" in str(e.value) and "reads 1, 2" in str(e.value)
    assert "\n" not in str(e.value)
