"""`distill train` and the StoreLoader refuse stores whose metadata cannot be believed (attrs
failing the schema, contradicting the arrays, edited after the store was finished) and
stored class ids outside the store's classes: one line, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from student.loader import StoreLoader
from teacher_store.cli import main
from teacher_store.errors import StoreDamaged
from teacher_store.store.arrays import LocalStore
from tests.meta_edits import ATTR_EDITS, GENERATED_EDITS, one_line
from tests.store_fixtures import copy_store, plant_class_id

EDITS = {**ATTR_EDITS, **GENERATED_EDITS}


def _train(store: Path, data: Path, out: Path) -> list[str]:
    return ["train", "--store", str(store), "--data", str(data), "--model",
            "tf_efficientnetv2_b0", "--out", str(out), "--img-size", "64", "--epochs", "1",
            "--workers", "0", "--val-fraction", "0.2", "--batch-size", "4", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def edited(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edited")
    out = {}
    for name, (edit, _) in EDITS.items():
        out[name] = copy_store(small_store, root / name)
        edit(out[name])
    return out


@pytest.mark.parametrize("name", sorted(EDITS))
def test_train_refuses_invalid_metadata_in_one_line(edited, demo_data, tmp_path, capsys, name):
    file = EDITS[name][1]
    assert main(_train(edited[name], demo_data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"store {edited[name]}: {file} " in err, err
    assert not (tmp_path / "run" / "last.pth").exists()


@pytest.mark.parametrize("name", ["class-names-str", "topk-under-K", "store-seed", "array-meta"])
def test_store_loader_refuses_invalid_metadata(edited, demo_data, name):
    with pytest.raises(StoreDamaged) as e:
        StoreLoader(str(edited[name]), demo_data, img_size=64, workers=0)
    assert e.value.file == EDITS[name][1] and "\n" not in str(e.value)


def test_train_refuses_class_ids_outside_the_classes(small_store, demo_data, tmp_path, capsys):
    """Was `index 1000 is out of bounds` from the loss: now the read of the block refuses it."""
    classes = LocalStore(small_store).attrs.num_classes
    bad = plant_class_id(copy_store(small_store, tmp_path / "bad"), classes, slot=0, sample=3)
    assert main(_train(bad, demo_data, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"class id {classes} at view slot 0, sample 3" in err, err
