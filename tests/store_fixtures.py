"""Real tiny teacher stores and a live server for service/client tests: the store writers and
launchers live in :mod:`teacher_store.testing` (benches use them too) and are re-exported here;
what only the tests need (the version-1 fixture, a student config, a planted class id) is
defined here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from teacher_store.testing.services import LiveServer
from teacher_store.testing.stores import (
    SMALL_GENERATE,
    build_store,
    copy_store,
    file_digests,
    generate_small,
    make_attrs,
)

# A schema version 1 store written by the version-1 code (17 demo photos, R=2, K=5, 64 px):
# version 1 stores must stay readable.
V1_FIXTURE = Path(__file__).parent / "teacher_store" / "store" / "fixtures" / "v1_store"


def student_config(store: Any, data: Any, out: Any, **kw: Any) -> Any:
    """A tiny CPU TrainConfig (64 px tf_efficientnetv2_b0, batch 4); ``kw`` overrides."""
    from student.config import TrainConfig

    base: dict[str, Any] = {
        "store": str(store),
        "data": str(data),
        "model": "tf_efficientnetv2_b0",
        "out": str(out),
        "batch_size": 4,
        "img_size": 64,
        "workers": 0,
        "val_fraction": 0.2,
        "progress": False,
        "tensorboard": False,
    }
    return TrainConfig(**{**base, **kw})


def plant_class_id(store: Path, class_id: int, slot: int = 0, sample: int = 0) -> Path:
    """Rewrite the unit holding view ``slot`` of ``sample`` through the writer with
    ``class_id`` as that view's top-1 id, and finish the store again: its files, records and
    digests all agree, but it holds an id that may be outside its classes."""
    from teacher_store.store import layout
    from teacher_store.store.arrays import LocalStore, finalize, shard_units, write_unit

    reader = LocalStore(store)
    attrs = reader.attrs
    units = shard_units(attrs)
    unit = next(
        u for u in units if u.slot_start <= slot < u.slot_stop and u.start <= sample < u.stop
    )
    blocks = [
        reader.read_block(r, unit.start, unit.stop) for r in range(unit.slot_start, unit.slot_stop)
    ]
    ids = np.stack([b.ids for b in blocks]).astype(attrs.ids_dtype)
    values = np.stack([b.values for b in blocks])
    valid = np.stack([b.valid for b in blocks]).astype(np.uint8)
    ids[slot - unit.slot_start, sample - unit.start, 0] = class_id
    record = layout.read_unit_record(reader.location, unit.name) or {"bad": []}
    write_unit(store, unit, ids, values, valid, record["bad"])
    finalize(store, units)
    return store


def replace_same_size(path: Path) -> bytes:
    """Replace the image ``path`` by other pixels (mirrored and inverted) in a file of exactly
    the same byte size and format, which still decodes: names and sizes (the dataset
    fingerprint) cannot tell it apart. Returns the old bytes."""
    import io

    from PIL import Image, ImageOps

    old = path.read_bytes()
    with Image.open(path) as im:
        fmt, img = im.format, ImageOps.invert(ImageOps.mirror(im.convert("RGB")))
    for scale in (1.0, 0.9, 0.75, 0.5, 0.25):
        size = (max(8, int(img.width * scale)), max(8, int(img.height * scale)))
        buf = io.BytesIO()
        img.resize(size).save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        if buf.tell() <= len(old):
            break
    new = buf.getvalue()
    assert len(new) <= len(old), path
    path.write_bytes(new + b"\0" * (len(old) - len(new)))  # after IEND / EOI: ignored
    with Image.open(path) as im:
        im.load()  # still a valid image
    return old


__all__ = [
    "SMALL_GENERATE",
    "V1_FIXTURE",
    "LiveServer",
    "build_store",
    "copy_store",
    "file_digests",
    "generate_small",
    "make_attrs",
    "plant_class_id",
    "replace_same_size",
    "student_config",
]


# The tensors of a StoreBatch that two runs over the same store and images must agree on.
BATCH_TENSORS = ("images", "samples", "topk_ids", "topk_logprobs", "valid", "labels")
BATCH_TENSORS += ("partner_labels", "lam")


def assert_same_batch(a: Any, b: Any) -> None:
    """Two StoreBatches are the same batch: slot and every tensor equal."""
    import torch

    assert a.slot == b.slot
    for name in BATCH_TENSORS:
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def trained_batches(cfg: Any, monkeypatch: Any) -> list[Any]:
    """The batches ``run_train(cfg)`` trains on, in order (its step is wrapped to record them)."""
    import student.train

    got: list[Any] = []
    step = student.train._step

    def record(run: Any, ctx: Any, batch: Any) -> Any:  # what the trainer consumes, then trains
        got.append(batch)
        return step(run, ctx, batch)

    monkeypatch.setattr(student.train, "_step", record)
    summary = student.train.run_train(cfg)
    monkeypatch.setattr(student.train, "_step", step)
    assert summary["step"] == len(got) >= 2
    return got
