"""A synthetic teacher for bench/scale.py, calibrated on the real Lite0 teacher.

:func:`measure_real` runs the real EfficientNet-Lite0 (ImageNet weights) on R replayed views of
the demo photos (default recipe, 224 px) and measures what decides a store's bytes and a
student's targets: top-K mass, entropy of the full distribution, how much the top-K sets of two
views of one image overlap, and how far a view's top-K ids lie from its top-1 (what gap-coded
ids cost). :func:`fit` chooses the parameters of :class:`SyntheticTeacher` so that its draws
show the same statistics (a deterministic coordinate search), and :func:`bank` draws a bank of
images x R views from it that bench/scale.py relabels per sample.

The model: each image has a pool of ``pool`` classes (its own class, neighbours in id space
within a geometric ``spread``, and a share of unrelated ones); pool class j has the base logit
``-zipf * log(1 + j)``, each view adds Gaussian noise of scale ``noise``; every class outside
the pool has the logit ``background`` (analytic: no C-wide arrays). A view's top-K are the
largest pool logits; its probabilities are normalized over the pool and the background.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

STATS = ("topk_mass", "entropy", "overlap", "top1_agree", "id_spread")
C = 1000  # ImageNet-1k classes


@dataclass(frozen=True)
class SyntheticTeacher:
    """Parameters of the synthetic teacher (see the module doc)."""

    zipf: float = 0.75
    noise: float = 2.0
    background: float = -4.5
    spread: float = 40.0
    near: float = 0.5  # share of pool classes that are id-space neighbours of the image's class
    pool: int = 128
    classes: int = C

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def view_stats(ids: np.ndarray, logp: np.ndarray, entropy: np.ndarray) -> dict[str, float]:
    """The statistics of views [M images, R views, K] (top-K ids and log-probs in rank order,
    entropy [M, R] of the full distribution)."""
    m, r, k = ids.shape
    overlap, agree = [], []
    for i in range(m):
        sets = [set(row.tolist()) for row in ids[i]]
        for a in range(r):
            for b in range(a + 1, r):
                overlap.append(len(sets[a] & sets[b]) / k)
                agree.append(float(ids[i, a, 0] == ids[i, b, 0]))
    spread = np.abs(ids[..., 1:].astype(np.int64) - ids[..., :1].astype(np.int64))
    return {
        "topk_mass": float(np.exp(logp).sum(-1).mean()),
        "entropy": float(entropy.mean()),
        "overlap": float(np.mean(overlap)),
        "top1_agree": float(np.mean(agree)),
        "id_spread": float(np.median(spread)),
    }


def measure_real(views: int = 16, topk: int = 10, threads: int = 2) -> dict[str, Any]:
    """The statistics of the real Lite0 teacher on ``views`` replayed views of each demo photo."""
    import tempfile
    from pathlib import Path

    import torch

    from models import create_teacher
    from teacher_store.generate import GenerateConfig, build_attrs
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.images.demo_data import write_demo_data
    from teacher_store.views.replay import Replayer, view_to_float

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        write_demo_data(Path(tmp) / "data")
        folder = ImageFolder.scan(Path(tmp) / "data")
        model, info = create_teacher("efficientnet_lite0")
        cfg = GenerateConfig(
            data=str(folder.root), out=str(Path(tmp) / "s"), views=views, topk=topk
        )
        attrs = build_attrs(cfg, folder, info)
        replay = Replayer(folder, attrs, cfg.recipe)
        n = len(folder)
        keys = [(r, i) for i in range(n) for r in range(views)]
        logps = []
        with torch.inference_mode():
            for a in range(0, len(keys), 32):
                pix = torch.stack([v.pixels for v in replay.render_many(keys[a : a + 32], 224)])
                logits = model(view_to_float(pix, info.mean, info.std))
                logps.append(torch.log_softmax(logits.float(), -1))
        full = torch.cat(logps).view(n, views, -1)
    entropy = -(full.exp() * full).sum(-1).numpy()
    vals, ids = full.topk(topk, -1)
    out = view_stats(ids.numpy(), vals.numpy(), entropy)
    out.update(images=n, views=views, topk=topk, teacher="efficientnet_lite0 (real weights)")
    return out


def draw(
    t: SyntheticTeacher, images: int, views: int, topk: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids [M, R, K] uint16, log-probs [M, R, K] float32, entropy [M, R]) drawn from ``t``."""
    rng = np.random.default_rng(seed)
    pools = _pools(t, images, rng)  # [M, P] distinct class ids, pool[:, 0] the image's class
    base = -t.zipf * np.log1p(np.arange(t.pool, dtype=np.float32))
    logits = base + t.noise * rng.standard_normal((images, views, t.pool), dtype=np.float32)
    rest = (t.classes - t.pool) * math.exp(t.background)
    z = np.exp(logits).sum(-1) + rest  # [M, R]
    logp_pool = logits - np.log(z)[..., None]
    p_pool = np.exp(logp_pool)
    p_bg = math.exp(t.background) / z
    ent = -(p_pool * logp_pool).sum(-1) - (t.classes - t.pool) * p_bg * np.log(p_bg)
    top = np.argsort(-logits, axis=-1, kind="stable")[..., :topk]  # [M, R, K]
    ids = np.take_along_axis(pools[:, None, :].repeat(views, 1), top, -1).astype(np.uint16)
    return ids, np.take_along_axis(logp_pool, top, -1).astype(np.float32), ent


def _pools(t: SyntheticTeacher, images: int, rng: np.random.Generator) -> np.ndarray:
    centre = rng.integers(0, t.classes, images)
    cand = t.pool * 3
    step = rng.geometric(1.0 / max(t.spread, 1.0), (images, cand)) * rng.choice(
        [-1, 1], (images, cand)
    )
    near = (centre[:, None] + step) % t.classes
    far = rng.integers(0, t.classes, (images, cand))
    pick = np.where(rng.random((images, cand)) < t.near, near, far)
    pick[:, 0] = centre
    out = np.empty((images, t.pool), np.int64)
    for i in range(images):  # first `pool` distinct candidates, in draw order
        _, first = np.unique(pick[i], return_index=True)
        got = pick[i][np.sort(first)][: t.pool]
        if len(got) < t.pool:  # top up with unused classes
            unused = np.setdiff1d(np.arange(t.classes), got)[: t.pool - len(got)]
            got = np.concatenate([got, unused])
        out[i] = got
    return out


def _loss(t: SyntheticTeacher, target: dict[str, float], views: int, topk: int) -> float:
    ids, logp, ent = draw(t, 48, views, topk, seed=1)
    s = view_stats(ids, logp, ent)
    return (
        ((s["topk_mass"] - target["topk_mass"]) / 0.02) ** 2
        + ((s["entropy"] - target["entropy"]) / 0.05) ** 2
        + ((s["overlap"] - target["overlap"]) / 0.02) ** 2
        + ((s["top1_agree"] - target["top1_agree"]) / 0.05) ** 2
        + ((math.log(s["id_spread"] + 1) - math.log(target["id_spread"] + 1)) / 0.1) ** 2
    )


def fit(
    target: dict[str, float], views: int = 16, topk: int = 10, rounds: int = 5
) -> SyntheticTeacher:
    """Parameters whose draws match ``target`` (a deterministic coordinate search)."""
    best = SyntheticTeacher()
    loss = _loss(best, target, views, topk)
    steps = {
        "zipf": 0.25, "noise": 0.5, "background": 0.5, "spread": 20.0, "near": 0.2, "pool": 32,
    }  # fmt: skip
    for _ in range(rounds):
        for name, step in steps.items():
            for sign in (1, -1, 0.5, -0.5):
                value = getattr(best, name) + sign * step
                if name == "pool":
                    value = round(value)
                if value <= (topk if name == "pool" else 0) or (name == "near" and value > 1):
                    continue
                cand = replace(best, **{name: value})
                c = _loss(cand, target, views, topk)
                if c < loss:
                    best, loss = cand, c
            steps[name] = step * 0.6
    return best


def bank(
    t: SyntheticTeacher, images: int, views: int, topk: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A bank of ``images`` x ``views`` synthetic top-K outputs: (ids [M, R, K], log-probs)."""
    ids, logp = [], []
    for a in range(0, images, 256):
        i, lp, _ = draw(t, min(256, images - a), views, topk, seed + a)
        ids.append(i)
        logp.append(lp)
    return np.concatenate(ids), np.concatenate(logp)


__all__ = ["STATS", "SyntheticTeacher", "bank", "draw", "fit", "measure_real", "view_stats"]
