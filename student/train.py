"""`distill train`: a student distilled from stored sparse targets, no teacher in memory.

Per epoch e the store's view slot s(e) is replayed on the trainer's own images at the student's
resolution; its top-K teacher targets stream block-wise from the store (local path, fsspec URL
or the service). With ``teacher`` set, the same views go through that teacher every step instead:
the online-KD baseline used only by benchmarks.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.runtime import Runtime, dist_env, init_runtime, share_from_main
from student.checkpoint import load_checkpoint, save_checkpoint
from student.config import TrainConfig, resolve_recipe
from student.curriculum import (
    Curriculum,
    Regularizers,
    build_curriculum,
    check_family,
    check_store,
    compute_fraction,
)
from student.data import TargetCache
from student.evaluate import classes_aligned, evaluate, teacher_agreement
from student.loader import StoreBatch, StoreLoader, open_teacher_targets
from student.loss import mixed_label_loss, sparse_kd_loss
from student.lowfreq import reduce_batch
from student.sampler import Cursor
from student.schedule import lr_at
from teacher_store.errors import DatasetMismatch, StoreMismatch
from teacher_store.images.dataset import DatasetFingerprint
from teacher_store.images.source import ImageSource, open_images
from teacher_store.views.replay import view_to_float

# Options that may differ between a run and its resume without changing what is trained.
# "out": a moved run folder, or one shared folder mounted at other paths on other nodes.
RUNTIME_FIELDS = frozenset(
    {
        "out",
        "workers",
        "read_threads",
        "progress",
        "device",
        "max_steps",
        "tensorboard",
        "token_file",
        "store",
        "resume",
        "retry_budget_s",
        "checkpoint_every",
    }
)
_TRAIN_AGREEMENT_SAMPLES = 128  # training samples whose views measure the fit to the teacher


def _open_targets(cfg: TrainConfig, folder: ImageSource) -> TargetCache:
    """The store's targets; the client refuses a store built from another dataset than
    ``folder`` unless ``--allow-dataset-mismatch`` (then no fingerprint is passed)."""
    token = Path(cfg.token_file).read_text().strip() if cfg.token_file else None
    return open_teacher_targets(
        cfg.store,
        folder,
        token,
        cfg.allow_dataset_mismatch,
        cfg.retry_budget_s,
        cfg.teacher_weights,
    )


@dataclass
class _Run:
    """Mutable state of one training run (what a checkpoint holds)."""

    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema: Any
    step: int = 0
    cursor: Cursor = field(default_factory=Cursor)
    history: list[dict[str, Any]] = field(default_factory=list)
    # What the run trains on (:func:`store_record`): every checkpoint keeps it, and a resume
    # on another store or dataset is refused.
    store: dict[str, Any] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        module = getattr(self.model, "module", self.model)
        return {
            "store": self.store,
            "model": module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "step": self.step,
            "cursor": self.cursor.to_dict(),
            "rng": torch.get_rng_state(),
            "config": self.cfg.to_dict(),
            "num_classes": int(module.num_classes),  # type: ignore[arg-type]  # timm's attribute
        }

    def restore(self, state: dict[str, Any]) -> None:
        getattr(self.model, "module", self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state.get("model_ema") is not None:
            self.ema.module.load_state_dict(state["model_ema"])
        self.step, self.cursor = int(state["step"]), Cursor.from_dict(state["cursor"])
        torch.set_rng_state(state["rng"])


def _build_run(
    cfg: TrainConfig,
    num_classes: int,
    img_size: int,
    device: torch.device,
    rates: tuple[float, float] | None = None,
) -> _Run:
    """Model, optimizer and EMA; ``rates`` = the largest (dropout, drop path) a schedule sets."""
    import timm.optim
    from timm.utils import ModelEmaV3

    from models import create_student

    torch.manual_seed(cfg.seed)  # init, dropout and drop-path; checkpointed with the run
    drop_rate, drop_path = rates or (cfg.drop_rate, cfg.drop_path)
    kw: dict[str, Any] = {}
    if drop_path:
        kw["drop_path_rate"] = drop_path
    if drop_rate:
        kw["drop_rate"] = drop_rate
    model = create_student(cfg.model, num_classes, img_size=img_size, **kw).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt_kw: dict[str, Any] = {"momentum": cfg.momentum} if cfg.opt == "sgd" else {}
    optimizer = timm.optim.create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, **opt_kw
    )
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema else None
    return _Run(cfg, model, optimizer, ema)


def _store_record(targets: TargetCache, address: str, folder: ImageSource) -> dict[str, Any]:
    """What a checkpoint records of the data a run trains on: the store's identity (its
    manifest's digest: the same through a folder, a URL or the service) and address, and the
    image folder's fingerprint."""
    return {
        "identity": targets.identity,
        "address": address,
        "dataset": folder.fingerprint().to_dict(),
        "version": 1,
    }


def _check_same_data(
    saved: dict[str, Any] | None, now: dict[str, Any], out: Path, targets: TargetCache
) -> None:
    """StoreMismatch (one line, both stores named) when the checkpoint's run was trained on
    another store (a store grown since, with the slots it had unchanged, is the same store);
    ValueError when on another image folder."""
    if not saved:
        print(
            f"note: {out / 'last.pth'} records no store identity (made before checkpoints kept "
            "one): cannot check that --store is the store the run began on",
            file=sys.stderr,
        )
        return
    same = not saved.get("identity") or targets.continues(str(saved["identity"]))
    if not same and now["identity"]:
        raise StoreMismatch(
            f"cannot resume {out}: its checkpoint was trained on store {saved.get('address')} "
            f"(identity {saved['identity']}), and --store {now['address']} is another store "
            f"(identity {now['identity']}); resume with the store the run began on, or start "
            "a new run in another --out",
            str(saved["identity"]),
            str(now["identity"]),
        )
    old, new = saved.get("dataset"), now["dataset"]
    if old and old != new:
        why = DatasetFingerprint.from_dict(old).mismatch(DatasetFingerprint.from_dict(new))
        raise DatasetMismatch(
            f"cannot resume {out}: --data is not the image folder the run began on "
            f"({why or 'another fingerprint'}); resume with the same --data"
        )


def _resume(run: _Run, out: Path, rt: Runtime, targets: TargetCache) -> None:
    """Restore rank 0's last.pth on every rank: only rank 0 writes checkpoints, so on other
    nodes ``out`` may hold none, or a stale one from an older job."""
    state: dict[str, Any] | ValueError | None = None
    if rt.is_main:
        try:
            state = load_checkpoint(out / "last.pth")
        except ValueError as e:  # every rank fails with rank 0's one-line reason
            state = e
    state = share_from_main(state, rt.world, rt.device if rt.device.type == "cuda" else None)
    if isinstance(state, ValueError):
        raise state
    assert state is not None
    old = {k: v for k, v in state["config"].items() if k not in RUNTIME_FIELDS | {"resume"}}
    new = {k: v for k, v in run.cfg.to_dict().items() if k not in RUNTIME_FIELDS | {"resume"}}
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        raise ValueError(f"cannot resume {out}: options changed since the checkpoint: {diff}")
    _check_same_data(state.get("store"), run.store, out, targets)
    run.restore(state)


class _Logger:
    """Metrics to RUN_DIR/metrics.jsonl and (optionally) TensorBoard; rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled, self.path, self.tb = enabled, out / "metrics.jsonl", None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, int | float) and k not in ("step", "epoch"):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


@dataclass
class _Ctx:
    """What every step needs besides the run state."""

    cfg: TrainConfig
    device: torch.device
    norm: tuple[tuple[float, ...], tuple[float, ...]]
    targets: TargetCache
    total_steps: int
    warmup_steps: int
    teacher: Any = None  # (model, mean, std, input size) in online-KD baseline mode
    curriculum: Curriculum | None = None
    regs: Regularizers | None = None


def _teacher_targets(ctx: _Ctx, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Online KD: the teacher's log-probs [B, C] on its own-size views, as dense K = C targets."""
    model, mean, std, _ = ctx.teacher
    with torch.inference_mode():
        logp = torch.log_softmax(model(view_to_float(images, mean, std)).float(), -1)
    ids = torch.arange(logp.shape[-1], device=logp.device).expand_as(logp)
    return ids.clone(), logp.clone()  # K = C: dense KD, the online baseline


def _step(run: _Run, ctx: _Ctx, batch: StoreBatch) -> float:
    cfg, dev = ctx.cfg, ctx.device
    batch = batch.to(dev, non_blocking=True)
    ids, logp, weight = batch.topk_ids, batch.topk_logprobs, batch.valid
    if ctx.teacher is not None:
        assert batch.teacher_images is not None  # the loader renders them in online mode
        ids, logp = _teacher_targets(ctx, batch.teacher_images)
    x = batch.inputs(*ctx.norm)
    if ctx.curriculum is not None:  # EfficientTrain++: keep the lowest band x band frequencies
        band = ctx.curriculum.bandwidth(run.step, ctx.total_steps)
        if band is not None:
            x = reduce_batch(x, band, ctx.curriculum.lowfreq_mode)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    run.model.train()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp and dev.type == "cuda"):
        logits = run.model(x)
    loss = cfg.kd_weight * sparse_kd_loss(logits, ids, logp, cfg.temperature, weight=weight)
    if cfg.hard_label_weight:
        loss = loss + cfg.hard_label_weight * mixed_label_loss(
            logits, batch.labels, batch.partner_labels, batch.lam, cfg.label_smoothing
        )
    lr = lr_at(run.step, ctx.total_steps, cfg.lr, ctx.warmup_steps, cfg.min_lr, cfg.sched)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model, step=run.step)
    run.step += 1
    return float(loss.detach())


def _train_epoch(run: _Run, ctx: _Ctx, loader: StoreLoader, bar: Any) -> dict:
    cfg = ctx.cfg
    losses, seen, t0 = [], 0, time.perf_counter()
    for batch in loader:
        losses.append(_step(run, ctx, batch))
        seen += len(batch.samples)
        run.cursor = Cursor(loader.epoch, loader.position, store=run.store["identity"])
        bar.update(len(batch.samples))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0 and dist_env()[0] == 0:
            save_checkpoint(Path(cfg.out) / "last.pth", run.state())
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    elapsed = time.perf_counter() - t0
    return {"loss": float(np.mean(losses)) if losses else math.nan, "images": seen, "time": elapsed}


def _settle(
    cfg: TrainConfig, attrs: Any, folder: ImageSource, rt: Runtime
) -> tuple[TrainConfig, Path]:
    """Settle presets against the store and data; the resolved config and the run folder."""
    cfg, notes = _resolve_recipe(cfg, attrs, folder)
    if cfg.hard_label_weight and not classes_aligned(attrs, folder):
        raise ValueError(
            "--hard-label-weight needs the teacher's classes to be the folder's classes "
            f"({attrs.num_classes} teacher classes, {len(folder.classes)} folders)"
        )
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if rt.is_main:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return cfg, out


def _resolve_recipe(
    cfg: TrainConfig, attrs: Any, folder: ImageSource
) -> tuple[TrainConfig, list[str]]:
    """Store- and model-dependent preset values (see student/recipes.py)."""
    if cfg.recipe is None:
        return cfg, []
    from models import create_student

    img_size = cfg.img_size or int(attrs.teacher["input_size"][1])
    try:
        with torch.device("meta"):  # parameter count without allocating weights
            probe = create_student(cfg.model, attrs.num_classes, img_size=img_size)
    except (RuntimeError, NotImplementedError):  # a model whose init needs real tensors
        probe = create_student(cfg.model, attrs.num_classes, img_size=img_size)
    params = sum(p.numel() for p in probe.parameters())
    return resolve_recipe(cfg, attrs.recipe, classes_aligned(attrs, folder), params)


def _curriculum(cfg: TrainConfig, attrs: Any, img_size: int) -> Curriculum | None:
    """The run's curriculum, checked against the model family and the store's schedule."""
    curriculum = build_curriculum(cfg, img_size)
    if curriculum is not None:
        check_family(curriculum, cfg.model)
        check_store(curriculum, attrs.recipe, int(attrs.schedule_views), cfg.epochs)
    return curriculum


def _online_teacher(cfg: TrainConfig, device: torch.device) -> Any:
    if cfg.teacher is None:
        return None
    from models import create_teacher

    model, info = create_teacher(cfg.teacher, cfg.teacher_checkpoint)
    size = cfg.teacher_img_size or int(info.input_size[1])  # the teacher's own input size
    return model.to(device).eval(), info.mean, info.std, size


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) a student; returns a summary of the last epoch and evaluation."""
    rt = init_runtime(cfg.device)  # joins torchrun's process group when launched by it
    folder = open_images(cfg.data)
    warning = folder.skipped_summary()
    if warning and rt.is_main:
        print(warning, file=sys.stderr)
    targets = _open_targets(cfg, folder)
    try:
        cfg, out = _settle(cfg, targets.attrs, folder, rt)
        return _train(cfg, rt, targets, folder, out)
    finally:
        targets.close()


def _train(
    cfg: TrainConfig, rt: Runtime, targets: TargetCache, folder: ImageSource, out: Path
) -> dict[str, Any]:
    """Build (or resume) the run on this rank and train it; the last epoch's record."""
    attrs, device = targets.attrs, rt.device
    img_size = cfg.img_size or int(attrs.teacher["input_size"][1])
    curriculum = _curriculum(cfg, attrs, img_size)
    teacher = _online_teacher(cfg, device)
    rank, world, _ = dist_env()
    loader = StoreLoader(
        targets,
        folder,
        cfg.loader_config(
            img_size=img_size,
            rank=rank,
            world_size=world,
            pin_memory=device.type == "cuda",
            teacher_size=teacher[3] if teacher is not None else None,
            with_targets=teacher is None,  # online KD: targets come from the teacher
        ),
    )
    steps_per_epoch = loader.steps_per_epoch
    rates = None
    if curriculum is not None:
        rates = (max(curriculum.drop_rate), max(curriculum.drop_path))
    run = _build_run(cfg, attrs.num_classes, img_size, device, rates)
    address = cfg.store if isinstance(cfg.store, str) else " + ".join(cfg.store)
    run.store = _store_record(targets, address, folder)
    if cfg.resume:
        _resume(run, out, rt, targets)
    module = run.model
    if rt.world > 1:
        ids = [rt.local_rank] if device.type == "cuda" else None
        run.model = torch.nn.parallel.DistributedDataParallel(run.model, device_ids=ids)
    if cfg.compile:
        run.model = torch.compile(run.model)  # type: ignore[assignment]
    total = steps_per_epoch * cfg.epochs
    ctx = _Ctx(
        cfg,
        device,
        _mean_std(module),
        targets,
        total,  # max_steps only stops early: it must not change the schedule
        int(cfg.warmup_epochs * steps_per_epoch),
        teacher,
        curriculum,
        Regularizers(module, *rates) if rates else None,
    )
    logger = _Logger(out, rt.is_main, cfg.tensorboard)
    try:
        return _loop(run, ctx, loader, logger, img_size)
    finally:
        logger.close()


def _epoch_settings(ctx: _Ctx, loader: StoreLoader, epoch: int) -> dict[str, Any]:
    """Apply the curriculum's plan for ``epoch`` (render size, dropout, drop path)."""
    if ctx.curriculum is None:
        return {"img_size": loader.img_size}
    a = loader.attrs
    plan = ctx.curriculum.epoch_plan(epoch, ctx.cfg.epochs, int(a.views), int(a.schedule_views))
    loader.img_size = plan.img_size
    if ctx.regs is not None:
        ctx.regs.set(plan.drop_rate, plan.drop_path)
    return {
        "stage": plan.stage,
        "img_size": plan.img_size,
        "drop_rate": plan.drop_rate,
        "drop_path": plan.drop_path,
    }


def _band_stats(ctx: _Ctx, first: int, last: int) -> dict[str, Any]:
    """EfficientTrain++ bandwidths of steps ``first..last-1`` and the compute consumed."""
    c = ctx.curriculum
    if c is None or c.bandwidth(0, ctx.total_steps) is None or last <= first:
        return {}
    bands = [int(c.bandwidth(s, ctx.total_steps) or 0) for s in range(first, last)]
    return {
        "bandwidth_min": min(bands),
        "bandwidth_max": max(bands),
        "bandwidth_mean": float(np.mean(bands)),
        "compute_fraction": compute_fraction(last, ctx.total_steps, c.size_start, c.size_end),
    }


def _fit_samples(train_ids: np.ndarray) -> np.ndarray:
    """Up to _TRAIN_AGREEMENT_SAMPLES training samples, evenly spaced (a fixed subset)."""
    if len(train_ids) <= _TRAIN_AGREEMENT_SAMPLES:
        return train_ids
    pick = np.linspace(0, len(train_ids) - 1, _TRAIN_AGREEMENT_SAMPLES).round().astype(np.int64)
    return train_ids[pick]


def _evaluate_and_save(run: _Run, ctx: _Ctx, loader: StoreLoader, img_size: int) -> dict[str, Any]:
    """Rank 0 at an epoch's end: held-out metrics (of the EMA model if any), agreement with the
    teacher on training views of this epoch's slot (the fit), then last.pth."""
    module = getattr(run.model, "module", run.model)
    eval_model = run.ema.module if run.ema is not None else module
    fit = _fit_samples(loader.train_samples)
    with torch.random.fork_rng(devices=[]):  # evaluation leaves training's RNG alone
        metrics = evaluate(
            eval_model,
            loader.folder,
            loader.held_out,
            ctx.targets,
            loader.attrs,
            img_size,
            ctx.norm,
            ctx.device,
        )
        if ctx.teacher is None:  # online KD fits its own teacher, not the store's
            agree = teacher_agreement(
                eval_model, loader.views, fit, ctx.targets, loader.slot, ctx.norm, ctx.device
            )
            metrics.update(train_agreement=agree[0], train_agreement_views=agree[1])
    save_checkpoint(Path(ctx.cfg.out) / "last.pth", run.state())
    return metrics


def _loop(
    run: _Run, ctx: _Ctx, loader: StoreLoader, logger: _Logger, img_size: int
) -> dict[str, Any]:
    from tqdm import tqdm

    cfg, out = ctx.cfg, Path(ctx.cfg.out)
    rank, world, _ = dist_env()
    summary: dict[str, Any] = {}
    for epoch in range(run.cursor.epoch, cfg.epochs):
        start = run.cursor.position if epoch == run.cursor.epoch else 0
        run.cursor = Cursor(epoch, start, store=run.store["identity"])
        loader.set_epoch(epoch, start)
        slot, order = loader.slot, loader.plan.order
        settings, first_step = _epoch_settings(ctx, loader, epoch), run.step
        if cfg.record_samples:
            (out / "samples").mkdir(exist_ok=True)
            np.save(out / "samples" / f"epoch{epoch}-rank{rank}.npy", order)
        bar = tqdm(
            total=len(loader) * cfg.batch_size,
            unit="img",
            desc=f"epoch {epoch} (view slot {slot})",
            disable=not cfg.progress or rank != 0,
            file=sys.stderr,
        )
        stats = _train_epoch(run, ctx, loader, bar)
        bar.close()
        if run.cursor.position >= loader.steps_per_epoch:
            run.cursor = Cursor(epoch + 1, 0, store=run.store["identity"])
        record: dict[str, Any] = {
            "epoch": epoch,
            "step": run.step,
            "slot": slot,
            "loss": stats["loss"],
            "images_per_s": world * stats["images"] / max(stats["time"], 1e-9),
            "train_time_s": stats["time"],
            **settings,
            **_band_stats(ctx, first_step, run.step),
        }
        if rank == 0:
            record.update(_evaluate_and_save(run, ctx, loader, img_size))
        logger.log(record)
        summary = record
        if world > 1:
            torch.distributed.barrier()
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    return summary


def _mean_std(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation timm records on the model (``pretrained_cfg``)."""
    cfg: dict[str, Any] = model.pretrained_cfg  # type: ignore[assignment]  # nn.Module types it badly
    return tuple(cfg["mean"]), tuple(cfg["std"])
