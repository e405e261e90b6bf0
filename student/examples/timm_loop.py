"""Distill from a store in your own loop built from timm's pieces.

``timm.optim.create_optimizer_v2`` (AdamW, no weight decay on norms and biases) and
``timm.scheduler.create_scheduler_v2`` (cosine with warmup, updated every step), fed by
:class:`student.StoreLoader` and trained with :func:`student.sparse_kd_loss`::

    python -m student.examples.timm_loop --store STORE --data DATA [--model tiny_vit_5m_224]
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import timm
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from student import StoreLoader, sparse_kd_loss


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="store folder, fsspec URL or service URL")
    p.add_argument("--data", required=True, help="the ImageFolder the store was built from")
    p.add_argument("--model", default="tiny_vit_5m_224", help="any timm classifier")
    p.add_argument("--img-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--val-fraction", type=float, default=0.1)
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.model``; per-step losses and learning rates, and the final cursor."""
    loader = StoreLoader(
        args.store,
        args.data,
        img_size=args.img_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        workers=args.workers,
        val_fraction=args.val_fraction,
    )
    model = timm.create_model(args.model, num_classes=loader.attrs.num_classes)
    normalise: dict = model.pretrained_cfg  # type: ignore[assignment]  # timm's, typed by nn.Module
    mean, std = normalise["mean"], normalise["std"]
    optimizer = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=0.05)
    steps = loader.steps_per_epoch
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched="cosine",
        num_epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        warmup_prefix=True,  # the cosine starts at the peak once warmup ends
        step_on_epochs=False,  # the learning rate moves every update, not every epoch
        updates_per_epoch=steps,
    )
    losses, lrs = [], []
    with loader:
        for epoch in range(args.epochs):
            loader.set_epoch(epoch)
            model.train()
            for i, batch in enumerate(loader):
                logits = model(batch.inputs(mean, std))
                loss = sparse_kd_loss(
                    logits, batch.topk_ids, batch.topk_logprobs, weight=batch.valid
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                lrs.append(optimizer.param_groups[0]["lr"])
                losses.append(float(loss.detach()))
                scheduler.step_update(num_updates=epoch * steps + i + 1)
            scheduler.step(epoch + 1)
            print(
                f"epoch {epoch} (view slot {loader.slot}): loss {losses[-1]:.4f}, lr {lrs[-1]:.2e}"
            )
        cursor = loader.cursor
    return {"losses": losses, "lrs": lrs, "cursor": cursor, "model": model}


def main(argv: list[str] | None = None) -> int:
    out = train(parse_args(argv))
    return 0 if all(math.isfinite(x) for x in out["losses"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
