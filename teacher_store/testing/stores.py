"""Real stores for tests and benches: synthetic ones written by the store's own writer, and tiny
generated ones (``distill generate`` on the demo photos).

:func:`write_store` is the one synthetic-store writer: ``create_store``, ``write_unit`` for
every shard unit with the targets a function gives for it, ``finalize``. The target makers
(:func:`random_targets`, :func:`clustered_targets`) draw from a generator the caller seeds, so
a store's bytes depend on the seed only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from teacher_store.images.digests import SampleDigests
from teacher_store.storage.location import Location
from teacher_store.store.arrays import create_store, finalize, write_unit
from teacher_store.store.layout import ShardUnit, shard_units
from teacher_store.store.schema import StoreAttrs, encode_values
from teacher_store.store.value_encodings import ENCODINGS, LogProbFloat

# The table's float16 log-probability encoding: synthetic stores' default (named by the table
# only, so that adding an encoding touches one room).
LOGPROB = next(e.name for e in ENCODINGS.values() if isinstance(e, LogProbFloat))

# (ids [rs, n, K] in rank order, values [rs, n, K] encoded, valid [rs, n]) of one unit, and
# optionally its stats (as generation records them: views, encoding_kl_sum...).
Targets = tuple[np.ndarray, ...] | tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]

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


def synthetic_teacher(num_classes: int, name: str = "synthetic", size: int = 224) -> dict[str, Any]:
    """The ``attrs.teacher`` of a store with no real teacher behind it (valid, complete)."""
    return {
        "name": name,
        "architecture": "none",
        "num_classes": num_classes,
        "input_size": [3, size, size],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "weights_sha256": "0" * 64,
        "class_names": [],
        "version": 1,
    }


def synthetic_parts(
    num_samples: int,
    num_classes: int = 1000,
    dataset: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """The descriptive attrs of a synthetic store (teacher, dataset, recipe, config,
    libraries), complete enough for the store schema's checks: ``StoreAttrs(..., **parts)``.
    ``config``: more creation-config entries (beside a teacher name and a batch size)."""
    from teacher_store.views.recipe import get_recipe

    default = {"num_samples": num_samples, "sha256": "0" * 64, "classes": [], "version": 1}
    return {
        "teacher": synthetic_teacher(num_classes),
        "dataset": dataset or default,
        "recipe": recipe or get_recipe("default").to_dict(),
        "config": {"teacher": "synthetic", "batch_size": 32, **config},
        "libraries": {},
    }


def synthetic_attrs(
    num_samples: int,
    views: int,
    topk: int,
    num_classes: int = 1000,
    encoding: str = LOGPROB,
    chunk: int = 1024,
    shard: int = 8192,
    shard_views: int = 2,
    **fields: Any,
) -> StoreAttrs:
    """Attrs of a synthetic store (no real teacher or dataset behind it; a complete, valid
    attr tree: :func:`synthetic_parts`); ``fields`` override any other attribute
    (``store_seed``, ``teacher``, ``dataset``, ``id_order``...)."""
    from teacher_store.views.codec import CODEC_VERSION

    base: dict[str, Any] = {
        "codec_version": CODEC_VERSION,
        "num_samples": num_samples,
        "views": views,
        "topk": topk,
        "num_classes": num_classes,
        "value_encoding": encoding,
        "store_seed": 0,
        "chunk_samples": chunk,
        "shard_samples": shard,
        "shard_views": shard_views,
        **synthetic_parts(num_samples, num_classes),
    }
    return StoreAttrs(**{**base, **fields})


def make_attrs(
    num_samples: int = 1000,
    views: int = 3,
    topk: int = 5,
    num_classes: int = 100,
    encoding: str = LOGPROB,
    chunk: int = 128,
    shard: int = 256,
    shard_views: int = 2,
) -> StoreAttrs:
    """Attrs of a small test store (a fake teacher, two class names)."""
    from teacher_store.views.recipe import Recipe

    teacher = synthetic_teacher(num_classes, "fake_teacher", 32)
    teacher.update(architecture="fake", interpolation="bilinear", weights_sha256="ab" * 32)
    dataset = {
        "num_samples": num_samples,
        "sha256": f"{num_samples:064x}",
        "classes": ["cat", "dog"],
        "version": 1,
    }
    config = {"teacher": "fake_teacher", "views": views, "batch_size": 8}
    return synthetic_attrs(
        num_samples, views, topk, num_classes, encoding, chunk, shard, shard_views,
        store_seed=7, teacher=teacher, dataset=dataset, recipe=Recipe(name="test").to_dict(),
        config=config, libraries={"zarr": "3.1.6"},
    )  # fmt: skip


def random_targets(
    rng: np.random.Generator,
    attrs: StoreAttrs,
    rs: int,
    n: int,
    scale: float = 3.0,
    rest: float = 50.0,
    invalid: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random top-K targets of ``rs`` view slots x ``n`` samples: uniform ids (repeats are
    fine for serving tests), sorted normal(0, ``scale``) logits with ``rest`` for the mass of
    the other classes, and about ``invalid`` of the views invalid (none when 0)."""
    k = attrs.topk
    ids = rng.integers(0, attrs.num_classes, (rs, n, k))
    logits = np.sort(rng.normal(0.0, scale, (rs, n, k)), axis=-1)[..., ::-1]
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True) + rest)
    if invalid > 0:
        valid = (rng.random((rs, n)) > invalid).astype(np.uint8)
    else:
        valid = np.ones((rs, n), np.uint8)
    return ids.astype(attrs.ids_dtype), encode_values(logprobs, attrs.value_encoding), valid


def clustered_targets(
    rng: np.random.Generator, rs: int, n: int, k: int, classes: int = 1000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Teacher-like :data:`LOGPROB` targets: each sample has a class, its views' top-K are that
    class and near neighbours, like a confident-but-uncertain teacher on augmented crops (ids
    compress like real ones, not like random ones)."""
    base = rng.integers(0, classes, n)
    offsets = rng.geometric(0.15, (rs, n, k * 2)) * rng.choice([-1, 1], (rs, n, k * 2))
    offsets[..., 0] = 0
    ids = np.empty((rs, n, k), np.uint16)
    cand = (base[None, :, None] + offsets) % classes
    for v in range(rs):  # first K distinct candidates per view
        for i in range(n):
            _, first = np.unique(cand[v, i], return_index=True)
            pick = cand[v, i][np.sort(first)][:k]
            if len(pick) < k:
                pick = np.concatenate([pick, (pick[-1] + 1 + np.arange(k - len(pick))) % classes])
            ids[v, i] = pick
    logits = np.sort(rng.normal(0, 2.5, (rs, n, k)), -1)[..., ::-1] + 3.0
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True) + 400.0)
    return ids, encode_values(logprobs, LOGPROB), np.ones((rs, n), np.uint8)


def write_store(
    address: str | os.PathLike[str],
    attrs: StoreAttrs,
    targets: Callable[[ShardUnit], Targets],
    units: int | None = None,
    overwrite: bool = True,
    digests: SampleDigests | None = None,
) -> dict[str, Any] | None:
    """Write a store at ``address`` (a folder or an fsspec URL) with the store's writer, unit
    by unit in canonical order, ``targets(unit)`` giving each unit's arrays (and stats).
    All units and the manifest by default (returns the manifest); only the first ``units``
    units otherwise (an unfinished store; returns None). ``digests``: the samples' content
    digests to record (``attrs.dataset["content"]`` must be their record)."""
    create_store(address, attrs, overwrite=overwrite, digests=digests)
    todo = shard_units(attrs)
    for unit in todo[: len(todo) if units is None else units]:
        ids, values, valid, *stats = targets(unit)
        write_unit(address, unit, ids, values, valid, [], *stats)
    return finalize(address, todo) if units is None else None


def build_store(
    path: Path,
    attrs: StoreAttrs,
    seed: int = 0,
    units: int | None = None,
    digests: SampleDigests | None = None,
) -> Path:
    """A store of :func:`random_targets` drawn from one generator seeded ``seed``; all units
    and the manifest by default, only the first ``units`` otherwise; ``digests``: the samples'
    content digests to record (see :func:`write_store`)."""
    rng = np.random.default_rng(seed)

    def targets(u: ShardUnit) -> Targets:
        return random_targets(rng, attrs, u.slot_stop - u.slot_start, u.stop - u.start)

    write_store(path, attrs, targets, units, digests=digests)
    return path


def generate_small(data: Any, out: Path, **kw: Any) -> Path:
    """``distill generate`` on ``data`` into ``out`` with SMALL_GENERATE (``kw`` overrides)."""
    from teacher_store.generate import GenerateConfig, run_generate

    run_generate(GenerateConfig(data=str(data), out=str(out), **{**SMALL_GENERATE, **kw}))
    return out


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: two stores are byte-identical
    when these are equal."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def memory_copy(path: Path, name: str) -> str:
    """Copy a store folder into fsspec's in-process memory filesystem (replacing an earlier
    copy of that name); returns its URL (``memory:///bench/NAME``)."""
    url = f"memory:///bench/{name}"
    dst = Location.at(url)
    dst.clear()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            dst.write_atomic(f.relative_to(path).as_posix(), f.read_bytes())
    return url


__all__ = [
    "SMALL_GENERATE",
    "Targets",
    "build_store",
    "clustered_targets",
    "copy_store",
    "file_digests",
    "generate_small",
    "make_attrs",
    "memory_copy",
    "random_targets",
    "synthetic_attrs",
    "synthetic_parts",
    "synthetic_teacher",
    "write_store",
]
