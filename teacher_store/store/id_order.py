"""How a view's K (id, value) entries are laid out in the ``ids``/``values`` arrays.

``rank`` (schema version 1): both in rank order, as the teacher ranked them.

``head-sorted`` (version 2): the first ``head`` entries (:func:`~teacher_store.store.schema.
head_size`: 1 for ``prob-u8``, 2 for ``prob-u8x3``) in rank order; the other K - head sorted by
class id, each id stored as the gap to the previous one (the first gap counts from 0), their
values in the same order. Sorted gaps compress to about half of rank-ordered ids (measured on
the Lite0 teacher: 10 vs 12 B/view at K=10, 59 vs 125 at K=100). Decoding puts the tail back in
rank order: descending value, ties by ascending id, so the top-1 is exact and entries swap ranks
only when their stored values are equal. Both functions are pure and work on any leading shape.

``head-sorted-pad`` (version 2, what ``distill generate`` writes): the same, with two changes
that cut the ids' bytes (measured on the Lite0 teacher, demo photos: 10.2 -> 9.2 B/view at
K=10, 59.7 -> 47.5 at K=100). (1) The tail is sorted and gap-coded by *position in the store's
``class_order``* (a permutation of the class ids chosen from the teacher's classifier weights,
:mod:`teacher_store.store.class_order`, so that classes the teacher confuses sit close and gaps
shrink); the arrays hold positions, ``class_order[position]`` is the class. (2) Tail entries
whose value is 0 (the probability rounds to zero, so the class is only "one of the others")
are padding: they go last, with gap 0 and value 0, and carry no class; decoding gives them the
smallest class ids that the view's other entries do not use, so every view still has K
distinct ids (with log-probability -inf, the student loss counts them with the rest mass, as
before). Ties in value decode by ascending class id.
"""

from __future__ import annotations

import numpy as np

from teacher_store.errors import StoreDamaged
from teacher_store.store.schema import StoreAttrs, decode_values, head_size
from teacher_store.store.value_encodings import encoding as value_encoding

PADDED = "head-sorted-pad"


class ClassIdError(StoreDamaged):
    """Stored class ids outside the store's classes: bytes this code did not write."""


def check_class_ids(ids: np.ndarray, num_classes: int, at: tuple[int, int] | None = None) -> None:
    """Refuse ids (or head-sorted positions) >= ``num_classes``: they would index past every
    per-class table (class names, the loss's [B, C] targets, ``class_order``).

    ``ids`` is a block [n, K] of slot ``at[0]`` from sample ``at[1]``, or [r, n, K] from slot
    ``at[0]``; ``at`` only words the message.
    """
    if not ids.size:
        return
    high = int(ids.max())
    if high < num_classes and int(ids.min()) >= 0:
        return
    first = tuple(int(i) for i in np.argwhere((ids >= num_classes) | (ids < 0))[0])
    where = ""
    if at is not None and len(first) in (2, 3):
        slot = at[0] + (first[0] if len(first) == 3 else 0)
        where = f" at view slot {slot}, sample {at[1] + first[-2]}"
    bad = int(ids[first])
    raise ClassIdError(
        "ids",
        f"holds class id {bad}{where}",
        f"the store's ids array holds class id {bad}{where}, outside its {num_classes} classes "
        f"(0..{num_classes - 1}): the store is damaged; regenerate it",
    )


def _zero(values: np.ndarray, encoding: str) -> np.ndarray:
    """Entries whose stored value is zero probability (never for logprob-f16)."""
    return value_encoding(encoding).zero(values)


def _class_order(attrs: StoreAttrs) -> np.ndarray | None:
    return None if attrs.class_order is None else np.asarray(attrs.class_order, np.int64)


def _to_padded(
    ids: np.ndarray, values: np.ndarray, attrs: StoreAttrs
) -> tuple[np.ndarray, np.ndarray]:
    m = head_size(attrs.value_encoding)
    tail = ids[..., m:].astype(np.int64)
    order = _class_order(attrs)
    if order is not None:
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        tail = position[tail]
    pad = _zero(values[..., m:], attrs.value_encoding)
    key = np.where(pad, np.iinfo(np.int64).max, tail)  # padding last
    perm = np.argsort(key, axis=-1, kind="stable")
    sorted_ids = np.take_along_axis(tail, perm, -1)
    gaps = np.diff(sorted_ids, axis=-1, prepend=0)
    gaps[np.take_along_axis(pad, perm, -1)] = 0
    out_ids = np.concatenate([ids[..., :m], gaps.astype(ids.dtype)], -1)
    out_values = np.concatenate(
        [values[..., :m], np.take_along_axis(values[..., m:], perm, -1)], -1
    )
    return out_ids, out_values


def _fill_padding(ids: np.ndarray, pad: np.ndarray) -> np.ndarray:
    """Give padding entries ([..., K] mask) the smallest class ids their row does not use.

    A row with P padding entries uses at most K - P ids, so P unused ids lie below K.
    """
    k = ids.shape[-1]
    flat, fpad = ids.reshape(-1, k).copy(), pad.reshape(-1, k)
    rows = np.nonzero(fpad.any(-1))[0]
    if len(rows):
        sub, spad = flat[rows], fpad[rows]
        used = np.zeros((len(rows), k), bool)
        r, c = np.nonzero(~spad & (sub < k))
        used[r, sub[r, c]] = True
        free = np.argsort(used, axis=-1, kind="stable")  # unused ids first, ascending
        nth = np.cumsum(spad, axis=-1) - 1
        pr, pc = np.nonzero(spad)
        sub[pr, pc] = free[pr, nth[pr, pc]]
        flat[rows] = sub
    return flat.reshape(ids.shape)


def _from_padded(
    ids: np.ndarray, values: np.ndarray, attrs: StoreAttrs, at: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    m = head_size(attrs.value_encoding)
    tail = np.cumsum(ids[..., m:], axis=-1, dtype=np.int64)  # ascending positions
    order = _class_order(attrs)
    # Only bytes not written by this code can step outside the classes: refused.
    check_class_ids(tail, attrs.num_classes, at)
    if order is not None:
        tail = order[tail]
    pad = _zero(values[..., m:], attrs.value_encoding)
    full = np.concatenate([ids[..., :m].astype(np.int64), tail], -1)
    full = _fill_padding(full, np.concatenate([np.zeros(full[..., :m].shape, bool), pad], -1))
    tail, tail_values = full[..., m:], values[..., m:]
    # Descending value, ties by ascending class id (one int64 key for the uint8 encodings).
    if tail_values.dtype == np.uint8:
        key = (255 - tail_values.astype(np.int64)) * attrs.num_classes + tail
        perm = np.argsort(key, axis=-1)  # keys are distinct: the ids are
    else:
        perm = np.lexsort((tail, -tail_values.astype(np.float32)), axis=-1)
    out_ids = np.concatenate(
        [ids[..., :m], np.take_along_axis(tail, perm, -1).astype(ids.dtype)], -1
    )
    out_values = np.concatenate([values[..., :m], np.take_along_axis(tail_values, perm, -1)], -1)
    return out_ids, out_values


def rank_to_stored(
    ids: np.ndarray, values: np.ndarray, attrs: StoreAttrs
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-order ids and encoded values [..., K] -> what the arrays hold ([..., K] each)."""
    if attrs.id_order == "rank":
        return ids, values
    if attrs.id_order == PADDED:
        return _to_padded(ids, values, attrs)
    m = head_size(attrs.value_encoding)
    tail_ids = ids[..., m:].astype(np.int64)
    order = np.argsort(tail_ids, axis=-1, kind="stable")  # [..., K - m]
    sorted_ids = np.take_along_axis(tail_ids, order, -1)
    gaps = np.diff(sorted_ids, axis=-1, prepend=0)
    out_ids = np.concatenate([ids[..., :m], gaps.astype(ids.dtype)], -1)
    out_values = np.concatenate(
        [values[..., :m], np.take_along_axis(values[..., m:], order, -1)], -1
    )
    return out_ids, out_values


def stored_to_rank(
    ids: np.ndarray, values: np.ndarray, attrs: StoreAttrs, at: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The arrays' ids and values [..., K] -> rank-order ids and encoded values [..., K].

    Every reader of the arrays decodes here, so ids outside the store's classes are refused
    here (:class:`ClassIdError`, one line); ``at`` = (slot, first sample) words the message.
    """
    if attrs.id_order == "rank":
        check_class_ids(ids, attrs.num_classes, at)
        return ids, values
    if attrs.id_order == PADDED:
        out = _from_padded(ids, values, attrs, at)
        check_class_ids(out[0][..., : head_size(attrs.value_encoding)], attrs.num_classes, at)
        return out
    m = head_size(attrs.value_encoding)
    tail_ids = np.cumsum(ids[..., m:], axis=-1, dtype=np.int64)  # ascending class ids
    tail_values = values[..., m:]
    # Descending value; a stable sort keeps ascending ids among equal values.
    key = -tail_values.astype(np.float32)
    order = np.argsort(key, axis=-1, kind="stable")
    out_ids = np.concatenate(
        [ids[..., :m], np.take_along_axis(tail_ids, order, -1).astype(ids.dtype)], -1
    )
    out_values = np.concatenate([values[..., :m], np.take_along_axis(tail_values, order, -1)], -1)
    check_class_ids(out_ids, attrs.num_classes, at)
    return out_ids, out_values


def encoding_kl(
    logp: np.ndarray, values: np.ndarray, encoding: str, num_classes: int
) -> np.ndarray:
    """KL(float32 sparse target || stored sparse target) per view, in nats: [...] float64.

    ``logp`` [..., K] are the teacher's float32 top-K log-probs and ``values`` their encoding,
    both in rank order. A sparse target puts its top-K probabilities on their classes and the
    rest 1 - sum spread evenly over the other C - K classes (the student loss's model), so this
    is what the encoding adds to the truncation's KL to the full teacher (to first order).
    """
    p = np.exp(logp.astype(np.float64))
    q = np.exp(decode_values(values, encoding).astype(np.float64))
    others = max(num_classes - p.shape[-1], 1)
    p_rest = np.clip(1.0 - p.sum(-1), 0.0, None)
    q_rest = np.clip(1.0 - q.sum(-1), 1e-12, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A stored 0 keeps its class among "the others": compare with the spread rest mass.
        q_at = np.where(q > 0, q, q_rest[..., None] / others)
        kept = np.where(p > 0, p * (np.log(p) - np.log(q_at)), 0.0).sum(-1)
        rest = np.where(p_rest > 0, p_rest * (np.log(p_rest) - np.log(q_rest)), 0.0)
    return np.asarray(np.maximum(kept + rest, 0.0))


def truncation_kl(logp: np.ndarray, k2: int, num_classes: int) -> np.ndarray:
    """KL(sparse target of the K entries || sparse target of the first ``k2``) per view, in
    nats: [...] float64. What keeping the top-``k2`` of a stored top-K costs (`distill copy
    --topk`).

    ``logp`` [..., K] are log-probabilities in rank order (-inf: zero). Both targets spread
    their rest mass evenly over the classes they do not list (K's over C - K, top-``k2``'s over
    C - ``k2``), as the student loss does; the entries they share cost nothing.
    """
    k = logp.shape[-1]
    if not 1 <= k2 <= k:
        raise ValueError(f"top-{k2} of a top-{k} needs 1 <= {k2} <= {k}")
    p = np.exp(logp.astype(np.float64))
    p_rest = np.clip(1.0 - p.sum(-1), 0.0, None)  # [...]: K's rest, over C - K classes
    q_rest = np.clip(1.0 - p[..., :k2].sum(-1), 1e-12, None)  # top-k2's rest, over C - k2
    q_other = q_rest / max(num_classes - k2, 1)  # [...]: what top-k2 gives each unlisted class
    with np.errstate(divide="ignore", invalid="ignore"):
        dropped = p[..., k2:]  # listed by K, "other" for top-k2
        cut = np.where(dropped > 0, dropped * (np.log(dropped) - np.log(q_other[..., None])), 0)
        p_other = p_rest / max(num_classes - k, 1)
        rest = np.where(p_rest > 0, p_rest * (np.log(p_other) - np.log(q_other)), 0.0)
    return np.asarray(np.maximum(cut.sum(-1) + rest, 0.0))


__all__ = [
    "ClassIdError",
    "check_class_ids",
    "encoding_kl",
    "rank_to_stored",
    "stored_to_rank",
    "truncation_kl",
]
