"""`distill demo-mnist` at a tiny size: the table it prints is the run's own figures.

Every printed figure is recomputed here from the files the run left behind (the teacher
checkpoint, the students' last.pth and metrics.jsonl, the store), not compared with constants.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TINY = ["--digits", "500", "--teacher-epochs", "2", "--epochs", "2", "--views", "2"]
TINY += ["--batch-size", "16"]


def _distill(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    cmd = [sys.executable, "-m", "teacher_store.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _table(stdout: str) -> dict[str, tuple[str, float | None, float]]:
    """{learned-from text: (model, top-1 % or None, wall s)} from the printed table."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("model", "") or set(cells[0]) == {"-"}:
            continue
        top1 = float(cells[2].removesuffix(" %")) if cells[2] else None
        rows[cells[1]] = (cells[0], top1, float(cells[3].removesuffix(" s")))
    return rows


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo-mnist") / "run"
    done = _distill("demo-mnist", "--out", str(out), *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_the_table_is_the_last_screen_and_holds_the_run_s_figures(demo: tuple[Path, str]) -> None:
    from models import create_teacher
    from student.evaluate import run_eval
    from student.teacher_fit import folder_top1

    out, stdout = demo
    test, store = out / "digits" / "test", out / "stores" / "digits"
    rows = _table(stdout)
    assert len(rows) == 5, stdout
    assert stdout.rstrip().splitlines()[-1].startswith("its targets: ")  # the table ends it

    model, info = create_teacher("resnet18", out / "teacher.pth")  # the file generate loaded
    t_model, t_top1, t_wall = rows["400 labelled digits, 2 epochs"]
    assert t_model == "teacher resnet18"
    assert t_top1 == round(folder_top1(model, str(test), 32, info.mean, info.std), 1)
    ckpt = torch.load(out / "teacher.pth", map_location="cpu", weights_only=True)
    assert t_wall == round(ckpt["train_time_s"])

    runs = {
        "the store through the service: no labels, no teacher": out / "runs" / "from-store",
        "the teacher online, every batch (baseline)": out / "runs" / "online",
    }
    for source, run in runs.items():
        s_model, s_top1, s_wall = rows[source]
        assert s_model == "student resnet10t"
        assert s_top1 == round(run_eval(str(run / "last.pth"), str(test), str(store))["top1"], 1)
        epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e["epoch"] for e in epochs] == [0, 1]
        assert s_wall >= round(sum(e["train_time_s"] for e in epochs)) - 1  # training inside it
    from_store = json.loads((out / "runs" / "from-store" / "config.json").read_text())
    online = json.loads((out / "runs" / "online" / "config.json").read_text())
    assert from_store["store"].startswith("http://127.0.0.1:") and from_store["teacher"] is None
    assert from_store["hard_label_weight"] == 0.0  # no labels: KD from the store alone
    assert online["teacher"] == "resnet18" and online["teacher_checkpoint"].endswith("teacher.pth")

    # Under the table: "... from the store: S %, ... its teacher (T %)", "... online (O %)"
    lines = stdout.rstrip().splitlines()
    after = lines[max(i for i, x in enumerate(lines) if x.startswith("| ")) + 1 :]
    store_top1, online_top1 = (rows[s][1] for s in runs)
    found = [float(x) for x in re.findall(r"(\d+\.\d) %", " ".join(after))]
    assert found == [store_top1, t_top1, online_top1]
    assert f"training: {rows[next(iter(runs))][2]:.0f} s from the store" in " ".join(after)


def test_the_store_row_and_the_service_traffic_are_measured(demo: tuple[Path, str]) -> None:
    from teacher_store.info import store_info

    out, stdout = demo
    info = store_info(str(out / "stores" / "digits"))
    assert info["complete"] and info["views_written"] == 400 * 2
    source = f"the teacher's top-10 on 800 views ({info['bytes_per_view']:.1f} B/view)"
    assert _table(stdout)[source][0] == "store"
    result = json.loads((out / "result.json").read_text())
    assert result["from_store"]["requests"] >= 1 and result["from_store"]["bytes"] > 0
    want = f"its targets: {result['from_store']['requests']} requests, "
    assert want + f"{result['from_store']['bytes'] / 1024:.0f} KiB from the service" in stdout
    # Chance: the untrained student, rebuilt from its seed and scored here.
    from models import create_student
    from student.teacher_fit import folder_top1

    torch.manual_seed(0)
    model = create_student("resnet10t", 10, img_size=32)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    chance = folder_top1(model, str(out / "digits" / "test"), 32, mean, std)
    assert _table(stdout)["nothing (as initialised: chance)"][1] == round(chance, 1)


def test_the_printed_commands_are_the_runs_it_made(demo: tuple[Path, str]) -> None:
    """Each "= distill ..." line, parsed by distill's own parser, gives the config the run used."""
    from student.config import load_train_config
    from teacher_store.cli import build_parser
    from teacher_store.generate import RUNTIME_FIELDS, GenerateConfig
    from teacher_store.store.arrays import LocalStore
    from teacher_store.views.recipe import get_recipe

    out, stdout = demo
    commands = [x.strip().removeprefix("= ") for x in stdout.splitlines() if "= distill " in x]
    assert [c.split()[1] for c in commands] == ["generate", "train", "train"]
    generate, *trains = (build_parser().parse_args(shlex.split(c)[1:]) for c in commands)
    fields = {k: v for k, v in vars(generate).items() if k in GenerateConfig.model_fields}
    fields = {k: v for k, v in fields.items() if v is not None and k != "recipe"}
    made = GenerateConfig(recipe=get_recipe(generate.recipe), **fields).to_dict()
    recorded = LocalStore(out / "stores" / "digits").attrs.config
    # None (threads, view_order) is resolved when the job starts: the store records the value.
    keys = [k for k, v in made.items() if k not in RUNTIME_FIELDS and v is not None]
    assert len(keys) >= 15 and {k: made[k] for k in keys} == {k: recorded[k] for k in keys}
    for args, run in zip(trains, ("from-store", "online"), strict=True):
        skip = ("func", "command", "config")
        cfg = load_train_config(None, {k: v for k, v in vars(args).items() if k not in skip})
        used = json.loads((out / "runs" / run / "config.json").read_text())
        assert cfg.to_dict() == {**used, "progress": False}, run


def test_a_folder_the_demo_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    done = _distill("demo-mnist", "--out", str(tmp_path), "--digits", "20")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not made by distill demo-mnist" in done.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"
    done = _distill("demo-mnist", "--out", str(tmp_path / "new"), "--img-size", "16")
    assert done.returncode == 2 and "--img-size must be >= 32" in done.stderr
    assert not (tmp_path / "new").exists()  # refused before any work


def test_the_configs_round_trip_and_check_their_sizes(tmp_path: Path) -> None:
    from student.demo import MnistDemoConfig
    from student.teacher_fit import TeacherFitConfig, fit_teacher

    cfg = MnistDemoConfig(out="x", digits=300, epochs=2)
    assert MnistDemoConfig.from_dict(cfg.to_dict()) == cfg
    fit = TeacherFitConfig(data=str(tmp_path), epochs=3)
    assert TeacherFitConfig.from_dict(fit.to_dict()) == fit
    with pytest.raises(ValueError, match="--topk must be <= 10"):
        MnistDemoConfig(out="x", topk=11)
    from teacher_store.images.demo_data import write_mnist

    write_mnist(tmp_path / "few", 20)
    with pytest.raises(ValueError, match="holds 20 images, fewer than one batch of 128"):
        fit_teacher(TeacherFitConfig(data=str(tmp_path / "few")))
