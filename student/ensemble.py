"""Training against several teachers at once: stores of the very same views, mixed.

``distill train --store A --store B [--teacher-weights wA wB]`` (and ``StoreLoader`` given
several stores) trains against the teachers' ensemble: for each view, the mixture
``p(c) = sum_t w_t p_t(c)`` of the teachers' sparse distributions, where each teacher's
``p_t`` is its stored top-K with the rest of its mass spread evenly over its other classes
(the rule of :func:`~student.loss.sparse_teacher_logprobs`). Weights default to equal and are
normalized to sum to 1.

The mixture is exactly sparse again: outside the union U of the teachers' top-K ids every
teacher gives its even share, so the mixture is even there too, and its mass outside U spread
over the ``C - |U|`` classes is exactly that share. So :func:`ensemble_targets` returns the
union (at most sum K_t ids per view, rank order, padded with unused ids at log-probability
-inf) and the student's loss, agreement and evaluation read it as one teacher's top-K.

The stores must hold the same views (one :func:`~teacher_store.store.schema.view_identity`:
``distill generate --like A`` makes one) and the same classes; anything else is refused in
one line. The ensemble's slots are those all stores have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from student.data import TargetCache
from teacher_store.store.schema import StoreAttrs, view_fields, view_identity


def ensemble_targets(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The mixture of sparse teachers as one sparse target.

    ``parts``: each teacher's (ids [B, K_t] int, log-probs [B, K_t] float32, -inf for entries
    rounded to zero, which count as the teacher's rest); ``weights`` [T] summing to 1.
    Returns (ids [B, M] int64, log-probs [B, M] float32), M = min(sum K_t, C): the union's
    ids in descending mixture probability, then padding (ids no entry uses, -inf).
    """
    ids = np.concatenate([np.asarray(i, np.int64) for i, _ in parts], axis=1)  # [B, M]
    b, m = ids.shape
    mix = np.zeros((b, m), np.float64)
    known = np.zeros((b, m), bool)  # the id is in some teacher's kept top-K
    for w, (t_ids, t_logp) in zip(weights, parts, strict=True):
        logp = np.asarray(t_logp, np.float64)
        kept = np.isfinite(logp)  # [B, K_t]
        p = np.where(kept, np.exp(logp), 0.0)
        mass = np.minimum(p.sum(-1), 1.0)  # [B], as the loss clamps it
        rest = np.maximum(num_classes - kept.sum(-1), 1)
        tail = np.maximum(1.0 - mass, 1e-12) / rest  # [B] this teacher's even share
        same = (ids[:, :, None] == np.asarray(t_ids, np.int64)[:, None, :]) & kept[:, None, :]
        inside = same.any(-1)  # [B, M]
        at = (same * p[:, None, :]).sum(-1)
        mix += w * np.where(inside, at, tail[:, None])
        known |= inside
    first = _first_occurrence(ids)
    keep = known & first
    order = np.argsort(np.where(keep, -mix, np.inf), axis=1, kind="stable")
    width = min(m, num_classes)
    order = order[:, :width]
    ids = np.take_along_axis(ids, order, 1)
    keep = np.take_along_axis(keep, order, 1)
    with np.errstate(divide="ignore"):
        logp = np.where(keep, np.log(np.take_along_axis(mix, order, 1)), -np.inf)
    return _pad_ids(ids, keep, num_classes), logp.astype(np.float32)


def _first_occurrence(ids: np.ndarray) -> np.ndarray:
    """[B, M] bool: True at the first entry of each id in its row."""
    order = np.argsort(ids, axis=1, kind="stable")
    s = np.take_along_axis(ids, order, 1)
    dup = np.zeros_like(s, bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    out = np.empty_like(dup)
    np.put_along_axis(out, order, ~dup, 1)
    return out


def _pad_ids(ids: np.ndarray, keep: np.ndarray, num_classes: int) -> np.ndarray:
    """Give the padding entries (not ``keep``) the smallest ids their row does not keep,
    distinct, so that a padding entry never overwrites a kept class in a dense scatter."""
    pad = ~keep
    if not pad.any():
        return ids
    out = ids.copy()
    width = ids.shape[1]
    cand = np.arange(min(num_classes, 2 * width))  # > width - pads kept ids: enough free ones
    used = ((ids[:, :, None] == cand[None, None, :]) & keep[:, :, None]).any(1)  # [B, cand]
    free = np.argsort(used, axis=1, kind="stable")  # unused candidates first, ascending
    nth = np.cumsum(pad, axis=1) - 1
    rows, cols = np.nonzero(pad)
    out[rows, cols] = cand[free[rows, nth[rows, cols]]]
    return out


def check_same_views(stores: Sequence[str], attrs: Sequence[StoreAttrs]) -> None:
    """Refuse, in one line, stores that do not hold the same views and classes."""
    first, a0 = stores[0], attrs[0]
    for where, a in zip(stores[1:], attrs[1:], strict=True):
        if view_identity(a) != view_identity(a0):
            f0, f1 = view_fields(a0), view_fields(a)
            diff = ", ".join(k for k in sorted(set(f0) | set(f1)) if f0.get(k) != f1.get(k))
            raise ValueError(
                f"--store {where} holds other views than --store {first} (view identity "
                f"{view_identity(a)} vs {view_identity(a0)}: {diff} differ); an ensemble needs "
                f"the same views: make it with `distill generate --like {first}`"
            )
        names0, names = a0.teacher.get("class_names"), a.teacher.get("class_names")
        if a.num_classes != a0.num_classes or (names0 and names and names0 != names):
            raise ValueError(
                f"--store {where}'s teacher has other classes than --store {first}'s "
                f"({a.num_classes} vs {a0.num_classes}); an ensemble mixes distributions "
                "over one set of classes"
            )


def ensemble_weights(weights: Sequence[float] | None, count: int) -> np.ndarray:
    """[T] float64 weights summing to 1 (equal by default); one-line errors."""
    if weights is None:
        return np.full(count, 1.0 / count)
    w = np.asarray(list(weights), np.float64)
    if len(w) != count:
        raise ValueError(
            f"--teacher-weights has {len(w)} weights for {count} stores; give one each"
        )
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"--teacher-weights {list(weights)}: weights must be >= 0, not all 0")
    return w / w.sum()


class TeacherEnsemble(TargetCache):
    """The targets of several stores of the same views, gathered as their mixture
    (:func:`ensemble_targets`). ``attrs`` are the first store's, with the slots all have."""

    def __init__(
        self, caches: Sequence[TargetCache], weights: Sequence[float] | None = None
    ) -> None:
        if len(caches) < 2:
            raise ValueError("an ensemble needs at least two stores")
        self.caches = list(caches)
        self.weights = ensemble_weights(weights, len(self.caches))
        first = self.caches[0].attrs
        views = min(int(c.attrs.views) for c in self.caches)
        base = first.base_views if first.base_views and first.base_views < views else None
        self.attrs = first.model_copy(update={"views": views, "base_views": base})
        self.block, self.n = self.caches[0].block, self.caches[0].n
        self.reader = self.caches[0].reader

    @property
    def identity(self) -> str:
        """The stores' identities joined by "+", in order (a checkpoint of an ensemble run
        records it)."""
        return "+".join(c.identity for c in self.caches)

    @property
    def address(self) -> str:
        """The stores' addresses joined by " + ", for messages."""
        return " + ".join(c.address for c in self.caches)

    def continues(self, identity: str) -> bool:
        """Whether ``identity`` names these stores (each possibly grown since), in order."""
        parts = identity.split("+")
        if not identity or identity == self.identity:
            return True
        return len(parts) == len(self.caches) and all(
            c.continues(p) for c, p in zip(self.caches, parts, strict=True)
        )

    def prefetch(self, slot: int, samples: np.ndarray) -> None:
        """Start reading every store's blocks holding ``samples``."""
        for c in self.caches:
            c.prefetch(slot, samples)

    def gather(self, slot: int, samples: np.ndarray) -> tuple[torch.Tensor, ...]:
        """(ids [B, M] int64, log-probs [B, M] float32, valid [B] bool) of the mixture: a view
        is valid when every teacher has it."""
        self.prefetch(slot, samples)  # every store's reads in flight at once, not in turn
        parts, valid = [], np.ones(len(samples), bool)
        for c in self.caches:
            ids, logp, ok = c.gather(slot, samples)
            parts.append((ids.numpy(), logp.numpy()))
            valid &= ok.numpy()
        mixed_ids, mixed_logp = ensemble_targets(parts, self.weights, int(self.attrs.num_classes))
        return torch.from_numpy(mixed_ids), torch.from_numpy(mixed_logp), torch.from_numpy(valid)

    def close(self) -> None:
        """Close every store's reader."""
        for c in self.caches:
            c.close()


__all__ = [
    "TeacherEnsemble",
    "check_same_views",
    "ensemble_targets",
    "ensemble_weights",
]
