"""Command options: bounded sizes, one line per bad option (exit 2), nothing created on bad
input (`distill generate`, `train`, `eval`, `scale`; `show` is in test_show.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from teacher_store.cli import main
from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.options import MAX_IMG_SIZE, error_lines
from tests.store_fixtures import SMALL_GENERATE

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py

# One bad option per entry: (flag, value, the valid range the message must give).
_BAD_GENERATE = [
    ("--views", "0", "an integer in [1, 16384]"),
    ("--views", "100000", "an integer in [1, 16384]"),
    ("--topk", "0", "an integer in [1, 4096]"),
    ("--topk", "1000000", "an integer in [1, 4096]"),
    ("--seed", "-1", "an integer in [0, 2**64 - 1]"),
    ("--seed", "18446744073709551616", "an integer in [0, 2**64 - 1]"),
    ("--batch-size", "0", "an integer in [1, 8192]"),
    ("--batch-size", "1000000", "an integer in [1, 8192]"),
    ("--img-size", "7", "an integer in [8, 4096]"),
    ("--img-size", "100000", "an integer in [8, 4096]"),
    ("--threads", "0", "an integer in [1, 1024]"),
    ("--threads", "100000", "an integer in [1, 1024]"),
    ("--workers", "-1", "an integer in [0, 256]"),
    ("--workers", "100000", "an integer in [0, 256]"),
    ("--chunk-samples", "0", "an integer in [1, 1048576]"),
    ("--shard-samples", "100000000", "an integer in [1, 1048576]"),
    ("--chunk-views", "0", "an integer in [1, 16384]"),
    ("--shard-views", "100000", "an integer in [1, 16384]"),
]


def _generate(data: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--data", str(data), "--out", str(out), "--quiet", *extra]


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pydantic" not in err and "http" not in err, err
    return err.strip().splitlines()


@pytest.mark.parametrize("flag, value, valid", _BAD_GENERATE)
def test_generate_bad_option_is_one_line_and_creates_nothing(
    flag, value, valid, demo_data, tmp_path, capsys
):
    out = tmp_path / "store"
    assert main(_generate(demo_data, out, flag, value)) == 2
    assert _err_lines(capsys) == [f"distill generate: error: {flag} {value}: must be {valid}"]
    assert not out.exists()


def test_generate_prints_one_line_per_bad_option(demo_data, tmp_path, capsys):
    out = tmp_path / "store"
    bad = ["--views", "0", "--topk", "0", "--seed", "-1", "--batch-size", "0", "--threads", "0"]
    assert main(_generate(demo_data, out, *bad, "--img-size", "7")) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 6, lines
    flags = [re.match(r"distill generate: error: (--[a-z-]+) ", x).group(1) for x in lines]
    assert sorted(flags) == sorted([*bad[::2], "--img-size"])
    assert not out.exists()


def test_generate_help_gives_the_bounds(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"8..{MAX_IMG_SIZE}" in text and "1..8192" in text and "0..2**64-1" in text


def test_huge_seed_then_the_corrected_run_needs_no_overwrite(demo_data, tmp_path, capsys):
    """The issue's case: --seed 2**64 left a half-created store that the corrected re-run
    refused as "a different store"."""
    out = tmp_path / "store"
    small = ["--views", "2", "--topk", "5", "--img-size", "32", "--workers", "0"]
    assert main(_generate(demo_data, out, *small, "--seed", str(2**64))) == 2
    assert len(_err_lines(capsys)) == 1 and not out.exists()
    assert main(_generate(demo_data, out, *small, "--seed", str(2**64 - 1))) == 0
    assert "complete" in capsys.readouterr().out


@pytest.fixture(scope="module")
def fixed_size_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights of timm's tiny ``test_vit`` (patch 16: sizes must be multiples of 16)."""
    import timm
    import torch

    path = tmp_path_factory.mktemp("vit") / "test_vit.pth"
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), path)
    return path


def test_size_the_teacher_cannot_take_is_refused_before_the_store_exists(
    fixed_size_teacher, demo_data, tmp_path, capsys
):
    out = tmp_path / "store"
    teacher = ["--teacher", "test_vit", "--checkpoint", str(fixed_size_teacher)]
    small = ["--views", "1", "--topk", "5", "--workers", "0", *teacher]
    assert main(_generate(demo_data, out, *small, "--img-size", "40")) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "the teacher cannot run on 40 px views" in lines[0], lines
    assert "divisible by patch size" in lines[0] and not out.exists()
    assert main(_generate(demo_data, out, *small, "--img-size", "32")) == 0  # no --overwrite


def test_a_run_failing_before_its_first_unit_leaves_no_store(demo_data, tmp_path):
    """Whatever fails after the store is created and before a unit is committed (here: the
    first image decode) takes the new store away again: a re-run with other options then
    needs no --overwrite."""
    out = tmp_path / "store"
    cfg = GenerateConfig(data=str(demo_data), out=str(out), **SMALL_GENERATE)  # type: ignore[arg-type]

    class Boom(Exception):
        pass

    def fail(sample: int) -> None:
        raise Boom

    with pytest.raises(Boom):
        run_generate(cfg, decode_hook=fail)
    assert not out.exists()
    out.mkdir()  # an existing empty folder stays, emptied
    with pytest.raises(Boom):
        run_generate(cfg, decode_hook=fail)
    assert out.is_dir() and not any(out.iterdir())
    other = cfg.model_copy(update={"seed": 7, "views": 1})
    assert run_generate(other)["complete"]


def test_a_run_failing_after_a_unit_is_committed_keeps_the_store(demo_data, tmp_path):
    out = tmp_path / "store"
    cfg = GenerateConfig(data=str(demo_data), out=str(out), **SMALL_GENERATE)  # type: ignore[arg-type]

    def fail_once_committed(sample: int) -> None:
        if list((out / "_distill" / "shards").glob("*.json")):
            raise RuntimeError("killed after a commit")

    with pytest.raises(RuntimeError, match="killed after a commit"):
        run_generate(cfg, decode_hook=fail_once_committed)
    kept = sorted(p.name for p in (out / "_distill" / "shards").glob("*.json"))
    assert kept and (out / "zarr.json").is_file()
    summary = run_generate(cfg)
    assert summary["complete"] and summary["units_skipped"] == len(kept)


def test_generate_unit_too_large_for_memory_is_refused(tmp_path, capsys):
    """Each option within its bounds, but together a shard unit of 16384 view slots x 256
    samples x top-1000 (12 GiB of targets in memory): refused (by the store schema's bounds)
    before the store exists."""
    from PIL import Image

    data = tmp_path / "data"
    for i in range(200):
        (data / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(data / f"c{i % 2}" / f"{i}.png")
    out = tmp_path / "store"
    big = ["--views", "16384", "--chunk-views", "16384", "--shard-views", "16384"]
    assert main(_generate(data, out, *big, "--topk", "1000")) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "entries exceed the bounds" in lines[0], lines
    assert not out.exists()


# --- train / eval / scale ----------------------------------------------------------------


def _train(tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "--store", str(tmp_path / "no-store"), "--data", str(tmp_path),
            "--model", "tf_efficientnetv2_b0", "--out", str(tmp_path / "run"), *extra]  # fmt: skip


@pytest.mark.parametrize(
    "flag, value, valid",
    [
        ("--img-size", "100000", "an integer in [32, 4096]"),
        ("--img-size", "0", "an integer in [32, 4096]"),
        ("--seed", str(2**70), "an integer in [0, 2**64 - 1]"),
        ("--seed", "-3", "an integer in [0, 2**64 - 1]"),
        ("--batch-size", "0", "an integer in [1, 8192]"),
        ("--batch-size", "100000", "an integer in [1, 8192]"),
        ("--workers", "100000", "an integer in [0, 256]"),
        ("--teacher-img-size", "100000", "an integer in [32, 4096]"),
        ("--val-fraction", "nan", "a number in [0, 1)"),
        ("--val-fraction", "-0.5", "a number in [0, 1)"),
    ],
)
def test_train_bad_option_is_one_line(flag, value, valid, tmp_path, capsys):
    assert main(_train(tmp_path, flag, value)) == 2
    assert _err_lines(capsys) == [f"distill train: error: {flag} {value}: must be {valid}"]
    assert not (tmp_path / "run").exists()


def test_train_names_a_bad_config_file_key_and_each_bad_flag(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"batch_size": 0, "img_size": 64, "epochs": 0}))
    assert main([*_train(tmp_path, "--seed", "-1", "--img-size", "9"), "--config", str(cfg)]) == 2
    lines = _err_lines(capsys)
    assert sorted(lines) == sorted(
        [
            f"distill train: error: batch_size 0 in {cfg}: must be an integer in [1, 8192]",
            f"distill train: error: epochs 0 in {cfg}: must be an integer >= 1",
            "distill train: error: --img-size 9: must be an integer in [32, 4096]",
            "distill train: error: --seed -1: must be an integer in [0, 2**64 - 1]",
        ]
    ), lines


def test_eval_batch_size_is_bounded(tmp_path, capsys):
    args = ["eval", "--checkpoint", str(tmp_path / "x.pth"), "--data", str(tmp_path)]
    for bad in ("0", "100000"):
        assert main([*args, "--batch-size", bad]) == 2
        assert _err_lines(capsys) == [
            f"distill eval: error: --batch-size {bad}: must be an integer in [1, 8192]"
        ]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--s", "1000"], r"--s must be at most 64"),
        (["--resolution", "100000"], r"--resolution must be an integer in \[1, 4096\]"),
        (["--resolution", "4096", "--s", "64"], r"scales --resolution 4096 to \d+ px, above 4096"),
        (["--batch", "1000000"], r"--batch must be an integer in \[1, 8192\]"),
        (["--num-classes", "100000000"], r"--num-classes must be an integer in \[1, 1000000\]"),
        (["--repeats", "1000000"], r"--repeats must be an integer in \[1, 1000\]"),
    ],
)
def test_scale_sizes_are_bounded(args, match, capsys):
    from models import cli as models_cli
    from teacher_store import options

    assert models_cli.MAX_RESOLUTION == options.MAX_IMG_SIZE  # one bound, two layers
    assert models_cli.MAX_BATCH == options.MAX_BATCH
    assert main(["scale", "--family", "efficientnetv2", *args]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and re.search(match, lines[0]), lines


def test_a_raw_validation_error_is_one_line_per_problem():
    """A config model validated without validate_options still prints no pydantic dump."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        GenerateConfig(data="d", out="o", views=0, topk=-1)  # type: ignore[call-arg]
    lines = error_lines(e.value)
    assert lines == [
        "GenerateConfig: views 0: must be greater than or equal to 1",
        "GenerateConfig: topk -1: must be greater than or equal to 1",
    ]
