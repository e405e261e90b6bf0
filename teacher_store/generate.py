"""`distill generate`: run the teacher over R augmented views per sample into a store.

Each rank owns whole shard units taken from the store's list of uncommitted units, so any world
size, and any number of interruptions, yields the same bytes. Within a unit, views follow the
store's view order (``pairing.unit_view_order``: in "pairs" order a view is rendered beside its
partner's view, from one decode of each image) and are cut into teacher batches of
``batch_size``: batch composition is a function of the config alone (a network's float results
can change with batch composition).
"""

from __future__ import annotations

import contextlib
import errno
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.runtime import barrier, dist_env, init_runtime
from teacher_store.cli import CommandError
from teacher_store.errors import StoreConflict, causes
from teacher_store.generate_data import check_read_some, with_content
from teacher_store.images.dataset import (
    PILLOW_HARD_LIMIT,
    default_max_image_pixels,
    printable_path,
)
from teacher_store.images.decode import check_decode
from teacher_store.images.prefetch import (
    DEFAULT_READ_THREADS,
    MAX_READ_THREADS,
    ReadAhead,
    read_ahead,
)
from teacher_store.images.source import ImageSource, open_images
from teacher_store.job_config import settle_job_config
from teacher_store.like import apply_like, check_like
from teacher_store.options import (
    MAX_BATCH,
    MAX_CHUNK_SAMPLES,
    MAX_IMG_SIZE,
    MAX_SEED,
    MAX_THREADS,
    MAX_TOPK,
    MAX_VIEWS,
    MAX_WORKERS,
    MIN_IMG_SIZE,
)
from teacher_store.storage.failures import storage_failure
from teacher_store.storage.faults import crash_point
from teacher_store.storage.location import Location
from teacher_store.store.arrays import (
    attrs_differences,
    committed_units,
    create_store,
    output_location,
    store_differences,
)
from teacher_store.store.arrays import write_unit as _write_unit
from teacher_store.store.grow import (
    Growth,
    begin_growth,
    finish_store,
    pending_growth,
    write_growing_unit,
)
from teacher_store.store.id_order import encoding_kl
from teacher_store.store.layout import ShardUnit, shard_units
from teacher_store.store.placement import check_apart
from teacher_store.store.schema import (
    VALUE_ENCODINGS,
    StoreAttrs,
    default_encoding,
    encode_values,
)
from teacher_store.teacher import Teacher
from teacher_store.views.codec import CODEC_VERSION
from teacher_store.views.pairing import recorded_view_order
from teacher_store.views.recipe import Recipe, get_recipe
from teacher_store.views.unit_views import UnitViews

# Config fields that do not change a store's bytes: a resume may change them freely.
RUNTIME_FIELDS = (
    "data",
    "out",
    "checkpoint",
    "like",
    "workers",
    "read_threads",
    "device",
    "overwrite",
    "progress",
)
# Ranks meet only at the start and the end: the final barrier waits for the slowest rank's
# whole share of the units, which can take hours longer than the fastest rank's (other GPUs,
# a node that joined a resumed job with fewer units left), far past torch's 10-30 min default.
_BARRIER_TIMEOUT_S = 24 * 3600.0


class GenerateConfig(BaseModel):
    """Everything `distill generate` needs; saved in the store's attrs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = 1
    data: str
    out: str
    teacher: str = "efficientnet_lite0"
    checkpoint: str | None = None
    # Sizes that set an allocation are bounded far above real use (teacher_store.options), so
    # a typo is a one-line error before the store is created, not a crash mid-run.
    views: int = Field(8, ge=1, le=MAX_VIEWS)
    # The slots the store was created with, once it has grown (teacher_store.store.grow): its
    # layout and recipe schedule are defined over them. None: a growth sets it from the store.
    base_views: int | None = Field(None, ge=1, le=MAX_VIEWS)
    # Another store's address: take its views (dataset, seed, recipe, slots, decode path,
    # pixel limit, input size) and run this teacher on them (`distill generate --like`).
    like: str | None = None
    topk: int = Field(10, ge=1, le=MAX_TOPK)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    batch_size: int = Field(32, ge=1, le=MAX_BATCH)
    recipe: Recipe = Field(default_factory=lambda: get_recipe("default"))
    # "auto": prob-u8 below K=17, prob-u8x3 from K=17 (schema.default_encoding).
    value_encoding: str = "auto"
    img_size: int | None = Field(None, ge=MIN_IMG_SIZE, le=MAX_IMG_SIZE)
    # Images with more pixels are bad samples (decompression bombs); part of the store's
    # identity since it decides which views are valid. Default: DISTILL_MAX_IMAGE_PIXELS, else
    # Pillow's limit; Pillow refuses more than twice its limit itself, hence the bound.
    max_image_pixels: int = Field(
        default_factory=default_max_image_pixels, ge=1, le=PILLOW_HARD_LIMIT
    )
    amp: bool = True  # autocast (bf16) on CUDA; a no-op on CPU
    # Image decode path (teacher_store.images.decode): Pillow, or batched nvJPEG on the CUDA device.
    # Part of the store's identity: replay is bit-exact only through the same path.
    decode: Literal["cpu", "gpu"] = "cpu"
    # torch intra-op threads: on CPU the teacher's float results depend on it, so it is part of
    # the store's identity. None: the store's recorded value, else torch's default.
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)
    # A chunk holds chunk_views slots x chunk_samples samples (1,024 views by default: smaller
    # chunks pay fixed per-chunk bytes); small datasets get more slots per chunk (build_attrs).
    chunk_samples: int = Field(64, ge=1, le=MAX_CHUNK_SAMPLES)
    chunk_views: int = Field(16, ge=1, le=MAX_VIEWS)
    shard_samples: int = Field(4096, ge=1, le=MAX_CHUNK_SAMPLES)
    # None: the chunk's view slots; a number also caps the slots per chunk.
    shard_views: int | None = Field(None, ge=1, le=MAX_VIEWS)
    # How a unit's views are ordered into teacher batches (pairing.unit_view_order), so part of
    # the store's identity. None: the store's recorded order when resuming (a store without
    # one was made in "sample" order), else "pairs" (each pair rendered from one decode each).
    view_order: Literal["sample", "pairs"] | None = None
    workers: int = Field(2, ge=0, le=MAX_WORKERS)
    # Threads per rendering process reading the coming images' bytes ahead (0: none, each
    # read in place); hides object-storage latency, never changes a byte (a runtime field).
    read_threads: int = Field(DEFAULT_READ_THREADS, ge=0, le=MAX_READ_THREADS)
    device: str = "auto"
    overwrite: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _base_within_views(self) -> GenerateConfig:
        if self.base_views is not None and self.base_views > self.views:
            raise ValueError(
                f"--base-views {self.base_views} exceeds --views {self.views}: the base is the "
                "slots a store was created with, a part of its slots"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields (recorded in the store's attrs)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerateConfig:
        """A validated config from :meth:`to_dict`'s fields."""
        return cls.model_validate(d)


def _libraries() -> dict[str, str]:
    out = {}
    for name in ("torch", "timm", "zarr", "numcodecs", "pillow", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def build_attrs(
    cfg: GenerateConfig,
    folder: ImageSource,
    teacher: Any,
    device_type: str = "cpu",
    class_order: list[int] | None = None,
) -> StoreAttrs:
    """The store's attrs: layout clamped to the data, identity, and the config.

    The config recorded is the part that decides the bytes (runtime fields such as paths and
    worker counts are left out); the device type is recorded too: CPU and CUDA teachers differ.
    """
    encoding = default_encoding(cfg.topk) if cfg.value_encoding == "auto" else cfg.value_encoding
    if encoding not in VALUE_ENCODINGS:
        raise ValueError(f"unknown --value-encoding {cfg.value_encoding!r}: {VALUE_ENCODINGS}")
    if cfg.topk > teacher.num_classes:
        raise ValueError(f"--topk {cfg.topk} exceeds the teacher's {teacher.num_classes} classes")
    n = len(folder)
    base = _base(cfg)  # the layout is the one of the slots the store was created with
    chunk, cviews = _chunking(cfg, n, base or cfg.views)
    shard = min(max(cfg.shard_samples, chunk), -(-n // chunk) * chunk)
    if shard % chunk:
        raise ValueError(f"--shard-samples {shard} must be a multiple of chunk size {chunk}")
    cviews = min(cviews, cfg.shard_views or cviews)
    span = base or cfg.views
    sviews = min(max(cfg.shard_views or cviews, cviews), -(-span // cviews) * cviews)
    if sviews % cviews:
        raise ValueError(f"--shard-views {sviews} must be a multiple of {cviews} chunk views")
    teacher_dict = teacher.to_dict()
    if cfg.img_size:
        teacher_dict["input_size"] = [3, cfg.img_size, cfg.img_size]
    return StoreAttrs.create(
        codec_version=CODEC_VERSION,
        num_samples=n,
        views=cfg.views,
        topk=cfg.topk,
        num_classes=teacher.num_classes,
        value_encoding=encoding,
        store_seed=cfg.seed,
        chunk_samples=chunk,
        shard_samples=shard,
        shard_views=sviews,
        chunk_views=cviews,
        id_order="head-sorted-pad",
        class_order=class_order,
        teacher=teacher_dict,
        dataset=folder.fingerprint().to_dict(),
        recipe=cfg.recipe.to_dict(),
        # Runtime fields (paths, workers, device, ...) stay out: they must not change the bytes.
        device_type=device_type,
        config=_recorded(cfg),
        libraries=_libraries(),
        base_views=base,
    )


def _base(cfg: GenerateConfig) -> int | None:
    """``base_views`` when it is a part of the slots (all of them: no base at all)."""
    return cfg.base_views if cfg.base_views is not None and cfg.base_views < cfg.views else None


def _recorded(cfg: GenerateConfig) -> dict[str, Any]:
    """The config fields that decide the bytes. ``view_order`` "sample" is left out: stores
    made before the field existed record none, and so still match their own config."""
    out = {k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_FIELDS}
    if out.get("view_order") in (None, "sample"):
        out.pop("view_order", None)
    out["base_views"] = _base(cfg)
    if out["base_views"] is None:  # stores that never grew record none (nor did older ones)
        out.pop("base_views")
    return out


def _chunking(cfg: GenerateConfig, n: int, views: int) -> tuple[int, int]:
    """(chunk samples, chunk views) clamped to the data (``views``: the slots the store was
    created with): a dataset smaller than a chunk gets more view slots per chunk instead, at
    least the same number of views (or all R slots)."""
    chunk = min(cfg.chunk_samples, n)
    per_chunk = cfg.chunk_samples * cfg.chunk_views
    cviews = max(1, min(views, -(-per_chunk // chunk)))
    if chunk < cfg.chunk_samples:
        # Spread the slots evenly over as many chunks as hold the full count each: a small
        # remainder chunk compresses badly (the demo at R=64: one 64-slot chunk, not 61 + 3).
        groups = max(1, views // cviews)
        cviews = -(-views // groups)
    return chunk, cviews


class _UnitWriter:
    """Collects one unit's teacher outputs and writes the unit when its last sample is in."""

    def __init__(self, unit: ShardUnit, attrs: StoreAttrs) -> None:
        rs, n, k = unit.slot_stop - unit.slot_start, unit.stop - unit.start, attrs.topk
        self.unit, self.attrs = unit, attrs
        self.ids = np.zeros((rs, n, k), attrs.ids_dtype)
        self.values = np.zeros((rs, n, k), attrs.values_dtype)
        self.valid = np.zeros((rs, n), np.uint8)
        self.bad: dict[int, dict[str, Any]] = {}
        self.kl_sum = 0.0  # what the encoding adds to the KL of float32 top-K, summed over views

    def put(self, where: list[tuple[int, int]], ids: np.ndarray, logp: np.ndarray) -> None:
        js, ss = (np.array(x) for x in zip(*where, strict=True))
        enc = self.attrs.value_encoding
        values = encode_values(logp, enc)
        self.ids[js, ss] = ids
        self.values[js, ss] = values
        self.valid[js, ss] = 1
        self.kl_sum += float(encoding_kl(logp, values, enc, self.attrs.num_classes).sum())

    def write(self, out: str, growth: Growth | None = None) -> dict[str, Any]:
        stats = {"views": int(self.valid.sum()), "encoding_kl_sum": self.kl_sum}
        bad = list(self.bad.values())
        if growth is not None:
            arrays = (self.ids, self.values, self.valid)
            return write_growing_unit(out, growth, self.unit, arrays, bad, stats)
        return _write_unit(out, self.unit, self.ids, self.values, self.valid, bad, stats)


def _run_units(
    cfg: GenerateConfig,
    dataset: UnitViews,
    teacher: Teacher,
    bar: Any,
    growth: Growth | None = None,
) -> Iterator[dict[str, Any]]:
    """Render, batch and run the teacher unit by unit; yield each unit's committed record."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=cfg.workers, collate_fn=lambda x: x
    )
    writer: _UnitWriter | None = None
    pending: list[torch.Tensor] = []
    where: list[tuple[int, int]] = []

    def flush() -> None:
        if pending:
            assert writer is not None
            ids, logp = teacher(torch.stack(pending))
            crash_point("batch")  # tests only (DISTILL_CRASH_AT): killed mid-unit
            writer.put(where, ids, logp)
            bar.update(len(pending))
            pending.clear()
            where.clear()

    for item in loader:
        if item.failure is not None:
            raise item.failure
        if writer is None or dataset.units[item.unit] is not writer.unit:
            if writer is not None:  # previous unit complete: batches never span units
                flush()
                yield writer.write(cfg.out, growth)
            writer = _UnitWriter(dataset.units[item.unit], dataset.attrs)
        for s, path, err in item.bad:
            writer.bad[s] = {"sample": s, "path": path, "error": err}
        unit = writer.unit
        for j in torch.nonzero(item.ok).flatten().tolist():
            slot, sample = item.keys[j]
            pending.append(item.views[j])
            where.append((slot - unit.slot_start, sample - unit.start))
            if len(pending) == cfg.batch_size:
                flush()
    if writer is not None:
        flush()
        yield writer.write(cfg.out, growth)


class StoreWriteError(CommandError):
    """Writing the store failed (disk full, quota, I/O error; an object store refusing or
    failing requests): the job is unfinished (exit 1) and resumable, since only committed
    units count."""


# errno -> what to do about it; other OSErrors while writing are bad input (a path, rights).
_WRITE_ERRNOS = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space (disk quota exceeded)",
    errno.EFBIG: "free space or raise the file size limit",
    errno.EIO: "check the disk",
}


def _write_failure(e: BaseException) -> OSError | None:
    """The disk-full or I/O OSError behind ``e`` (zarr may wrap it), or None."""
    return next((c for c in causes(e) if isinstance(c, OSError) and c.errno in _WRITE_ERRNOS), None)


@contextlib.contextmanager
def _store_writes(out: str) -> Iterator[None]:
    """Turn a disk-full or I/O error while writing ``out``, or an object store refusing or
    failing a request (:func:`~teacher_store.storage.failures.storage_failure`), into a one-line,
    resumable failure (exit 1)."""
    try:
        yield
    except Exception as e:
        loc = Location.at(out)
        remote = storage_failure(loc, e)
        if remote is not None:  # an object store refusing or failing a request mid-run
            raise StoreWriteError(
                f"cannot write the store {loc.display}: {remote[0]}; {remote[1]}, then re-run "
                "the same command to resume"
            ) from None
        err = _write_failure(e)
        if err is None:
            raise
        where = f" ({printable_path(err.filename)})" if err.filename else ""
        raise StoreWriteError(
            f"cannot write the store {printable_path(out)}: {err.strerror}{where}; "
            f"{_WRITE_ERRNOS[err.errno or 0]} and re-run the same command to resume"
        ) from None


def _check_same_job(out: str, attrs: StoreAttrs, rank: int, growth: Growth | None) -> None:
    """Refuse to write units that rank 0's store would not describe: every launcher (node) of a
    job must run the same options on the same data, or the store would mix two configs."""
    if growth is not None:  # the root is the old store's until the growth finishes
        diff = attrs_differences(growth.attrs.to_dict(), attrs.to_dict())
    else:
        diff = store_differences(out, attrs)
    if diff:
        raise StoreConflict(
            f"rank {rank}: this launcher's generate options or data differ from rank 0's "
            f"store {printable_path(out)} ({', '.join(diff)} differ); start every node with "
            "the same options, the same data and the same --threads"
        )


def run_generate(
    cfg: GenerateConfig, decode_hook: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Generate (or resume) the store ``cfg.out``; returns a summary dict (rank 0's view).

    ``decode_hook(sample)`` is called on every image decode done in this process (with
    ``workers=0``, all of them): a way to count decodes.
    """
    from models import create_teacher
    from teacher_store.store.class_order import teacher_class_order

    # A bad --out fails now, in one line, before anything is created or deleted.
    output_location(cfg.out)
    check_apart(cfg.data, cfg.out)
    like = apply_like(cfg) if cfg.like else None  # (cfg with the views of --like, record, attrs)
    cfg = like[0] if like else cfg
    runtime = init_runtime(cfg.device, _BARRIER_TIMEOUT_S)
    rank, device = runtime.rank, runtime.device
    cfg = settle_job_config(cfg, rank, runtime.world)
    folder = open_images(cfg.data, cfg.max_image_pixels)
    warning = folder.skipped_summary()
    if warning and rank == 0:
        print(warning, file=sys.stderr)
    check_decode(cfg.decode, device)
    if cfg.decode == "gpu" and cfg.workers:
        # CUDA cannot run in forked DataLoader workers: decode and render in this process.
        if rank == 0:
            print("--decode gpu: rendering in the main process (--workers 0)", file=sys.stderr)
        cfg = cfg.model_copy(update={"workers": 0})
    model, info = create_teacher(cfg.teacher, cfg.checkpoint)
    order = teacher_class_order(model, info.num_classes, info.weights_sha256 or "")
    # Every image's content digest, recorded in the attrs and the store, checked on each read.
    folder = with_content(folder, cfg.out, cfg.overwrite, cfg.progress, rank, runtime.world)
    attrs = build_attrs(cfg, folder, info, device.type, order)
    if like:
        attrs = attrs.model_copy(update={"like": like[1]})
        check_like(attrs, like[2])
    teacher = Teacher(model, info, device, cfg.topk, cfg.amp)
    teacher.check_input(int(attrs.teacher["input_size"][1]))  # before the store is created
    with _store_writes(cfg.out):
        return _generate(cfg, folder, attrs, teacher, decode_hook)


@contextlib.contextmanager
def _undone_on_failure(out: str, created: bool, existed: bool) -> Iterator[list[Any]]:
    """Remove the store this run ``created`` when the run fails before committing any unit,
    so that a corrected re-run starts afresh without --overwrite (one process only: with
    several, another rank may be committing). A folder that did not exist goes too.

    Yields the list the run appends each committed unit's record to: only units this run
    committed count (never a listing, which an outage could show empty)."""
    committed: list[Any] = []
    try:
        yield committed
    except Exception:
        if created and not committed:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                loc = Location.at(out)
                loc.clear()
                if not existed:
                    Path(loc.root).rmdir()
        raise


def _generate(
    cfg: GenerateConfig,
    folder: ImageSource,
    attrs: StoreAttrs,
    teacher: Teacher,
    decode_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    from tqdm import tqdm

    rank, world, _ = dist_env()
    loc = Location.at(cfg.out)
    existed = not loc.is_local or loc.fs.exists(loc.root)
    growth, resumed = None, True
    if rank == 0:
        growth = None if cfg.overwrite else begin_growth(cfg.out, attrs, folder.content)
        resumed = True if growth else create_store(cfg.out, attrs, cfg.overwrite, folder.content)
    units = shard_units(attrs)
    created = rank == 0 and world == 1 and not resumed
    with _undone_on_failure(cfg.out, created, existed) as records:
        barrier(world)
        if rank != 0:
            growth = pending_growth(cfg.out)
            _check_same_job(cfg.out, attrs, rank, growth)
        done = committed_units(cfg.out, units)
        todo = [u for u in units if u.name not in done]
        barrier(world)  # every rank has its list before anyone commits a unit
        mine = todo[rank::world]
        gpu_decode = teacher.device if cfg.decode == "gpu" else None
        order = recorded_view_order(attrs.config)
        first = growth.first_slot if growth is not None else None
        # Each rendering process reads the images of its coming steps ahead, in threads.
        reader = read_ahead(folder, cfg.read_threads)
        dataset = UnitViews(reader, attrs, cfg.recipe, mine, gpu_decode, order, decode_hook, first)
        total = sum((u.slot_stop - dataset.first_slot(u)) * (u.stop - u.start) for u in mine)
        show = cfg.progress and rank == 0
        bar = tqdm(total=total, unit="view", disable=not show, file=sys.stderr)
        t0 = time.perf_counter()
        try:
            for record in _run_units(cfg, dataset, teacher, bar, growth):
                records.append(record)  # appended as committed: a failure after keeps the store
        finally:
            bar.close()  # a failure's one-line message then starts on a line of its own
            if isinstance(reader, ReadAhead):
                reader.close()
    elapsed = time.perf_counter() - t0
    barrier(world)
    manifest = None
    if rank == 0 and len(committed_units(cfg.out, units)) == len(units):
        manifest = finish_store(cfg.out, attrs, units)
    barrier(world)
    check_read_some(cfg.data, cfg.out, attrs.num_samples, manifest, world)
    return {
        "store": Location.at(cfg.out).display,
        "resumed": bool(resumed and done),
        "units": len(units),
        "units_skipped": len(done),
        "units_written": len(records),
        "views_computed": total,
        "views_per_s": total / elapsed if elapsed > 0 else 0.0,
        "complete": manifest is not None,
        "grown_from_views": growth.from_views if growth is not None else None,
        "bad_samples": manifest["bad_samples"] if manifest else [],
        # A folder's walk may leave entries out (links out of the root, ...); shards none.
        "skipped": [{"path": p, "reason": r} for p, r in getattr(folder, "skipped", ())],
        "device": str(teacher.device),
        "world_size": world,
    }
