"""The images of a generation job: a job that read none of them is never a success (real
Lite0 teacher, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from teacher_store.cli import main
from teacher_store.generate import GenerateConfig, run_generate
from teacher_store.generate_data import NoImageRead
from tests.store_fixtures import SMALL_GENERATE


def test_a_job_that_read_no_image_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data = tmp_path / "bad"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(3):
            (data / cls / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * (i + 1))
    cfg = GenerateConfig(data=str(data), out=str(tmp_path / "store"), **SMALL_GENERATE)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(NoImageRead, match="all 6 samples are unreadable") as e:
            run_generate(cfg)
    finally:
        torch.set_num_threads(before)
    assert len(str(e.value).splitlines()) == 1
    # The CLI: exit 1 (the job failed), one line, whether the units were written now or before.
    args = ["generate", "--data", str(data), "--out", str(tmp_path / "store"), "--views", "2"]
    args += ["--topk", "5", "--img-size", "64", "--batch-size", "4", "--shard-samples", "8"]
    args += ["--chunk-samples", "4", "--shard-views", "1", "--workers", "0", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill generate: no image of --data"), err
