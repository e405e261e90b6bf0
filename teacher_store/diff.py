"""Two stores of one config compared view by view: how far their teacher outputs agree.

Two stores of the same config, data and teacher differ only where the teacher's arithmetic does
(a GPU against a CPU, bf16 against fp32, another decoder): :func:`compare_stores` measures it
over the views valid in both.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np


class StoresNotComparable(ValueError):
    """The two stores hold different shapes, or no view valid in both."""


@dataclass(frozen=True)
class StoreAgreement:
    """Agreement of two stores over the views valid in both.

    ``top1_agreement``: share of views with the same top-1 id; ``ids_agreement``: mean share of
    ranks holding the same id; ``topk_overlap``: mean share of one top-K list's ids found in
    the other's; ``max_abs_dp_shared_ids``: the largest |p_a - p_b| of an id both lists hold.
    """

    views_compared: int
    top1_agreement: float
    ids_agreement: float
    topk_overlap: float
    max_abs_dp_shared_ids: float

    def to_dict(self) -> dict[str, float]:
        """The figures by name (as the GPU check reports them)."""
        return asdict(self)


def compare_stores(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> StoreAgreement:
    """Agreement of the stores at ``a`` and ``b`` (folders or fsspec URLs) of one config:
    top-1 and rank-wise ids, top-K overlap, and the largest |Δp| on the ids both top-K lists
    hold, over the views valid in both."""
    from teacher_store.store.arrays import LocalStore

    sa, sb = LocalStore(a), LocalStore(b)
    shape_a = (sa.attrs.views, sa.attrs.num_samples)
    shape_b = (sb.attrs.views, sb.attrs.num_samples)
    if shape_a != shape_b:
        raise StoresNotComparable(
            f"stores {sa.address} and {sb.address} differ in shape (views x samples "
            f"{shape_a[0]} x {shape_a[1]} against {shape_b[0]} x {shape_b[1]}); compare stores "
            "of one config"
        )
    n = top1 = same = overlap = dp = 0.0
    for slot in range(sa.attrs.views):
        x, y = (s.read_block(slot, 0, s.attrs.num_samples) for s in (sa, sb))
        ok = x.valid & y.valid
        ia, ib = x.ids[ok].astype(np.int64), y.ids[ok].astype(np.int64)
        pa, pb = np.exp(x.logprobs()[ok]), np.exp(y.logprobs()[ok])
        eq = ia[:, :, None] == ib[:, None, :]  # [n, K, K]: id at rank i of a is at rank j of b
        n += len(ia)
        top1 += float((ia[:, 0] == ib[:, 0]).sum())
        same += float((ia == ib).mean(axis=1).sum())
        overlap += float(eq.any(axis=2).mean(axis=1).sum())
        if eq.any():
            dp = max(dp, float(np.abs(pa[:, :, None] - pb[:, None, :])[eq].max()))
    if not n:
        raise StoresNotComparable(
            f"stores {sa.address} and {sb.address} have no view valid in both"
        )
    return StoreAgreement(int(n), top1 / n, same / n, overlap / n, dp)


__all__ = ["StoreAgreement", "StoresNotComparable", "compare_stores"]
