"""Student training speed: from the store through the service vs in-memory targets vs online KD.

One run, same data, same student, same config, same views; only where the teacher targets come
from changes:

  (a) service  -- ``distill serve`` (a real uvicorn server on 127.0.0.1) over the store's parent
                  folder; the trainer streams blocks with ``teacher_store.client.StoreClient``
                  (store URL ``http://127.0.0.1:PORT/v1/stores/NAME``);
  (b) memory   -- the same store copied into fsspec's in-process memory filesystem
                  (``memory://``): targets cost ~nothing, the ceiling;
  (c) online   -- online KD: ``TrainConfig(teacher=efficientnet_lite0)`` runs the real teacher
                  every step on the same replayed views (K = C, dense KD), each view rendered
                  a second time at the teacher's own input size (224 px), as online KD does.

  (f) ensemble -- two stores through the service, ``store=[A, B]``: the teachers' mixture
                  (``student.ensemble``); B is made with ``generate --like A`` by a second
                  teacher, ``tf_efficientnet_lite0`` with RANDOM weights (timm init, seed 0:
                  the same cost as A's teacher; float16 log-probs, so its small
                  probabilities are kept). Compared with (a), one store (``--no-ensemble``
                  skips it).

Heavy-teacher rows, student ``tiny_vit_5m_224`` at the same resolution (``--heavy-*``):

  (d) service  -- as (a);
  (e) online   -- online KD with a ViT-L/16 teacher (``vit_large_patch16_224``, ~61 GFLOPs at
                  its own 224 px input; RANDOM weights, timm init, seed 0: this row measures
                  cost only) on the same replayed views rendered at 224 px.

  Only a few steps of each run (``--heavy-steps``): images/s is measured between the end of
  step 1 and the end of step 1 + k, as the difference of two runs' loop times (max_steps = 1
  and 1 + k), so DataLoader start-up and first-step warm-up cancel out.

All go through ``student.train.run_train``. Data: the real demo photos
(``teacher_store.images.demo_data.write_demo_data``, 17 photos) each copied ``--copies``
times under new names, so that one epoch is many steps (a 17-photo epoch is a single batch
of 16, and per-epoch DataLoader start-up would dominate). images/s is the trainer's own
per-epoch figure (loop time only: no setup, evaluation or checkpoint), summed over epochs >=
``--skip-epochs`` (epoch 0 warms allocators and caches). Runs are interleaved (a, b, c, a, b,
c, ...) so drifting load from other jobs on the machine hits every variant alike.

Usage: ``python bench/student.py [--work DIR] [--repeats 2] [--img-size 128]``; see --help.
Goals: (a)/(b) >= 0.95, (a)/(c) >= 2, (d)/(e) >= 10, (f)/(a) >= 0.9.
``--only-heavy`` runs only the heavy-teacher rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _common import REPO, load, machine, set_threads, table, timed


def write_photos(out: Path, copies: int) -> int:
    """The demo photos, each copied ``copies`` times as ``<class>/<stem>-<k><ext>``."""
    from teacher_store.images.demo_data import write_demo_data

    src = out.parent / (out.name + "-src")
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    n = 0
    for f in write_demo_data(src):
        (out / f.parent.name).mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            shutil.copyfile(f, out / f.parent.name / f"{f.stem}-{k:02d}{f.suffix}")
            n += 1
    shutil.rmtree(src)
    return n


def start_service(root: Path, log: Path) -> Any:
    """``distill serve --root ROOT`` as a subprocess on a free loopback port (one torch thread:
    the trainer has the cores)."""
    from teacher_store.testing import ServiceProcess

    return ServiceProcess.serve(root, env={"OMP_NUM_THREADS": "1"}, log=log)


def block_requests(service: Any) -> int:
    """Block requests the service answered so far (from its Prometheus /metrics)."""
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("distill_requests_total{") and "/blocks/" in line
        )
    )


def cpu_seconds(pids: tuple[int, ...] = ()) -> float:
    """CPU seconds (user + system) of this process, its reaped children (DataLoader workers are
    joined at the end of every epoch) and the live processes ``pids`` (the server)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def service_ready() -> str | None:
    """None when the service and its client exist and `distill serve --help` works; else why."""
    for f in ("api/main.py", "teacher_store/client.py"):
        if not (REPO / f).is_file():
            return f"{f} is missing"
    exe = Path(sys.executable).with_name("distill")
    r = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`distill serve --help` failed: {r.stderr.strip()[-200:]}"
    return None


def recs_of(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (metrics.jsonl)."""
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def steady_rate(run_dir: Path, skip: int, images_per_epoch: int) -> tuple[float, int, float]:
    """(images/s, images, loop seconds) over the epochs >= ``skip`` of a run's metrics.jsonl.

    The trainer logs each epoch's images/s over its loop time only (no setup, evaluation or
    checkpoint); an epoch is ``images_per_epoch`` images (no max_steps here), so its time is
    images / rate.
    """
    images = seconds = 0.0
    for rec in recs_of(run_dir):
        if rec["epoch"] >= skip:
            seconds += images_per_epoch / float(rec["images_per_s"])
            images += images_per_epoch
    return (images / seconds if seconds else float("nan")), int(images), seconds


def cost_breakdown(
    data: Path, store: Path, args: argparse.Namespace, batches: int = 4
) -> dict[str, float]:
    """CPU milliseconds per image, measured one at a time in this process: replaying a view
    (what a DataLoader worker does), one student training step, one teacher forward."""
    import numpy as np
    import timm.optim
    import torch

    from models import create_student, create_teacher
    from student.data import ReplayDataset
    from student.loss import sparse_kd_loss
    from student.sampler import mix_groups, pair_order
    from teacher_store.images.dataset import ImageFolder
    from teacher_store.store.arrays import LocalStore
    from teacher_store.views.codec import PAIR_TILE
    from teacher_store.views.pairing import slot_partners
    from teacher_store.views.replay import view_to_float

    attrs = LocalStore(store).attrs
    folder = ImageFolder.scan(data)
    ds = ReplayDataset(folder, attrs, args.img_size)
    bs, n = args.batch_size, len(folder)
    # the trainer's batches: slot 0 in the sampler's pair order (a pair's views share decodes)
    groups = mix_groups(slot_partners(attrs.store_seed, 0, n))
    order, _ = pair_order(0, 0, np.arange(n), groups, PAIR_TILE, 2)
    keys = [(0, int(s)) for s in order[: bs * batches]]
    t0 = time.perf_counter()
    items = [x for b in range(batches) for x in ds.__getitems__(keys[b * bs : (b + 1) * bs])]
    images = torch.stack([x["image"] for x in items])
    out = {"replay a view": 1e3 * (time.perf_counter() - t0) / len(keys)}
    model = create_student(args.student, attrs.num_classes, img_size=args.img_size)
    opt = timm.optim.create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    norm = (model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    teacher, info = create_teacher(args.teacher)
    ids = torch.arange(attrs.num_classes).expand(bs, -1)

    def student_step(x: torch.Tensor, logp: torch.Tensor) -> None:
        model.train()
        loss = sparse_kd_loss(model(view_to_float(x, *norm)), ids, logp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def teacher_fwd(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.log_softmax(teacher(view_to_float(x, info.mean, info.std)), -1)

    # Online KD feeds the teacher the same views rendered at its own input size.
    big = ReplayDataset(folder, attrs, int(info.input_size[1]))
    teacher_images = torch.stack([big[k]["image"] for k in keys])
    logp = teacher_fwd(teacher_images[:bs]).clone()
    student_step(images[:bs], logp)  # warm-up
    for name, fn, xs in (
        ("student train step", lambda x: student_step(x, logp), images),
        (f"teacher forward ({info.input_size[1]} px)", teacher_fwd, teacher_images),
    ):
        t0 = time.perf_counter()
        for b in range(1, batches):
            fn(xs[b * bs : (b + 1) * bs])
        out[name] = 1e3 * (time.perf_counter() - t0) / (bs * (batches - 1))
    return out


def random_teacher(name: str, path: Path) -> Path:
    """A random-weight checkpoint of timm ``name`` (timm init, seed 0): for cost rows only."""
    import timm
    import torch

    if not path.is_file():
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=1000)
        torch.save(model.state_dict(), path)
    return path


def loop_seconds(cfg: Any) -> tuple[float, int]:
    """(timed loop seconds, steps) of one ``run_train`` call (one epoch, max_steps)."""
    from student.train import run_train

    shutil.rmtree(cfg.out, ignore_errors=True)
    summary = run_train(cfg)
    return float(summary["train_time_s"]), int(summary["step"])


def heavy_rows(
    args: argparse.Namespace, data: Path, store_url: str, store: Path, work: Path
) -> dict[str, dict[str, float]]:
    """(d) store-fed vs (e) online KD with a large random-weight teacher, same student/views."""
    from student.config import TrainConfig

    ckpt = random_teacher(args.heavy_teacher, work / f"{args.heavy_teacher}-random.pth")
    base = {
        "data": str(data),
        "model": args.heavy_student,
        "epochs": 1,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "warmup_epochs": 0.0,
        "workers": args.workers,
        "seed": 0,
        "device": "cpu",
        "val_fraction": 0.0,
        "tensorboard": False,
        "progress": False,
    }
    online = {"teacher": args.heavy_teacher, "teacher_checkpoint": str(ckpt)}
    rows = {
        "d": ({"store": store_url}, args.heavy_steps * 4),
        "e": ({"store": str(store), **online}, args.heavy_steps),
    }
    out: dict[str, dict[str, float]] = {}
    for key, (extra, k) in rows.items():
        t: dict[int, float] = {}
        for steps in (1, 1 + k):
            cfg = TrainConfig(
                out=str(work / "runs" / f"{key}{steps}"), max_steps=steps, **base, **extra
            )
            t[steps], done = loop_seconds(cfg)
            if done != steps:
                raise RuntimeError(f"({key}) ran {done} steps, not {steps}: more --copies")
        secs = t[1 + k] - t[1]
        out[key] = {"ips": k * args.batch_size / secs, "steps": k, "seconds": secs}
        print(f"  {key}: {out[key]['ips']:.2f} img/s over {k} steps", file=sys.stderr, flush=True)
    return out


def print_heavy(args: argparse.Namespace, heavy: dict[str, dict[str, float]]) -> float:
    """The heavy-teacher table; returns (d)/(e)."""
    d, e = heavy["d"], heavy["e"]
    print()
    print(
        f"heavy teacher: student {args.heavy_student} at {args.img_size} px, batch "
        f"{args.batch_size}; teacher {args.heavy_teacher} with RANDOM weights (timm init, seed "
        "0; cost only) at its own 224 px input on the same views; img/s between steps 1 and 1+k"
    )
    rows = [
        ["(d) store via the service", f"{d['ips']:.2f}", int(d["steps"]), f"{d['seconds']:.1f}"],
        [
            f"(e) online KD ({args.heavy_teacher}, 224 px)",
            f"{e['ips']:.2f}",
            int(e["steps"]),
            f"{e['seconds']:.1f}",
        ],
    ]
    print(table(["variant", "images/s", "steps k", "seconds"], rows))
    ratio = d["ips"] / e["ips"]
    print(f"(d)/(e) = {ratio:.2f} by images/s (goal >= 10: {'met' if ratio >= 10 else 'missed'})")
    return ratio


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def print_lite(
    args: argparse.Namespace,
    sizes: tuple[int, int, dict[str, Any]],
    variants: dict[str, dict[str, Any]],
    results: dict[str, list[dict[str, Any]]],
    costs: dict[str, float],
) -> dict[str, float]:
    """The (a)-(c) table, ratios and cost breakdown; returns the ratios."""
    n, steps_per_epoch, gen = sizes
    rate = {k: mean([r["ips"] for r in rs]) for k, rs in results.items()}
    cpu = {k: mean([r["cpu_ms_per_image"] for r in rs]) for k, rs in results.items()}
    print()
    print(
        f"settings: {n} images (17 demo photos x {args.copies}), store: {args.teacher} at "
        f"{args.img_size} px, R={args.views}, K={args.topk}, recipe {args.recipe!r}, "
        f"blocks of {args.chunk_samples} samples "
        f"({gen['views_per_s']:.1f} views/s); student {args.student} at {args.img_size} px, "
        f"batch {args.batch_size}, {steps_per_epoch} steps/epoch x {args.epochs} epochs, "
        f"workers {args.workers}, fp32, AdamW; img/s over epochs >= {args.skip_epochs}; "
        f"{args.repeats} interleaved round(s)"
    )
    print()
    rows = []
    for k, rs in results.items():
        per = ", ".join(f"{r['ips']:.1f}" for r in rs)
        rows.append(
            [
                variants[k]["label"],
                f"{rate[k]:.1f}" + (f" ({per})" if len(rs) > 1 else ""),
                f"{mean([r['loop_s'] for r in rs]):.1f}",
                f"{mean([r['wall_s'] for r in rs]):.1f}",
                f"{cpu[k]:.1f}",
            ]
        )
    headers = ["variant", "images/s", "timed loop s", "run_train wall s", "CPU ms / image"]
    print(table(headers, rows))
    print()
    ratios: dict[str, float] = {}
    for other, goal in (("b", 0.95), ("c", 2.0)):
        if other not in rate:
            continue
        r, c = rate["a"] / rate[other], cpu[other] / cpu["a"]
        print(
            f"(a)/({other}) = {r:.3f} by images/s, {c:.3f} by CPU per image "
            f"(goal >= {goal:g}: {'met' if r >= goal else 'missed'})"
        )
        ratios.update({f"a/{other}": r, f"cpu a/{other}": c})
    if "f" in rate:
        fa, cfa = rate["f"] / rate["a"], cpu["a"] / cpu["f"]
        print(
            f"(f)/(a) = {fa:.3f} by images/s, {cfa:.3f} by CPU per image: two stores' ensemble "
            f"vs one store (goal >= 0.9: {'met' if fa >= 0.9 else 'missed'})"
        )
        ratios.update({"f/a": fa, "cpu f/a": cfa})
    print(
        "CPU ms / image: user+system CPU of the trainer, its DataLoader workers and (a) the "
        "server over the whole run_train call (setup and checkpoints included), per trained "
        "image; unlike images/s it hardly moves when other jobs share the cores."
    )
    if costs:
        print()
        print(
            f"per-image cost, each part timed alone in the main process ({args.threads} threads, "
            f"batch {args.batch_size}, {args.img_size} px):"
        )
        print(table(["work", "wall ms / image"], [[k, f"{v:.1f}"] for k, v in costs.items()]))
        rep, stu, tea = costs.values()  # replay, student step, teacher forward
        print(
            "online KD adds the teacher forward to the training loop's serial work: "
            f"(student + teacher) / student = {(stu + tea) / stu:.2f}x when the loop is the "
            f"bottleneck, (replay + student + teacher) / (replay + student) = "
            f"{(rep + stu + tea) / (rep + stu):.2f}x when all CPU work adds up; "
            "(a)/(c) >= 2 needs a teacher forward at least as costly as a student training step"
        )
    return ratios


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--copies", type=int, default=12, help="copies of each of the 17 demo photos")
    p.add_argument("--teacher", default="efficientnet_lite0")
    p.add_argument("--student", default="tf_efficientnetv2_b0")
    p.add_argument("--img-size", type=int, default=128, help="student (and store) resolution")
    p.add_argument("--views", type=int, default=3, help="R view slots in the store")
    p.add_argument("--topk", type=int, default=10)
    p.add_argument("--recipe", default="default", help="store augmentation recipe")
    p.add_argument(
        "--chunk-samples",
        type=int,
        default=64,
        help="store chunk = the trainer's block: several block fetches per epoch",
    )
    p.add_argument("--epochs", type=int, default=3, help="student epochs per run")
    p.add_argument("--skip-epochs", type=int, default=1, help="warm-up epochs left out of img/s")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds of (a, b, c)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-image cost table")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--heavy-teacher", default="vit_large_patch16_224", help="random weights")
    p.add_argument("--heavy-student", default="tiny_vit_5m_224")
    p.add_argument(
        "--heavy-steps", type=int, default=2, help="k timed online-KD steps ((d): 4k); 0: no rows"
    )
    p.add_argument("--only-heavy", action="store_true", help="skip rows (a)-(c)")
    p.add_argument("--no-ensemble", action="store_true", help="skip row (f), two stores")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["a", "b", "c", "f"],
        choices=["a", "b", "c", "f"],
        help="rows to run (default all; (a) is every ratio's reference)",
    )
    return p


def build_store(args: argparse.Namespace, data: Path, out: Path) -> dict[str, Any]:
    """The store every variant reads: ``run_generate`` with the bench's settings."""
    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.views.recipe import get_recipe

    return run_generate(
        GenerateConfig(
            data=str(data),
            out=str(out),
            teacher=args.teacher,
            views=args.views,
            topk=args.topk,
            batch_size=32,
            recipe=get_recipe(args.recipe),
            chunk_samples=args.chunk_samples,
            shard_samples=args.chunk_samples * 4,
            img_size=args.img_size,
            workers=1,
            device="cpu",
            overwrite=True,
            progress=False,
        )
    )


def build_second_store(args: argparse.Namespace, data: Path, stores: Path, work: Path) -> None:
    """Row (f)'s second store: ``generate --like`` the first with a second teacher,
    ``tf_efficientnet_lite0`` with random weights (the first teacher's cost; float16 log-probs,
    so its small probabilities are kept)."""
    from teacher_store.generate import GenerateConfig, run_generate

    ckpt = random_teacher("tf_efficientnet_lite0", work / "lite0-random.pth")
    run_generate(
        GenerateConfig(
            data=str(data),
            out=str(stores / "demo-b"),
            like=str(stores / "demo"),
            teacher="tf_efficientnet_lite0",
            checkpoint=str(ckpt),
            topk=args.topk,
            value_encoding="logprob-f16",
            batch_size=32,
            chunk_samples=args.chunk_samples,
            shard_samples=args.chunk_samples * 4,
            workers=1,
            device="cpu",
            overwrite=True,
            progress=False,
        )
    )


def lite_variants(args: argparse.Namespace, url_a: str, store: Path) -> dict[str, dict[str, Any]]:
    """Rows (a)-(c): where each run's targets come from."""
    from teacher_store.testing import memory_copy

    return {
        "a": {"label": "(a) store via the service", "store": url_a},
        "b": {"label": "(b) in-memory targets (ceiling)", "store": memory_copy(store, "demo")},
        "c": {
            "label": f"(c) online KD ({args.teacher} every step)",
            "store": str(store),
            "teacher": args.teacher,
        },
    }


def lite_run(
    args: argparse.Namespace,
    v: dict[str, Any],
    data: Path,
    out: Path,
    pids: tuple[int, ...],
    per_epoch: int,
) -> dict[str, Any]:
    """One (a)-(c) training run: images/s over the steady epochs, wall, CPU per image."""
    from student.config import TrainConfig
    from student.train import run_train

    shutil.rmtree(out, ignore_errors=True)
    extra = {"teacher": v["teacher"]} if "teacher" in v else {}
    cfg = TrainConfig(
        store=v["store"], data=str(data), model=args.student, out=str(out),
        epochs=args.epochs, batch_size=args.batch_size, img_size=args.img_size,
        warmup_epochs=0.0, workers=args.workers, seed=0, device="cpu", val_fraction=0.0,
        tensorboard=False, progress=False, **extra,
    )  # fmt: skip
    t0, c0 = time.perf_counter(), cpu_seconds(pids)
    summary = run_train(cfg)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pids) - c0
    ips, imgs, secs = steady_rate(out, args.skip_epochs, per_epoch)
    cpu_ms = 1e3 * cpu / (len(recs_of(out)) * per_epoch)
    return {"ips": ips, "images": imgs, "loop_s": secs, "wall_s": wall,
            "cpu_ms_per_image": cpu_ms, "loss": summary["loss"]}  # fmt: skip


def lite_rounds(
    args: argparse.Namespace,
    variants: dict[str, dict[str, Any]],
    data: Path,
    work: Path,
    pids: tuple[int, ...],
    per_epoch: int,
    times: dict[str, float],
) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds of (a), (b), (c), so that drifting load hits every variant alike."""
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for rep in range(0 if args.only_heavy else args.repeats):
        for key, v in variants.items():
            with timed(f"{key} round {rep}", times):
                res = lite_run(args, v, data, work / "runs" / f"{key}{rep}", pids, per_epoch)
            results[key].append(res)
            print(
                f"  {key} round {rep}: {res['ips']:.1f} img/s, "
                f"{res['cpu_ms_per_image']:.1f} CPU ms/img",
                file=sys.stderr,
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-student-"))
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    t_start = time.perf_counter()
    print(f"# bench/student.py: {machine()}; at start: {load()}", flush=True)
    data, stores = work / "photos", work / "stores"
    with timed("data", times):
        n = write_photos(data, args.copies)
    steps_per_epoch = n // args.batch_size
    with timed("store", times):
        gen = build_store(args, data, stores / "demo")
    ensemble = "f" in args.variants and not (args.no_ensemble or args.only_heavy)
    if ensemble:
        with timed("second store (--like)", times):
            build_second_store(args, data, stores, work)
    notes = []
    why = service_ready()
    service = None
    if why is None:
        with timed("service start", times):
            service = start_service(stores, work / "serve.log")
        url_a = service.store_url("demo")
    else:
        url_a = str(stores / "demo")
        notes.append(f"(a) ran against the LOCAL store path, not the service: {why}")
    variants = lite_variants(args, url_a, stores / "demo")
    if ensemble:
        second = service.store_url("demo-b") if service is not None else str(stores / "demo-b")
        variants["f"] = {
            "label": "(f) two stores via the service (ensemble)",
            "store": [url_a, second],
        }
    variants = {k: v for k, v in variants.items() if k in args.variants or k == "a"}
    heavy: dict[str, dict[str, float]] = {}
    try:
        pids = (service.pid,) if service is not None else ()
        per_epoch = steps_per_epoch * args.batch_size
        results = lite_rounds(args, variants, data, work, pids, per_epoch, times)
        if args.heavy_steps:
            with timed("heavy rows", times):
                heavy = heavy_rows(args, data, url_a, stores / "demo", work)
        if service is not None:
            served = block_requests(service)
            notes.append(f"the service answered {served} block requests during the (a)/(d) runs")
    finally:
        if service is not None:
            service.close()
    costs: dict[str, float] = {}
    if not args.no_breakdown and not args.only_heavy:
        with timed("cost breakdown", times):
            costs = cost_breakdown(data, stores / "demo", args)
    sizes = (n, steps_per_epoch, gen)
    report(args, sizes, variants, results, heavy, costs, notes, times, t_start)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    args: argparse.Namespace,
    sizes: tuple[int, int, dict[str, Any]],
    variants: dict[str, dict[str, Any]],
    results: dict[str, list[dict[str, Any]]],
    heavy: dict[str, dict[str, float]],
    costs: dict[str, float],
    notes: list[str],
    times: dict[str, float],
    t_start: float,
) -> None:
    """The tables, ratios and notes; the JSON file when asked."""
    total = time.perf_counter() - t_start
    ratios: dict[str, float] = {}
    if not args.only_heavy:
        ratios = print_lite(args, sizes, variants, results, costs)
    if heavy:
        ratios["d/e"] = print_heavy(args, heavy)
    for note in notes:
        print(f"NOTE: {note}")
    print(f"at end: {load()}")
    print(f"total wall time {total:.0f} s; " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
    if args.json:
        out = {"results": results, "ratios": ratios, "heavy": heavy,
               "costs_ms_per_image": costs, "args": vars(args)}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
