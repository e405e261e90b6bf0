"""The options every process of a `distill generate` job must agree on, settled once.

Some options decide a store's bytes yet have no fixed default: torch's thread count, the view
order and, for a store that grows, the slots it was created with. Rank 0 settles each from what
was asked, else from the store being resumed or grown, else a default, and every rank adopts
its answer, so that any world size and any resume computes the same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from models.runtime import share_from_main
from teacher_store.store.arrays import recorded_config
from teacher_store.store.grow import base_views_for
from teacher_store.views.pairing import recorded_view_order

if TYPE_CHECKING:
    from teacher_store.generate import GenerateConfig


def settle_job_config(cfg: GenerateConfig, rank: int, world: int) -> GenerateConfig:
    """``cfg`` with ``threads`` (torch set to it), ``view_order`` and ``base_views`` settled
    by rank 0 for every rank of the job (each a collective: every rank must call this)."""
    cfg = _pin_threads(cfg, rank, world)
    cfg = _pin_order(cfg, rank, world)
    return _pin_base(cfg, rank, world)


def _pin_order(cfg: GenerateConfig, rank: int, world: int) -> GenerateConfig:
    """Resolve ``view_order``: asked for, else the resumed store's, else "pairs". Rank 0
    decides, as for the thread count, so every launcher of a job renders in one order."""
    order: str | None = cfg.view_order
    if order is None and rank == 0:
        recorded = None if cfg.overwrite else recorded_config(cfg.out)
        order = "pairs" if recorded is None else recorded_view_order(recorded)
    shared = share_from_main(order, world)  # a collective: every rank takes part
    return cfg.model_copy(update={"view_order": cfg.view_order or shared})


def _pin_base(cfg: GenerateConfig, rank: int, world: int) -> GenerateConfig:
    """Resolve ``base_views``: asked for, else what growing the store at ``out`` takes (its
    slots before the growth, or a grown store's own base), else none. Rank 0 decides."""
    base: int | None = cfg.base_views
    if base is None and not cfg.overwrite and rank == 0:
        base = base_views_for(cfg.out, cfg.views)
    shared = share_from_main(base, world)  # a collective: every rank takes part
    return cfg.model_copy(update={"base_views": cfg.base_views or shared})


def _pin_threads(cfg: GenerateConfig, rank: int, world: int) -> GenerateConfig:
    """Fix torch's thread count for this job: asked for, else the store's, else the default.

    Every process of a job (any world size, any resume) then computes with the same count, so
    the teacher's CPU float results, and hence the store's bytes, do not depend on how the job
    was launched (torchrun starts each rank with one thread, or, with one process per node,
    with the node's core count). Rank 0 decides; a rank without --threads adopts its count
    (one asked for another count is refused by the store check in _generate).
    """
    threads = cfg.threads
    if threads is None and rank == 0:
        recorded = recorded_config(cfg.out) or {}
        threads = int(recorded.get("threads") or torch.get_num_threads())
    shared = share_from_main(threads, world)  # a collective: every rank takes part
    threads = cfg.threads or shared
    assert threads is not None  # rank 0 always resolves one
    torch.set_num_threads(threads)
    return cfg.model_copy(update={"threads": threads})


__all__ = ["settle_job_config"]
