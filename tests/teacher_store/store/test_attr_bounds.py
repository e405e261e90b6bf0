"""Every size in the attrs that sets an allocation is bounded, and the whole attribute tree is
validated strictly: a store past a bound or with a malformed nested object is refused in one
line (readers: see tests/meta_edits.py), and `distill generate` never makes one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from teacher_store.cli import main
from teacher_store.store.schema import (
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_TOPK,
    MAX_VIEWS,
    StoreAttrs,
    validation_message,
)
from tests.meta_edits import one_line
from tests.store_fixtures import make_attrs


def _with(path: str, value: Any) -> dict[str, Any]:
    raw = make_attrs(64, views=2, topk=3, chunk=16, shard=32).to_dict()
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    node[last] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("teacher.input_size", [3, MAX_IMAGE_SIZE + 1, 64], "8 <= H, W <= 4096"),
        ("teacher.input_size", [3, 100000, 100000], "8 <= H, W <= 4096"),
        ("teacher.input_size", [1, 64, 64], "[3, H, W]"),
        (
            "teacher.input_size",
            [3, 64.0, 64],
            "teacher.input_size.1: Input should be a valid integer",
        ),
        ("teacher.class_names", "abc", "teacher.class_names: Input should be a valid list"),
        ("teacher.class_names", ["a", "b"], "2 names for 100 classes"),
        ("teacher.class_names", [1] * 100, "teacher.class_names.0: Input should be a valid string"),
        ("teacher.num_classes", 99, "teacher.num_classes 99 != num_classes 100"),
        ("teacher.mean", ["0.5", 0.5, 0.5], "teacher.mean.0: Input should be a valid number"),
        ("teacher.std", [0.5, 0.0, 0.5], "teacher.std.1: Input should be greater than 0"),
        ("teacher.weights_sha256", "xyz", "teacher.weights_sha256"),
        ("teacher.extra", 1, "teacher.extra: Extra inputs are not permitted"),
        ("teacher", {}, "teacher: missing name, architecture, num_classes"),
        ("dataset", {}, "dataset: missing num_samples, sha256, classes, version"),
        ("dataset.num_samples", 63, "dataset.num_samples 63 != num_samples 64"),
        ("dataset.classes", "cats", "dataset.classes: Input should be a valid list"),
        ("recipe", {}, "recipe: missing version, name"),
        ("recipe.randaug_n", 99, "randaug_n must be in [0, 16]"),
        ("config", {}, "config: missing teacher, batch_size"),
        ("config.batch_size", "8", "config.batch_size: Input should be a valid integer"),
        ("config.views", 3, "config.views 3 contradicts the store's 2"),
        ("topk", MAX_TOPK + 1, f"topk: must be <= {MAX_TOPK}"),
        ("topk", 101, "topk 101 exceeds num_classes 100"),
        ("num_classes", MAX_CLASSES + 1, f"num_classes: must be <= {MAX_CLASSES}"),
        ("views", MAX_VIEWS + 1, f"views: must be <= {MAX_VIEWS}"),
        ("temperature", 0.0, "temperature: Input should be greater than 0"),
        ("temperature", float("nan"), "temperature: Input should be a finite number"),
        ("store_seed", -1, "store_seed: Input should be greater than or equal to 0"),
        ("store_seed", 1 << 64, "store_seed: Input should be less than"),
        ("chunk_samples", 12, "shard_samples is not a multiple of chunk_samples"),
    ],
)
def test_attrs_are_validated_whole_in_one_line(path: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        StoreAttrs.from_dict(_with(path, value))
    message = validation_message(err.value)
    assert words in message and "\n" not in message, message


def test_a_complete_store_validates_and_round_trips() -> None:
    attrs = make_attrs()
    assert StoreAttrs.from_dict(attrs.to_dict()) == attrs
    assert attrs.to_dict()["teacher"] == make_attrs().teacher  # kept as written: no coercion


def test_create_is_one_line_for_the_writer() -> None:
    raw = _with("views", MAX_VIEWS + 1)
    with pytest.raises(ValueError) as err:
        StoreAttrs.create(**raw)
    assert not isinstance(err.value, ValidationError) and "\n" not in str(err.value)
    assert f"views: must be <= {MAX_VIEWS}" in str(err.value)


def test_generate_refuses_options_past_a_bound_and_creates_nothing(
    demo_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["generate", "--data", str(demo_data), "--out", str(out), "--views", str(MAX_VIEWS + 1),
            "--img-size", "64", "--workers", "0", "--quiet"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert one_line(err) and str(MAX_VIEWS) in err and "views" in err, err
    assert not out.exists()
