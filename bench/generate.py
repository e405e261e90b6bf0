"""Generation throughput vs a bare teacher-forward loop, as a ratio, in one run.

On the bundled demo photos with the real EfficientNet-Lite0 teacher at its 224 px input:

* ``run_generate`` (decode + augment + render in the DataLoader, teacher forward, top-K, encode,
  write and commit shards) with ``workers=0`` and ``workers=2``. Throughput is the job's own
  views/s (the unit loop: from the first image decode to the last shard commit), and also
  end-to-end wall time including teacher construction, store creation and the final manifest.
* The bare loop: the same views, pre-rendered by the codec and cut into the very same teacher
  batches (``verify.unit_batches``), normalized to float32 channels-last tensors up front;
  only ``model(x)`` is timed. A second bare figure times generate's own teacher call
  (normalize + forward + log-softmax + top-K) on the uint8 batches.

On a shared machine wall-clock numbers swing with other load, so the script also prints a
CPU-time ratio for workers=0 (views per CPU-second of this process, bare vs end to end).

Both sides use the same torch thread count (``--threads``, default 1: on a 2-core box that
leaves one core for the DataLoader workers). Every measurement runs ``--repeats`` times after a
warm-up (oneDNN builds its kernels on first use) and the best is kept.

Both view orders run, interleaved in the same rounds (``--orders``): ``pairs`` (the default
since issue 13: a view and its partner's view render in one step, one decode and one base
render of each image serving both) and ``sample`` (the schedule before: sample-major, each
mixed view decoding and rendering its partner again). On the demo's 17 photos every pair lies
in the one shard unit, so pair order shares every pair there; the ratio pairs / sample is
printed.

``--copies K`` copies each photo K times under new names (more images than the replayer's
64-image decode cache, as any real dataset: the schedule before then decodes most partners
again). Usage: ``python bench/generate.py [--views 6] [--threads 1] [--repeats 3]
[--copies 1] [--orders pairs sample]``.
Goal: generation / bare >= 0.9 on CPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import demo_photos, machine, set_threads, table


def rendered_batches(
    store_path: Path, data: Path, max_batches: int | None = None
) -> tuple[list[Any], Any]:
    """The store's teacher batches, rendered: list of uint8 [B, 3, H, W] tensors (the first
    ``max_batches`` of them when given), and the store's attrs."""
    import numpy as np
    import torch

    from teacher_store.images.dataset import ImageFolder
    from teacher_store.store.arrays import LocalStore
    from teacher_store.store.layout import shard_units
    from teacher_store.verify import unit_batches
    from teacher_store.views.codec import decode
    from teacher_store.views.recipe import Recipe
    from teacher_store.views.replay import render_view

    store = LocalStore(store_path)
    a = store.attrs
    folder = ImageFolder.scan(data)
    images = [folder.load(i) for i in range(len(folder))]
    recipe = Recipe.from_dict(a.recipe)
    size = int(a.teacher["input_size"][1])
    out = []
    for u in shard_units(a):
        v = np.asarray(store.group["valid"][u.slot_start : u.slot_stop, u.start : u.stop]) != 0
        for batch in unit_batches(u, v, a):
            if max_batches is not None and len(out) >= max_batches:
                return out, a
            views = []
            for slot, sample in batch:
                p = decode(a.store_seed, slot, sample, a.num_samples, recipe, a.views)
                partner = images[p.mix.partner] if p.mix is not None else None
                views.append(render_view(images[sample], p, size, partner=partner))
            out.append(torch.stack(views))
    return out, a


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--views", type=int, default=6, help="view slots R per photo (default 6)")
    ap.add_argument("--topk", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    ap.add_argument(
        "--copies",
        type=int,
        default=1,
        help="copies of each demo photo under new names (default 1): more images than the "
        "replayer's 64-image decode cache show the decode saving of pair order",
    )
    ap.add_argument(
        "--orders",
        nargs="+",
        default=["pairs", "sample"],
        choices=["pairs", "sample"],
        help="generation view orders to time (default both; the bare loop replays the first's)",
    )
    return ap


class Runs:
    """The measurements of one bench run: the bare loops and ``run_generate``, on the same
    views (the warm-up store's batches), with their CPU-time and image-decode figures."""

    def __init__(self, args: argparse.Namespace, work: Path, data: Path) -> None:
        import torch

        from models import create_teacher
        from teacher_store.generate import run_generate
        from teacher_store.teacher import Teacher
        from teacher_store.views.replay import view_to_float

        self.args, self.work, self.data = args, work, data
        ref = work / "warmup"  # warm-up, and the store whose batches the bare loop replays
        run_generate(self.config(ref, 0))
        self.batches, self.attrs = rendered_batches(ref, data)
        self.nviews = sum(len(b) for b in self.batches)
        model, info = create_teacher(self.attrs.config["teacher"])
        self.model = model.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.floats = [
            view_to_float(b, info.mean, info.std).contiguous(memory_format=torch.channels_last)
            for b in self.batches
        ]
        self.teacher = Teacher(self.model, info, torch.device("cpu"), args.topk)
        self.cpu: dict[str, list[float]] = {}
        self.decodes: dict[str, int] = {}

    def config(self, out: Path, workers: int, order: str | None = None) -> Any:
        from teacher_store.generate import GenerateConfig

        a = self.args
        return GenerateConfig(
            data=str(self.data),
            out=str(out),
            views=a.views,
            topk=a.topk,
            batch_size=a.batch_size,
            workers=workers,
            progress=False,
            device="cpu",
            overwrite=True,
            view_order=order or a.orders[0],
        )

    def bare(self) -> float:
        import torch

        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for x in self.floats:
                self.model(x)
        self.cpu.setdefault("bare", []).append(self.nviews / (time.process_time() - c0))
        return self.nviews / (time.perf_counter() - t0)

    def bare_teacher_call(self) -> float:
        t0 = time.perf_counter()
        for b in self.batches:
            self.teacher(b)
        return self.nviews / (time.perf_counter() - t0)

    def generate(self, workers: int, order: str) -> tuple[float, float]:
        from teacher_store.generate import run_generate

        out = self.work / f"w{workers}{order}"
        shutil.rmtree(out, ignore_errors=True)
        count = [0]

        def hook(_sample: int) -> None:
            count[0] += 1

        t0, c0 = time.perf_counter(), time.process_time()
        s = run_generate(self.config(out, workers, order), decode_hook=hook)
        if workers == 0:  # workers decode in their own processes: counted only here
            self.decodes[order] = count[0]
        wall = time.perf_counter() - t0
        rate = self.nviews / (time.process_time() - c0)
        self.cpu.setdefault(f"gen{workers}{order}", []).append(rate)
        assert s["complete"] and s["views_computed"] == self.nviews, s
        return float(s["views_per_s"]), self.nviews / wall

    def measure(self) -> dict[str, list[float]]:
        """Every measurement ``--repeats`` times, interleaved, so that drift hits all alike."""
        self.bare()  # warm the float path too
        results: dict[str, list[float]] = {}
        for _ in range(max(1, self.args.repeats)):
            results.setdefault("bare", []).append(self.bare())
            results.setdefault("bare_call", []).append(self.bare_teacher_call())
            for w in (0, 2):
                for order in self.args.orders:
                    loop, e2e = self.generate(w, order)
                    results.setdefault(f"gen{w}{order}", []).append(loop)
                    results.setdefault(f"gen{w}{order}_e2e", []).append(e2e)
        return results


def report(runs: Runs, results: dict[str, list[float]]) -> None:
    import torch

    args, cpu, decodes, nviews = runs.args, runs.cpu, runs.decodes, runs.nviews
    best = {k: max(v) for k, v in results.items()}
    b = best["bare"]
    print(
        f"{nviews} views of {len(list(runs.data.rglob('*.*')))} demo photos "
        f"({args.copies} copies of each) at "
        f"{runs.attrs.teacher['input_size'][1]} px, batch {args.batch_size}, top-{args.topk}, "
        f"{torch.get_num_threads()} torch thread(s); best of {args.repeats}"
    )
    rows = [
        ["bare loop: model(x) on pre-normalized channels-last tensors", b, 1.0],
        [
            "bare loop: generate's teacher call (normalize+forward+top-K)",
            best["bare_call"],
            best["bare_call"] / b,
        ],
    ]
    for w in (0, 2):
        for order in args.orders:
            loop, e2e = best[f"gen{w}{order}"], best[f"gen{w}{order}_e2e"]
            rows.append([f"run_generate {order} order, workers={w}: job loop", loop, loop / b])
            rows.append([f"run_generate {order} order, workers={w}: end to end", e2e, e2e / b])
    print(table(["what", "views/s", "ratio to bare model(x)"], rows))
    c_bare = max(cpu["bare"][1:] or cpu["bare"])
    for order in args.orders:
        c_gen = max(cpu[f"gen0{order}"])
        print(
            f"CPU-time view (robust to other load; workers=0 runs everything in this "
            f"process): bare {c_bare:.1f} views per CPU-s, run_generate {order} order "
            f"workers=0 end to end {c_gen:.1f} views per CPU-s, ratio {c_gen / c_bare:.2f}"
        )
    print(
        "image decodes per view (workers=0): "
        + ", ".join(f"{o} {decodes[o]} ({decodes[o] / nviews:.2f})" for o in args.orders)
    )
    _report_orders(args, best, cpu)
    print(
        "all runs: "
        + ", ".join(f"{k} " + "/".join(f"{x:.1f}" for x in v) for k, v in results.items()),
        file=sys.stderr,
    )


def _report_orders(
    args: argparse.Namespace, best: dict[str, float], cpu: dict[str, list[float]]
) -> None:
    """Pair order against sample order, and the goal line."""
    first, b = args.orders[0], best["bare"]
    if set(args.orders) == {"pairs", "sample"}:
        for w in (0, 2):
            p, q = best[f"gen{w}pairs"], best[f"gen{w}sample"]
            print(f"pairs / sample order, workers={w}: job loop {p:.1f} / {q:.1f} = {p / q:.2f}")
        p, q = max(cpu["gen0pairs"]), max(cpu["gen0sample"])
        print(f"pairs / sample order, workers=0, views per CPU-s: {p:.1f} / {q:.1f} = {p / q:.2f}")
    top = max(best[f"gen0{first}"], best[f"gen2{first}"]) / b
    print(
        f"\ngoal generation / bare >= 0.9 ({first} order): best job-loop ratio {top:.2f} "
        f"(workers=0 {best[f'gen0{first}'] / b:.2f}, workers=2 {best[f'gen2{first}'] / b:.2f})"
        f" -> {'met' if top >= 0.9 else 'NOT met'}",
        flush=True,
    )


def main() -> int:
    args = _parser().parse_args()
    set_threads(args.threads)

    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    try:
        data = work / "images"
        demo_photos(data, args.copies)
        runs = Runs(args, work, data)
        report(runs, runs.measure())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
