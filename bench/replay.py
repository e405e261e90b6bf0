"""Replay cost per image against timm's own train transform, side by side in one run.

Figures are process CPU milliseconds per image (best of interleaved rounds).

For each image set (the 17 demo photos, and the same photos re-encoded as ImageNet-like JPEGs,
long side 500 px, quality 90), each output size (224, 128) and mixing on/off, on one thread:

- ``decode``: Pillow decode + RGB convert alone (the floor);
- ``timm``: decode + ``create_transform(is_training=True,
  auto_augment='rand-m9-mstd0.5-inc1')`` (RandomResizedCrop, flip, RandAugment, ToTensor,
  Normalize), plus timm's batch ``Mixup`` (MixUp 0.8 / CutMix 1.0, p = 1) when mixing;
- ``ours``: ``ReplayDataset.__getitems__`` over batches in the sampler's pair order (codec 2: a
  pair's two views share two decodes and two renders), recipe ``default`` (mixing p = 1) or
  the same recipe with ``mix_prob = 0``;
- ``ours, draft``: the same with JPEG draft mode (``ReplayDataset(draft=True)``: a JPEG
  decodes at 1/2, 1/4 or 1/8 scale when the view's crop still covers the output's pixels);
- ``ours, per view``: ``Replayer.render`` one view at a time, which decodes and renders the
  partner again (the cost structure of codec 1);
- ``ours, checked``: ``ours`` with every image read checked against the store's per-sample
  content digests (xxh3_64 of the file's bytes, what the student does on a store that records
  them), and ``hash``: that check alone (the digest of every file once per batch, as ``ours``
  reads each once). ``checked/ours`` and ``hash/ours`` are its cost: at most 2% of a replay.

timm's Posterize raises on the pinned Pillow at high magnitudes (0 bits): its bits are clamped
to >= 1 here, inside the bench only. Prints CPU ms per image and the ratios.

    .venv/bin/python bench/replay.py [--rounds 3] [--sizes 224 128]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, imagenet_like, load, machine, set_threads, synthetic_attrs_parts, table

sys.path.insert(0, str(REPO))  # the repository's student package, not bench/student.py


def _clamp_timm_posterize() -> None:
    from timm.data import auto_augment as aa

    original = aa.posterize

    def posterize(img: Any, bits_to_keep: int, **kw: Any) -> Any:
        return original(img, max(1, int(bits_to_keep)), **kw)

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        aa.NAME_TO_OP[name] = posterize


def _attrs(folder: Any, mix: bool) -> Any:
    from teacher_store.store.schema import StoreAttrs
    from teacher_store.views.codec import CODEC_VERSION
    from teacher_store.views.recipe import get_recipe

    recipe = get_recipe("default")
    if not mix:
        recipe = recipe.model_copy(update={"mix_prob": 0.0})
    n = len(folder)
    return StoreAttrs(
        codec_version=CODEC_VERSION,
        num_samples=n,
        views=4,
        topk=10,
        num_classes=1000,
        value_encoding="logprob-f16",
        store_seed=0,
        chunk_samples=n,
        shard_samples=n,
        shard_views=1,
        **synthetic_attrs_parts(
            n, dataset=folder.fingerprint().to_dict(), recipe=recipe.to_dict(), views=4,
            decode="cpu",
        ),
    )  # fmt: skip


def _ms(fns: dict[str, tuple[Any, int]], rounds: int) -> dict[str, float]:
    """CPU ms per image of each ``(fn, images)``, best of ``rounds`` rounds run interleaved.

    Process CPU time, not wall time: the cores are shared, and on one thread CPU time is
    what another job's load disturbs least; the minimum is the least disturbed round.
    """
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, (fn, _count) in fns.items():
            t0 = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - t0)
    return {name: 1e3 * best[name] / count for name, (_fn, count) in fns.items()}


def measure(data: Path, size: int, mix: bool, rounds: int) -> dict[str, float]:
    """ms per image of each pipeline on the images under ``data``."""
    import numpy as np
    import torch
    from PIL import Image
    from timm.data import Mixup, create_transform

    from student.data import ReplayDataset
    from student.sampler import mix_groups, pair_order
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.images.digests import content_digest
    from teacher_store.views.pairing import slot_partners

    folder = ImageFolder.scan(data)
    paths = [folder.root / p for p in folder.paths]
    contents = [p.read_bytes() for p in paths]
    n = len(paths)
    tf = create_transform(size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1")
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, num_classes=1000)
    attrs = _attrs(folder, mix)
    ds = ReplayDataset(folder, attrs, size)
    drafted = ReplayDataset(folder, attrs, size, draft=True)
    checked = ReplayDataset(folder.with_content(folder.sample_digests()), attrs, size)
    slots = range(attrs.views)
    keys = []
    for slot in slots:  # the trainer's pair order, one batch per slot
        order, _ = pair_order(0, slot, np.arange(n), mix_groups(slot_partners(0, slot, n)), n, 1)
        keys.append([(slot, int(s)) for s in order])

    def decode() -> None:
        for p in paths:
            with Image.open(p) as im:
                im.convert("RGB")

    def timm() -> None:
        for _ in slots:
            batch = []
            for p in paths:
                with Image.open(p) as im:
                    batch.append(tf(im.convert("RGB")))
            if mix:
                x = torch.stack(batch[: n - n % 2])
                mixup(x, torch.zeros(len(x), dtype=torch.long))

    def ours() -> None:
        for batch in keys:
            ds.__getitems__(batch)

    def ours_draft() -> None:
        for batch in keys:
            drafted.__getitems__(batch)

    def ours_checked() -> None:
        for batch in keys:
            checked.__getitems__(batch)

    def digest() -> None:
        for _ in keys:
            for data in contents:
                content_digest(data)

    def per_view() -> None:
        for batch in keys:
            for slot, s in batch:
                ds.replay.render(slot, s, size)

    views = n * len(slots)
    fns = {"decode": (decode, n), "timm": (timm, views), "ours": (ours, views)}
    fns["ours, draft"] = (ours_draft, views)
    fns["ours, checked"] = (ours_checked, views)
    fns["hash"] = (digest, views)
    return _ms({**fns, "ours, per view": (per_view, views)}, rounds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (best is kept)")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = p.parse_args(argv)
    set_threads(args.threads)
    _clamp_timm_posterize()
    from teacher_store.images.demo_data import write_demo_data

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        write_demo_data(demo)
        sets = {"demo photos": demo, "ImageNet-like JPEG": imagenet_like(demo, Path(tmp) / "in")}
        for name, data in sets.items():
            for size in args.sizes:
                for mix in (True, False):
                    m = measure(data, size, mix, args.rounds)
                    rows.append(
                        [name, size, "on" if mix else "off"]
                        + [f"{m[k]:.1f}" for k in ("decode", "timm", "ours", "ours, draft")]
                        + [f"{m['ours, per view']:.1f}"]
                        + [f"{m['ours'] / m['timm']:.2f}", f"{m['ours'] / m['decode']:.2f}"]
                        + [f"{m['ours, draft'] / m['timm']:.2f}"]
                        + [f"{m['ours, draft'] / m['decode']:.2f}"]
                        + [f"{m['ours, per view'] / m['ours']:.2f}"]
                        + [f"{m['ours, checked']:.1f}", f"{m['hash']:.3f}"]
                        + [f"{m['ours, checked'] / m['ours']:.3f}"]
                        + [f"{100 * m['hash'] / m['ours']:.2f}%"]
                    )
                    print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    print(machine())
    print(load())
    headers = ["images", "px", "mixing", "decode", "timm", "ours", "ours draft", "per view"]
    headers += ["ours/timm", "ours/decode", "draft/timm", "draft/decode", "per-view/ours"]
    headers += ["ours checked", "hash", "checked/ours", "hash/ours"]
    print(table(headers, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
