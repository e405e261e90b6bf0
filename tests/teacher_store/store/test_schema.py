"""Store file schemas: counts below 1 refused, unit count by arithmetic, manifest keys checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from teacher_store.store.arrays import shard_units
from teacher_store.store.schema import Manifest, StoreAttrs, validation_message
from tests.store_fixtures import make_attrs


@pytest.mark.parametrize(
    "field", ["num_samples", "views", "topk", "num_classes", "chunk_samples", "shard_samples",
              "shard_views"],
)  # fmt: skip
@pytest.mark.parametrize("value", [0, -1])
def test_counts_below_one_refused(field: str, value: int) -> None:
    raw = {**make_attrs().to_dict(), field: value}
    with pytest.raises(ValidationError) as err:
        StoreAttrs.from_dict(raw)
    assert validation_message(err.value) == f"{field}: must be >= 1, got {value}"


@pytest.mark.parametrize(("views", "shard_views", "n", "shard"), [(3, 2, 1000, 256), (1, 1, 5, 8)])
def test_unit_count_matches_the_unit_list(views: int, shard_views: int, n: int, shard: int) -> None:
    attrs = make_attrs(n, views=views, shard_views=shard_views, shard=shard, chunk=shard)
    assert attrs.unit_count == len(shard_units(attrs))


@pytest.mark.parametrize("key", ["../secret", "/etc/passwd", "ids//c", "ids\\c", "ids/./c"])
def test_manifest_keys_stay_inside_the_store(key: str) -> None:
    with pytest.raises(ValidationError, match="not a relative"):
        Manifest.model_validate({"units": 1, "files": {key: {"size": 1, "crc32c": 0}}})
    ok = Manifest.model_validate({"units": 1, "files": {"ids/c/0/0/0": {"size": 0, "crc32c": 0}}})
    assert ok.files["ids/c/0/0/0"].sha256 == ""


def test_check_readable_defaults_to_this_codec_version() -> None:
    from teacher_store.store.schema import check_readable
    from teacher_store.views.codec import CODEC_VERSION

    raw = make_attrs().to_dict()
    assert check_readable(raw, "here") == check_readable(raw, "here", CODEC_VERSION)
    old = {**raw, "codec_version": CODEC_VERSION + 1}
    with pytest.raises(ValueError, match=f"this distill replays version {CODEC_VERSION};"):
        check_readable(old, "here")
