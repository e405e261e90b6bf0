"""Evaluation: held-out accuracy (when the teacher's classes are the folder's) and agreement
with the teacher's stored top-1 on the held-out samples' stored views."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from student.data import EvalDataset, ReplayDataset, TargetCache, open_targets, split_samples
from student.ensemble import TeacherEnsemble, check_same_views
from teacher_store.images.dataset import DatasetFingerprint
from teacher_store.images.source import ImageSource, labels_of, open_images
from teacher_store.options import MAX_BATCH, check_int
from teacher_store.store.content import checked_folder
from teacher_store.views.replay import view_to_float


def classes_aligned(attrs: Any, folder: ImageSource) -> bool:
    """True when the teacher's class index i is the folder's class i (labels are comparable)."""
    names = tuple(attrs.teacher.get("class_names") or ())
    if attrs.num_classes != len(folder.classes):
        return False
    return not names or names == folder.classes


@torch.inference_mode()
def _logits(model: torch.nn.Module, images: torch.Tensor, norm: Any, device: torch.device) -> Any:
    x = view_to_float(images.to(device), norm[0], norm[1])
    return model(x).float().cpu()


def evaluate(
    model: torch.nn.Module,
    folder: ImageSource,
    samples: Sequence[int] | np.ndarray,
    targets: TargetCache,
    attrs: Any,
    img_size: int,
    norm: tuple[Sequence[float], Sequence[float]],
    device: torch.device,
    batch_size: int = 64,
    agreement: bool = True,
) -> dict[str, Any]:
    """top-1/top-5 on centre crops (if labels align) and stored-view teacher agreement."""
    model.eval()
    out: dict[str, Any] = {"eval_samples": len(samples)}
    if not len(samples):
        return out
    ids = np.asarray(samples, dtype=np.int64)
    if classes_aligned(attrs, folder):
        ds = EvalDataset(folder, ids, img_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
        hit1 = hit5 = n = 0
        for batch in loader:
            ok = batch["ok"]
            logits = _logits(model, batch["image"], norm, device)[ok]
            top5 = logits.topk(min(5, logits.shape[-1]), -1).indices
            y = batch["label"][ok]
            hit1 += int((top5[:, 0] == y).sum())
            hit5 += int((top5 == y[:, None]).any(-1).sum())
            n += int(ok.sum())
        out.update(top1=100.0 * hit1 / max(n, 1), top5=100.0 * hit5 / max(n, 1))
    if not agreement:
        return out
    views = ReplayDataset(folder, attrs, img_size)
    out["teacher_agreement"] = teacher_agreement(
        model, views, ids, targets, 0, norm, device, batch_size
    )[0]
    return out


def teacher_agreement(
    model: torch.nn.Module,
    views: ReplayDataset,
    samples: Sequence[int] | np.ndarray,
    targets: TargetCache,
    slot: int,
    norm: tuple[Sequence[float], Sequence[float]],
    device: torch.device,
    batch_size: int = 64,
) -> tuple[float, int]:
    """(% of valid views of ``slot`` where the student's top-1 is the teacher's stored top-1,
    number of valid views), for ``samples`` rendered by ``views``."""
    model.eval()
    ids = np.asarray(samples, dtype=np.int64)
    agree = total = 0
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        items = [views[(slot, int(s))] for s in chunk]
        t_ids, _, valid = targets.gather(slot, chunk)
        ok = valid & torch.tensor([bool(it["ok"]) for it in items])
        logits = _logits(model, torch.stack([it["image"] for it in items]), norm, device)
        agree += int((logits.argmax(-1) == t_ids[:, 0])[ok].sum())
        total += int(ok.sum())
    return 100.0 * agree / max(total, 1), total


def _targets(
    stores: str | list[str], token: str | None, weights: list[float] | None
) -> TargetCache:
    """One store's targets, or several stores' ensemble (any dataset: see ``same`` below)."""
    if isinstance(stores, str):
        return open_targets(stores, token)
    caches = [open_targets(s, token) for s in stores]
    try:
        check_same_views(stores, [c.attrs for c in caches])
        return TeacherEnsemble(caches, weights)
    except ValueError:
        for c in caches:
            c.close()
        raise


def run_eval(
    checkpoint: str, data: str, store: str | None = None, batch_size: int = 64
) -> dict[str, Any]:
    """`distill eval`: a checkpoint on ``data``'s held-out split (all of it if it is another
    dataset than the store's), with teacher agreement when the store is reachable."""
    from models import create_student
    from student.checkpoint import load_checkpoint
    from student.config import TrainConfig

    check_int("--batch-size", batch_size, 1, MAX_BATCH)
    state = load_checkpoint(checkpoint)
    cfg = TrainConfig.from_dict(state["config"])
    token = Path(cfg.token_file).read_text().strip() if cfg.token_file else None
    targets = _targets(store or cfg.store, token, cfg.teacher_weights)
    attrs = targets.attrs
    folder = open_images(data)
    img_size = cfg.img_size or int(attrs.teacher["input_size"][1])
    model = create_student(cfg.model, int(state["num_classes"]), img_size=img_size)
    model.load_state_dict(state["model_ema"] or state["model"])
    norm = (tuple(model.pretrained_cfg["mean"]), tuple(model.pretrained_cfg["std"]))
    # The store's dataset: by content when both know it (the packed shards of its folder),
    # else by names and sizes.
    same = DatasetFingerprint.from_dict(attrs.dataset).mismatch(folder.fingerprint()) is None
    if same:  # the stored views it replays: each image checked against the store's digest
        folder, note = checked_folder(folder, targets.sample_digests(), targets.address)
        if note:
            print(note, file=sys.stderr)
    samples = split_samples(labels_of(folder), cfg.val_fraction, cfg.seed)[1] if same else None
    if samples is None or not len(samples):
        samples = np.arange(len(folder))
    cpu = torch.device("cpu")
    try:  # stored views of another dataset say nothing: then accuracy only
        result = evaluate(
            model, folder, samples, targets, attrs, img_size, norm, cpu, batch_size, same
        )
    finally:
        targets.close()
    return {"checkpoint": checkpoint, "model": cfg.model, "step": state["step"], **result}
