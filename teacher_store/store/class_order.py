"""A teacher-derived order of the class ids, for the ``head-sorted-pad`` id layout.

Sorted, gap-coded class ids cost about log2(gap) bits each; a view's top-K classes are classes
the teacher confuses, and those have similar classifier rows. Ordering the classes so that
similar rows sit close makes the gaps smaller (Lite0 on the demo photos: ids 10.1 -> 9.2 B/view
at K=10, 52.7 -> 47.5 at K=100, beside ImageNet's own id order). The order is Ward
hierarchical clustering of the L2-normalized classifier rows with scipy's optimal leaf ordering
(measured: average linkage, plain leaf order, a 1-D PCA and a greedy nearest-neighbour chain
all did worse). It is recorded in the store's attrs, so readers never recompute it.

Optimal leaf ordering costs O(C^3): above :data:`MAX_CLASSES` classes the store keeps the class
ids' own order (``class_order`` None). Orders already computed for the builtin teachers ship in
``class_orders.json`` (by weights sha256), so that generation does not pay the 5-20 s it takes
for 1,000 classes on 2 shared cores.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

MAX_CLASSES = 2048
_SHIPPED = Path(__file__).with_name("class_orders.json")


def order_from_weights(weight: np.ndarray) -> list[int]:
    """The class order of a classifier weight matrix [C, D] (a permutation of 0..C-1)."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    w = np.asarray(weight, dtype=np.float64).reshape(len(weight), -1)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    # Rounded to 1e-6: the order must not depend on the last bits of a norm's summation order.
    w = np.round(w / np.where(norm > 0, norm, 1.0), 6)
    if len(w) < 3:
        return list(range(len(w)))
    tree = linkage(w, "ward", optimal_ordering=True)
    return [int(i) for i in leaves_list(tree)]


@functools.cache
def _shipped() -> dict[str, list[int]]:
    if not _SHIPPED.is_file():
        return {}
    return {k: list(v) for k, v in json.loads(_SHIPPED.read_text()).items()}


def teacher_class_order(
    model: torch.nn.Module, num_classes: int, weights_sha256: str = ""
) -> list[int] | None:
    """The order for a timm teacher (None: too many classes, or no linear classifier)."""
    import torch

    if num_classes > MAX_CLASSES:
        return None
    shipped = _shipped().get(weights_sha256) if weights_sha256 else None
    if shipped is not None and len(shipped) == num_classes:
        return shipped
    get_classifier = getattr(model, "get_classifier", None)  # timm models have one
    head = get_classifier() if callable(get_classifier) else None
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != num_classes:
        return None
    return order_from_weights(weight.detach().float().cpu().numpy())


__all__ = ["MAX_CLASSES", "order_from_weights", "teacher_class_order"]
