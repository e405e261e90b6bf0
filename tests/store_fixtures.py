"""Real tiny teacher stores for service/client tests, written with teacher_store.store.arrays."""

from __future__ import annotations

import hashlib
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from teacher_store.store.arrays import create_store, finalize, shard_units, write_unit
from teacher_store.store.schema import StoreAttrs, encode_values

# A schema version 1 store written by the version-1 code (17 demo photos, R=2, K=5, 64 px):
# version 1 stores must stay readable.
V1_FIXTURE = Path(__file__).parent / "teacher_store" / "store" / "fixtures" / "v1_store"

# A generation config small enough for CPU tests on the demo photos (GenerateConfig kwargs).
SMALL_GENERATE: dict[str, Any] = {
    "views": 2,
    "topk": 5,
    "img_size": 64,
    "batch_size": 4,
    "shard_samples": 8,
    "chunk_samples": 4,
    "shard_views": 1,
    "workers": 0,
    "progress": False,
}


def generate_small(data: Any, out: Path, **kw: Any) -> Path:
    """``distill generate`` on ``data`` into ``out`` with SMALL_GENERATE (``kw`` overrides)."""
    from teacher_store.generate import GenerateConfig, run_generate

    run_generate(GenerateConfig(data=str(data), out=str(out), **{**SMALL_GENERATE, **kw}))
    return out


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


def make_attrs(
    num_samples: int = 1000,
    views: int = 3,
    topk: int = 5,
    num_classes: int = 100,
    encoding: str = "logprob-f16",
    chunk: int = 128,
    shard: int = 256,
    shard_views: int = 2,
) -> StoreAttrs:
    from teacher_store.views.codec import CODEC_VERSION
    from teacher_store.views.recipe import Recipe

    return StoreAttrs(
        codec_version=CODEC_VERSION,
        num_samples=num_samples,
        views=views,
        topk=topk,
        num_classes=num_classes,
        value_encoding=encoding,  # type: ignore[arg-type]
        store_seed=7,
        chunk_samples=chunk,
        shard_samples=shard,
        shard_views=shard_views,
        teacher={
            "name": "fake_teacher",
            "architecture": "fake",
            "num_classes": num_classes,
            "input_size": [3, 32, 32],
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
            "interpolation": "bilinear",
            "weights_sha256": "ab" * 32,
            "class_names": [],
            "version": 1,
        },
        dataset={
            "num_samples": num_samples,
            "sha256": f"{num_samples:064x}",
            "classes": ["cat", "dog"],
            "version": 1,
        },
        recipe=Recipe(name="test").to_dict(),
        config={"teacher": "fake_teacher", "views": views, "batch_size": 8},
        libraries={"zarr": "3.1.6"},
    )


def _targets(
    rng: np.random.Generator, attrs: StoreAttrs, rs: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k = attrs.topk
    ids = rng.integers(0, attrs.num_classes, (rs, n, k))  # repeats are fine for serving tests
    logits = np.sort(rng.normal(0.0, 3.0, (rs, n, k)), axis=-1)[..., ::-1]
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True) + 50.0)
    valid = (rng.random((rs, n)) > 0.05).astype(np.uint8)
    return ids.astype(attrs.ids_dtype), encode_values(logprobs, attrs.value_encoding), valid


def build_store(
    path: Path, attrs: StoreAttrs, seed: int = 0, units: int | None = None, digests: Any = None
) -> Path:
    """Write a store; all units + finalize by default, only the first ``units`` otherwise.
    ``digests``: the samples' content digests to record (``attrs.dataset`` must name them)."""
    create_store(path, attrs, overwrite=True, digests=digests)
    rng = np.random.default_rng(seed)
    todo = shard_units(attrs)
    for unit in todo[: len(todo) if units is None else units]:
        rs, n = unit.slot_stop - unit.slot_start, unit.stop - unit.start
        ids, values, valid = _targets(rng, attrs, rs, n)
        write_unit(path, unit, ids, values, valid, [])
    if units is None:
        finalize(path, todo)
    return path


def plant_class_id(store: Path, class_id: int, slot: int = 0, sample: int = 0) -> Path:
    """Rewrite the unit holding view ``slot`` of ``sample`` through the writer with
    ``class_id`` as that view's top-1 id, and finish the store again: its files, records and
    digests all agree, but it holds an id that may be outside its classes."""
    from teacher_store.store import layout
    from teacher_store.store.arrays import LocalStore

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


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: two stores are byte-identical
    when these are equal."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


class LiveServer:
    """A real uvicorn server on 127.0.0.1 (random free port) in a background thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        """``config``: more ``uvicorn.Config`` options (``ConnectionLimits.uvicorn_options()``)."""
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "lifespan": "on", "access_log": False, **config}
        uv_config = uvicorn.Config(app, **options)
        self.server = uvicorn.Server(uv_config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
