"""The public data API for your own training loop: replayed views with their teacher targets.

:class:`StoreLoader` is what ``distill train`` iterates over, so a plain PyTorch, timm or
Lightning loop sees exactly the batches ``distill train`` sees: for epoch e, this rank's share
of the deterministic shard-aware order of the training samples, the store's view slot s(e)
replayed at the student's resolution in DataLoader workers, and the slot's sparse top-K
teacher targets gathered block-wise (with read-ahead) from the store in the main process.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from student.data import (
    SAMPLER_WINDOW_PAIRS,
    BatchPlan,
    ReplayDataset,
    TargetCache,
    open_targets,
    split_samples,
)
from student.ensemble import TeacherEnsemble, check_same_views
from student.loader_config import (
    MAX_EPOCHS,
    LoaderArgumentError,
    LoaderConfig,
    is_whole,
)
from student.sampler import Cursor, mix_groups, pair_order, rank_share
from student.schedule import slot_for_epoch
from teacher_store.errors import StoreMismatch, portable
from teacher_store.images.dataset import CorruptImageError
from teacher_store.images.prefetch import ReadAhead, read_ahead
from teacher_store.images.source import ImageSource, labels_of, open_images
from teacher_store.options import check_int
from teacher_store.reader.client import DatasetMismatchError
from teacher_store.store.content import SampleDigests, checked_folder, dataset_difference
from teacher_store.store.schema import StoreAttrs
from teacher_store.views.codec import PAIR_TILE
from teacher_store.views.pairing import slot_partners
from teacher_store.views.replay import view_to_float

log = logging.getLogger("distill.student")
_READ_AHEAD = 2  # batches whose target blocks are fetched early


@dataclass(frozen=True)
class StoreBatch:
    """One batch: B replayed views of view slot ``slot`` and the teacher's targets for them."""

    images: torch.Tensor  # uint8 [B, 3, H, W], the views as the teacher saw them (any H = W)
    samples: torch.Tensor  # int64 [B] sample ids (the dataset's canonical order)
    topk_ids: torch.Tensor  # int64 [B, K] teacher class ids in rank order ([B, 0]: no targets)
    topk_logprobs: torch.Tensor  # float32 [B, K] teacher log-probabilities at T = 1
    valid: torch.Tensor  # bool [B]: the teacher computed the view and it replayed here
    labels: torch.Tensor  # int64 [B] the dataset's labels
    partner_labels: torch.Tensor  # int64 [B] the MixUp/CutMix partner's label (= labels if none)
    lam: torch.Tensor  # float32 [B] the view's share of the mix (1.0 when unmixed)
    slot: int  # the store's view slot of this epoch
    teacher_images: torch.Tensor | None = None  # uint8 [B, 3, T, T] (online-KD baseline only)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StoreBatch:
        """The batch with every tensor on ``device``."""
        moved: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
        return StoreBatch(**moved)

    def inputs(self, mean: Any, std: Any) -> torch.Tensor:
        """float32 [B, 3, H, W] model inputs ``(x / 255 - mean) / std``."""
        return view_to_float(self.images, mean, std)


class _Views(torch.utils.data.Dataset[dict[str, Any]]):
    """ReplayDataset items, plus the same view at the teacher's size when ``teacher_size``."""

    def __init__(self, views: ReplayDataset, teacher_size: int | None) -> None:
        self.views, self.teacher_size = views, teacher_size

    def __len__(self) -> int:
        return len(self.views)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict[str, Any]]:
        """A batch at once (one decode per image), as ReplayDataset does, unless the teacher
        needs its own render of each view.

        A fatal error (an image that is not the store's, a shard gone, storage refused: a
        ``ValueError``; unreadable images are invalid views, not errors) comes back pickled as
        the batch's ``failure``, for the main process to raise: raised in a DataLoader worker it
        would reach the main process as a multi-line RuntimeError, without its type.
        """
        try:
            if self.teacher_size is None:
                items = self.views.__getitems__(keys)
            else:
                items = [self[k] for k in keys]
        except ValueError as e:
            failure = pickle.dumps(portable(e))
            return [self._failed(key, failure) for key in keys]
        for item in items:
            item["failure"] = b""
        return items

    def _failed(self, key: tuple[int, int], failure: bytes) -> dict[str, Any]:
        """A placeholder item carrying ``failure`` (every field present: the batch is collated)."""
        size = self.views.img_size
        item = {"image": torch.zeros(3, size, size, dtype=torch.uint8), "sample": key[1]}
        item.update(label=0, partner_label=0, lam=1.0, ok=False, failure=failure)
        if self.teacher_size is not None:
            t = self.teacher_size
            item["teacher_image"] = torch.zeros(3, t, t, dtype=torch.uint8)
        return item

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        item = self.views[key]
        size = self.teacher_size
        if size is not None:
            try:  # the replayer's cache holds the decoded images: no second decode
                item["teacher_image"] = self.views.replay.render(*key, size).pixels
            except CorruptImageError:
                item["teacher_image"] = torch.zeros(3, size, size, dtype=torch.uint8)
        return item


def open_checked_targets(
    store: str,
    folder: ImageSource,
    token: str | None = None,
    allow_dataset_mismatch: bool = False,
    retry_budget_s: float = 600.0,
) -> TargetCache:
    """The targets of the store at ``store`` (path, fsspec URL or service URL), refusing with
    a ValueError a store built from another dataset than ``folder`` unless allowed."""
    have = folder.fingerprint()
    want = None if allow_dataset_mismatch else have.to_dict()
    try:
        return open_targets(store, token, want, retry_budget_s)
    except DatasetMismatchError as e:
        recorded = lambda: _store_digests(store, token, retry_budget_s)  # noqa: E731
        why = dataset_difference(e.store_dataset, folder, recorded) or e.why
        raise ValueError(
            f"--data {folder.location} is not the dataset the store was built from ({why}); "
            "pass --allow-dataset-mismatch to train anyway"
        ) from None


def _store_digests(store: str, token: str | None, budget: float) -> SampleDigests | None:
    """The store's per-sample content digests, read over its address (to name a changed
    sample in a refusal)."""
    targets = open_targets(store, token, None, budget)
    try:
        return targets.sample_digests()
    finally:
        targets.close()


def open_teacher_targets(
    stores: str | Sequence[str],
    folder: ImageSource,
    token: str | None = None,
    allow_dataset_mismatch: bool = False,
    retry_budget_s: float = 600.0,
    teacher_weights: Sequence[float] | None = None,
) -> TargetCache:
    """The targets of one store, or of several stores' ensemble (:mod:`student.ensemble`):
    each store checked against ``folder`` as :func:`open_checked_targets` does, all of them
    against each other (the same views and classes: one-line ValueError otherwise)."""
    many = [stores] if isinstance(stores, str) else list(stores)
    if not many:
        raise ValueError("no --store given")
    if len(many) == 1:
        if teacher_weights is not None and len(list(teacher_weights)) != 1:
            raise ValueError("--teacher-weights needs one weight per --store")
        return open_checked_targets(many[0], folder, token, allow_dataset_mismatch, retry_budget_s)
    caches: list[TargetCache] = []
    try:
        for store in many:
            caches.append(
                open_checked_targets(store, folder, token, allow_dataset_mismatch, retry_budget_s)
            )
        check_same_views(many, [c.attrs for c in caches])
        return TeacherEnsemble(caches, teacher_weights)
    except BaseException:
        for c in caches:
            c.close()
        raise


def _check_cursor_store(cursor: Cursor, targets: TargetCache) -> None:
    """StoreMismatch unless ``cursor`` was taken on this store (or records no store)."""
    have, address = targets.identity, targets.address or "the given targets"
    if cursor.store and have and not targets.continues(cursor.store):
        raise StoreMismatch(
            f"cursor {cursor.epoch}:{cursor.position} was taken on the store with identity "
            f"{cursor.store}, and this loader reads {address} (identity {have}), another "
            "store: resume on the store the cursor was taken on, or start without a cursor",
            cursor.store,
            have,
        )


def epoch_plan(
    attrs: StoreAttrs,
    train_samples: np.ndarray,
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    epochs: int | None = None,
    view_schedule: str = "wrap",
    start: int = 0,
) -> BatchPlan:
    """The batches of ``epoch`` for one rank, as :class:`StoreLoader` iterates them: the
    epoch's view slot, its mixing pairs adjacent (one decode serves both views), shard-aware
    over tile pairs, ranks getting whole pairs (codec 2, ``teacher_store.views.pairing``).
    Arrays only (no per-sample Python objects), so it costs O(N) numpy memory at any N."""
    slot = slot_for_epoch(epoch, epochs or epoch + 1, int(attrs.views), view_schedule)
    # A copy of slots A:B pairs its slot r as the views' slot A + r.
    partners = slot_partners(int(attrs.store_seed), attrs.view_slot(slot), int(attrs.num_samples))
    groups = mix_groups(partners)
    paired, of = pair_order(seed, epoch, train_samples, groups, PAIR_TILE, SAMPLER_WINDOW_PAIRS)
    order = rank_share(paired, of, rank, world_size, batch_size)
    return BatchPlan(order, slot, batch_size, start)


def _check_start(epoch: int, epochs: int | None, cursor: Cursor | None) -> None:
    """Where a loader starts, checked before the folder is scanned or the store opened (a
    cursor's position is checked against the epoch's length once the plan exists)."""
    err = LoaderArgumentError
    last = MAX_EPOCHS - 1 if epochs is None else epochs - 1
    if cursor is None:
        check_int("epoch", epoch, 0, last, err)
        return
    if not isinstance(cursor, Cursor):
        raise err([f"cursor {cursor!r}: must be a student.Cursor (a loader's .cursor)"])
    check_int("cursor epoch", cursor.epoch, 0, last, err)
    check_int("cursor position", cursor.position, 0, MAX_EPOCHS, err)


class StoreLoader:
    """Batches of one epoch (set by ``epoch`` or :meth:`set_epoch`) for one rank.

    ``store``: a store path, fsspec URL or service URL ``.../v1/stores/NAME`` (or an open
    :class:`~student.data.TargetCache`), or several stores of the same views: their teachers'
    ensemble (:mod:`student.ensemble`, weighted by ``teacher_weights``, default equal: not
    part of ``config``, like ``token``); ``data``: the images the store was built from (an
    ImageFolder's folder or URL, a tar shard pattern, or an open ImageSource).
    ``cursor``: resume mid-epoch from a :attr:`cursor` saved earlier (it overrides ``epoch``).
    ``config``: a :class:`~student.loader_config.LoaderConfig` (``TrainConfig.loader_config``
    gives ``distill train``'s); its fields are also accepted as keywords (``batch_size=32``,
    ``seed=``, ``epochs=``, ...), which build one or override ``config``'s. Iterating yields
    :class:`StoreBatch`; the last partial batch is dropped (DDP ranks stay in lockstep).
    """

    def __init__(
        self,
        store: str | TargetCache | Sequence[str],
        data: str | Path | ImageSource,
        config: LoaderConfig | None = None,
        *,
        epoch: int = 0,
        cursor: Cursor | None = None,
        token: str | None = None,
        teacher_weights: Sequence[float] | None = None,
        **options: Any,
    ) -> None:
        # The options are a LoaderConfig; keywords (img_size=, batch_size=, ...) build one, or
        # override the fields of ``config``.
        cfg = LoaderConfig.from_dict({**(config or LoaderConfig()).to_dict(), **options})
        self.config = cfg
        img_size, batch_size, rank, world_size = (
            cfg.img_size, cfg.batch_size, cfg.rank, cfg.world_size
        )  # fmt: skip
        val_fraction, seed, teacher_size = cfg.val_fraction, cfg.seed, cfg.teacher_size
        _check_start(epoch, cfg.epochs, cursor)  # the config's fields are checked in it
        self.folder = open_images(data)
        self._owns = not isinstance(store, TargetCache)
        if isinstance(store, TargetCache):
            self.targets = store
        else:
            stores = str(store) if isinstance(store, str | Path) else [str(x) for x in store]
            self.targets = open_teacher_targets(
                stores,
                self.folder,
                token,
                cfg.allow_dataset_mismatch,
                teacher_weights=teacher_weights,
            )
        self.attrs: StoreAttrs = self.targets.attrs
        try:  # a store the cursor was not taken on, or a damaged digest record: one line
            if cursor is not None:
                _check_cursor_store(cursor, self.targets)
            self.folder = self._checked(self.folder, rank)
        except ValueError:
            self.close()
            raise
        size = img_size if img_size is not None else int(self.attrs.teacher["input_size"][1])
        # Online KD renders each view twice (two sizes): cache the image and its partner.
        cache = 2 if teacher_size else 0
        # Each replaying process reads its coming batches' images ahead (cfg.read_threads).
        reader = read_ahead(self.folder, cfg.read_threads)
        self.views = ReplayDataset(reader, self.attrs, size, cache_size=cache)
        self._dataset = _Views(self.views, teacher_size)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.workers, self.seed, self.pin_memory = cfg.workers, seed, cfg.pin_memory
        self.epochs, self.view_schedule = cfg.epochs, cfg.view_schedule
        self.with_targets = cfg.with_targets
        # The store's N samples (a folder allowed to mismatch may hold more or fewer).
        n = int(self.attrs.num_samples)
        labels = np.zeros(n, np.int64)
        known = min(n, len(self.folder))
        labels[:known] = labels_of(self.folder, known)
        self.train_samples, self.held_out = split_samples(labels, val_fraction, seed)
        if len(self.train_samples) // world_size < batch_size:
            raise ValueError(
                f"batch size {batch_size} x {world_size} ranks exceeds the "
                f"{len(self.train_samples)} training samples; lower it"
            )
        self.epoch, self.start = epoch, 0
        if cursor is not None:
            self.epoch, self.start = cursor.epoch, cursor.position
        try:
            self._plan(self.epoch, self.start, "cursor position" if cursor else "start")
        except ValueError:
            self.close()
            raise

    def _checked(self, folder: ImageSource, rank: int) -> ImageSource:
        """``folder`` with every image read for replay checked against the store's per-sample
        content digests (a store without them: a one-line note, from rank 0)."""
        digests = self.targets.sample_digests()
        where = self.targets.address or "(the given targets)"
        checked, note = checked_folder(folder, digests, where, self.attrs.dataset)
        if note and rank == 0:
            log.warning("%s", note)
        return checked

    @property
    def img_size(self) -> int:
        """Resolution the views render at; may change between epochs (progressive resizing)."""
        return int(self.views.img_size)

    @img_size.setter
    def img_size(self, size: int) -> None:
        self.views.img_size = size  # DataLoader workers are created per epoch

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration epoch ``epoch``, from batch ``start`` on (at most the
        epoch's :attr:`steps_per_epoch`: a start past the end would skip the epoch)."""
        self._plan(epoch, start, "start")

    def _plan(self, epoch: int, start: int, what: str) -> None:
        last = MAX_EPOCHS - 1 if self.epochs is None else self.epochs - 1
        check_int("epoch", epoch, 0, last, LoaderArgumentError)
        if self.epochs is None and self.view_schedule != "wrap":
            raise ValueError(f"view_schedule {self.view_schedule!r} needs epochs=")
        plan = epoch_plan(
            self.attrs,
            self.train_samples,
            seed=self.seed,
            epoch=epoch,
            batch_size=self.batch_size,
            rank=self.rank,
            world_size=self.world_size,
            epochs=self.epochs,
            view_schedule=self.view_schedule,
            start=start,
        )
        steps = len(plan.order) // self.batch_size
        if not is_whole(start) or not 0 <= start <= steps:
            raise LoaderArgumentError(
                [
                    f"{what} {start!r}: must be an integer in [0, {steps}], the batches of epoch "
                    f"{epoch} for this rank (batch_size {self.batch_size}, world_size "
                    f"{self.world_size})"
                ]
            )
        plan.stride = max(1, self.workers)  # each worker's next batch, for its read-ahead
        self.epoch, self.start, self.plan = epoch, start, plan
        self.slot = plan.slot
        self.position = start

    @property
    def steps_per_epoch(self) -> int:
        """Batches in a whole epoch of this rank."""
        return len(self.plan.order) // self.batch_size

    @property
    def cursor(self) -> Cursor:
        """Where this rank stands (epoch, batches consumed, the store's identity); pass it
        back to resume (a loader over another store refuses it)."""
        if self.position >= self.steps_per_epoch:
            return Cursor(self.epoch + 1, 0, store=self.targets.identity)
        return Cursor(self.epoch, self.position, store=self.targets.identity)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[StoreBatch]:
        plan, n = self.plan, self.steps_per_epoch
        # Its own generator: a loader draws a seed when it starts, and from the global RNG that
        # draw would shift dropout / drop path after a mid-epoch resume (which starts one more).
        loader = torch.utils.data.DataLoader(
            self._dataset,
            batch_sampler=plan,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            generator=torch.Generator().manual_seed(self.seed),
        )
        for b, item in enumerate(loader, start=plan.start):
            samples = plan.batch(b)
            for ahead in range(b + 1, min(b + 1 + _READ_AHEAD, n)):
                self.targets.prefetch(plan.slot, plan.batch(ahead))
            batch = self._batch(item, samples)
            self.position = b + 1  # handed out = consumed: a checkpoint after it resumes after it
            yield batch

    def _batch(self, item: dict[str, Any], samples: np.ndarray) -> StoreBatch:
        failures = [f for f in item["failure"] if f]
        if failures:  # raised here, in the main process, with its type and one-line message
            raise pickle.loads(failures[0])  # our own worker's bytes
        ok = item["ok"].bool()
        if self.with_targets:
            ids, logp, valid = self.targets.gather(self.plan.slot, samples)
            valid = valid & ok
        else:
            ids = torch.zeros(len(samples), 0, dtype=torch.int64)
            logp, valid = torch.zeros(len(samples), 0), ok
        return StoreBatch(
            images=item["image"],
            samples=torch.as_tensor(samples, dtype=torch.int64),
            topk_ids=ids,
            topk_logprobs=logp,
            valid=valid,
            labels=item["label"].long(),
            partner_labels=item["partner_label"].long(),
            lam=item["lam"].float(),
            slot=self.plan.slot,
            teacher_images=item.get("teacher_image"),
        )

    def close(self) -> None:
        """Close the store reader when this loader opened it, and the read-ahead threads."""
        views = getattr(self, "views", None)
        if views is not None and isinstance(views.folder, ReadAhead):
            views.folder.close()
        if self._owns:
            self.targets.close()

    def __enter__(self) -> StoreLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_loader(
    store: str | TargetCache, data: str | Path | ImageSource, **kw: Any
) -> StoreLoader:  # kw: StoreLoader's (config=, epoch=, cursor=, token=, LoaderConfig fields)
    """The loader factory: ``StoreLoader(store, data, **kw)`` (see :class:`StoreLoader`)."""
    return StoreLoader(store, data, **kw)
