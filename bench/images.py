"""Replay images/s and generation views/s by where the images live, side by side in one run.

The same images (the demo photos re-encoded as ImageNet-like JPEGs, 500 px long side, quality
90, ``--copies`` copies of each under new names) four ways:

- (a) ``folder``: the local ImageFolder;
- (b) ``tar``: the tar shards ``distill images pack`` makes of it (``pack_images``, local);
- (c) ``tar on S3``: the same pack written to ``s3://bench/tars`` on a moto server;
- (d) ``folder on S3``: the folder's files under ``s3://bench/images`` (one GET per image).

moto runs in its own process on 127.0.0.1 (``teacher_store.testing.running_s3_server``): a
Python server sharing the cores with the client, no measure of a real S3's latency, but every
read is a real HTTP request through s3fs.

**Replay** is what a student does per image, through the product's code: each source opened by
``open_images`` (as ``--data``), every read checked against the store's per-sample content
digests (``with_content``, what ``StoreLoader`` attaches), bytes read ahead in
``--read-threads`` threads (``read_ahead``, as ``StoreLoader`` does), decoded, and the stored
view replayed by ``ReplayDataset.__getitems__`` over the trainer's batches (``BatchPlan`` of the
sampler's pair order) at ``--img-size``, ``--slots`` view slots per round. Every round opens
each source afresh (a cold block cache: the first read of each 1 MiB block goes to S3) and the
rounds interleave the sources; the best round of each counts. A fifth row, ``(c') no cache``,
is (c) without the block cache (``memory_bytes=0``): every image read is one ranged GET of its
own bytes, what a shuffled epoch over a dataset far larger than the cache (ImageNet-22k) does
(there a fetched block seldom serves a second image, so the cache fetches only the image).

**Generation** (``--gen-rounds`` > 0): ``run_generate`` (``workers=0``, the real Lite0 teacher,
``--gen-views`` views at ``--gen-img-size`` px: smaller than Lite0's 224 so that image reads
weigh more, and the bench runs in minutes) from (a) and from (c), interleaved; the job's own
views/s, best of the rounds after an untimed warm-up run (the teacher's kernels are built on
first use), and whether the two stores' shard files are byte-identical.

Prints images/s (wall) and CPU ms per image of this process (moto's CPU not counted), and the
ratios (c)/(a) (goal >= 0.8), (b)/(a), (d)/(a), and generation (c)/(a) (goal >= 0.9).

    .venv/bin/python bench/images.py [--copies 16] [--rounds 3] [--gen-rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import demo_photos, imagenet_like, load, machine, set_threads, table

SOURCES = ("folder", "tar", "tar on S3", "folder on S3", "tar on S3, no cache")
LETTER = {"folder": "a", "tar": "b", "tar on S3": "c", "folder on S3": "d"}
LETTER["tar on S3, no cache"] = "c'"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=16, help="copies of each demo photo (17 each)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved replay rounds (best kept)")
    ap.add_argument("--slots", type=int, default=2, help="view slots replayed per round")
    ap.add_argument("--img-size", type=int, default=224, help="replayed view size")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--read-threads", type=int, default=None, help="default: the product's")
    ap.add_argument("--shard-bytes", type=float, default=4e6, help="pack's --shard-bytes")
    ap.add_argument("--gen-rounds", type=int, default=2, help="generation rounds (0: none)")
    ap.add_argument("--gen-views", type=int, default=2)
    ap.add_argument("--gen-img-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: seconds, figures mean little")
    ap.add_argument("--json", help="write every round's figures here")
    return ap


def _quick(args: argparse.Namespace) -> None:
    args.copies, args.rounds, args.slots, args.img_size = 2, 1, 1, 64
    args.batch_size, args.shard_bytes = 8, 1e6
    args.gen_rounds = min(args.gen_rounds, 1)
    args.gen_views, args.gen_img_size = 1, 64


class Sources:
    """The images in the four places, the store attrs a replay checks against, the plans."""

    def __init__(self, args: argparse.Namespace, work: Path, s3: Any) -> None:
        from teacher_store.images.pack import pack_images
        from teacher_store.images.source import open_images
        from teacher_store.storage.location import Location

        self.args, self.work = args, work
        photos = work / "photos"
        demo_photos(photos, args.copies)
        self.data = imagenet_like(photos, work / "images")
        files = sorted(p for p in self.data.rglob("*") if p.is_file())
        self.bytes = sum(p.stat().st_size for p in files)
        s3.make_bucket("bench")
        remote = Location.at("s3://bench/images")
        for p in files:  # the folder on S3, file for file
            remote.write_atomic(p.relative_to(self.data).as_posix(), p.read_bytes())
        local = pack_images(str(self.data), str(work / "tars"), int(args.shard_bytes))
        on_s3 = pack_images(str(self.data), "s3://bench/tars", int(args.shard_bytes))
        self.shards = local.shards
        self.urls = {
            "folder": str(self.data),
            "tar": local.pattern,
            "tar on S3": on_s3.pattern,
            "folder on S3": "s3://bench/images/",
            "tar on S3, no cache": on_s3.pattern,
        }
        folder = open_images(self.data)
        self.digests = folder.sample_digests()  # the store's content record
        self.n = len(folder)
        ref = folder.with_content(self.digests).fingerprint()
        for name in SOURCES:  # every source is the same dataset: the store accepts each
            fp = open_images(self.urls[name]).with_content(self.digests).fingerprint()
            assert ref.mismatch(fp) is None, (name, ref.mismatch(fp))
        self.attrs = _attrs(ref, self.n)

    def open(self, name: str) -> Any:
        """Source ``name`` opened afresh (a cold cache), checked against the store's digests."""
        from teacher_store.images.source import open_images

        if name == "tar on S3, no cache":
            from teacher_store.images.shards import TarShards

            source: Any = TarShards.open(self.urls[name], memory_bytes=0)
        else:
            source = open_images(self.urls[name])
        return source.with_content(self.digests)


def _attrs(fingerprint: Any, n: int) -> Any:
    """A store's attrs over the dataset (the default recipe, views replayed on CPU)."""
    from _common import synthetic_attrs_parts

    from teacher_store.store.schema import StoreAttrs
    from teacher_store.views.codec import CODEC_VERSION
    from teacher_store.views.recipe import get_recipe

    return StoreAttrs(
        codec_version=CODEC_VERSION, num_samples=n, views=8, topk=10, num_classes=1000,
        value_encoding="logprob-f16", store_seed=0, chunk_samples=n, shard_samples=n,
        shard_views=1,
        **synthetic_attrs_parts(n, dataset=fingerprint.to_dict(),
                                recipe=get_recipe("default").to_dict(), views=8, decode="cpu"),
    )  # fmt: skip


def replay_round(src: Sources, name: str) -> tuple[float, float]:
    """(images/s wall, CPU ms per image) of one replay round of source ``name``."""
    import numpy as np

    from student.data import BatchPlan, ReplayDataset
    from student.sampler import mix_groups, pair_order
    from teacher_store.views.pairing import slot_partners

    args, n = src.args, src.n
    source = _reader(src.open(name), args.read_threads)
    ds = ReplayDataset(source, src.attrs, args.img_size)
    images = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for slot in range(args.slots):  # the trainer's pair order, its batches
        order, _ = pair_order(0, slot, np.arange(n), mix_groups(slot_partners(0, slot, n)), n, 1)
        for keys in BatchPlan(order, slot, args.batch_size):
            items = ds.__getitems__(keys)
            assert all(item["ok"] for item in items), name
            images += len(items)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    close = getattr(source, "close", None)
    if close is not None:
        close()
    return images / wall, 1e3 * cpu / images


def _reader(source: Any, threads: int | None) -> Any:
    """``source`` reading ahead as the student's does (``StoreLoader``: ``read_ahead``)."""
    from teacher_store.images.prefetch import read_ahead
    from teacher_store.options import DEFAULT_READ_THREADS

    return read_ahead(source, DEFAULT_READ_THREADS if threads is None else threads)


def generate_round(src: Sources, name: str, out: Path) -> float:
    """The generation job's views/s from source ``name`` into ``out``."""
    from teacher_store.generate import GenerateConfig, run_generate

    a = src.args
    threads = {} if a.read_threads is None else {"read_threads": a.read_threads}
    cfg = GenerateConfig(
        data=src.urls[name], out=str(out), views=a.gen_views, img_size=a.gen_img_size,
        batch_size=a.batch_size, workers=0, progress=False, device="cpu", overwrite=True,
        **threads,
    )  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)  # a fresh store each round (no resume)
    s = run_generate(cfg)
    assert s["complete"] and s["views_computed"] == src.n * a.gen_views, s
    return float(s["views_per_s"])


def best_of(rounds: int, fns: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Every function ``rounds`` times, interleaved: drift and other load hit all alike."""
    out: dict[str, list[Any]] = {name: [] for name in fns}
    for r in range(rounds):
        for name, fn in fns.items():
            out[name].append(fn())
            print(f"  round {r + 1} {name}: {out[name][-1]}", file=sys.stderr, flush=True)
    return out


def _same_store(a: Path, b: Path) -> bool:
    """Whether two stores' shard files (every file but the run records) are byte-identical."""
    from teacher_store.storage.location import Location
    from teacher_store.store import layout

    files = layout.load_manifest(Location.local(a))[1].files
    return all((a / k).read_bytes() == (b / k).read_bytes() for k in files)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        _quick(args)
    set_threads(args.threads)
    from teacher_store.testing import running_s3_server

    print(machine())
    print(load() + " at the start")
    with tempfile.TemporaryDirectory(prefix="bench_images_") as tmp, running_s3_server(
        Path(tmp), process=True
    ) as s3:  # fmt: skip
        work = Path(tmp)
        src = Sources(args, work, s3)
        print(
            f"{src.n} images ({src.bytes / src.n / 1e3:.0f} kB each, {src.bytes / 1e6:.1f} MB), "
            f"{src.shards} tar shards; moto on {s3.endpoint.removeprefix('http://')}; replay "
            f"{args.slots} slot(s) x {src.n} views at {args.img_size} px, batch "
            f"{args.batch_size}, read-threads {args.read_threads or 'default'}, best of "
            f"{args.rounds} interleaved rounds"
        )
        fns = {name: (lambda name=name: replay_round(src, name)) for name in SOURCES}
        replay = best_of(args.rounds, fns)
        gen: dict[str, list[float]] = {}
        same = None
        if args.gen_rounds:
            outs = {"folder": work / "gen-folder", "tar on S3": work / "gen-tar-s3"}
            generate_round(src, "folder", work / "gen-warmup")  # the teacher's kernels built
            gfns = {n: (lambda n=n: generate_round(src, n, outs[n])) for n in outs}
            gen = best_of(args.gen_rounds, gfns)
            same = _same_store(outs["folder"], outs["tar on S3"])
            shutil.rmtree(outs["folder"])
    report(args, replay, gen, same)
    if args.json:
        record = {"images": src.n, "shards": src.shards, "replay": replay, "generation": gen}
        Path(args.json).write_text(json.dumps({**record, "identical": same}, indent=1))
    return 0


def report(
    args: argparse.Namespace,
    replay: dict[str, list[tuple[float, float]]],
    gen: dict[str, list[float]],
    same: bool | None,
) -> None:
    best = {name: max(r[0] for r in runs) for name, runs in replay.items()}
    cpu = {name: min(r[1] for r in runs) for name, runs in replay.items()}
    a = best["folder"]
    rows = [
        [f"({LETTER[n]}) {n}", f"{best[n]:.1f}", f"{cpu[n]:.1f}", f"{best[n] / a:.2f}"]
        for n in SOURCES
    ]
    print(table(["replay source", "images/s", "CPU ms/image", "ratio to (a)"], rows))
    ratio = best["tar on S3"] / a
    print(
        f"replay (c)/(a) {ratio:.2f} (goal >= 0.8: {'met' if ratio >= 0.8 else 'NOT met'}), "
        f"(b)/(a) {best['tar'] / a:.2f}, (d)/(a) {best['folder on S3'] / a:.2f}, "
        f"(c')/(a) {best['tar on S3, no cache'] / a:.2f}"
    )
    ca = cpu["folder"]
    print(  # this process's CPU per image: steadier than wall time on shared cores
        "client CPU per image against (a): "
        + ", ".join(f"({LETTER[n]}) {cpu[n] / ca:.2f}" for n in SOURCES[1:])
    )
    if gen:
        g = {n: max(v) for n, v in gen.items()}
        gr = g["tar on S3"] / g["folder"]
        print(
            f"generation views/s ({args.gen_views} views at {args.gen_img_size} px, Lite0, "
            f"workers 0): (a) folder {g['folder']:.1f}, (c) tar on S3 {g['tar on S3']:.1f}; "
            f"(c)/(a) {gr:.2f} (goal >= 0.9: {'met' if gr >= 0.9 else 'NOT met'}); "
            f"stores byte-identical: {same}"
        )
    print(load() + " at the end")


if __name__ == "__main__":
    raise SystemExit(main())
