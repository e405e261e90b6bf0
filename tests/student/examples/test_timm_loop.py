"""The timm example trains from a real store with timm's optimizer and per-step scheduler."""

from __future__ import annotations

import math

import pytest

from student.examples.timm_loop import parse_args, train
from student.sampler import Cursor


def test_timm_loop_trains_with_a_warmup_then_cosine_schedule(small_store, demo_data):
    argv = ["--store", str(small_store), "--data", str(demo_data), "--img-size", "64"]
    argv += ["--batch-size", "4", "--epochs", "3", "--warmup-epochs", "1", "--workers", "0"]
    args = parse_args([*argv, "--lr", "2e-3", "--val-fraction", "0.2"])
    out = train(args)
    # 3 of 17 photos held out; the pair-aware sampler pads the last batch, so every one of
    # the 14 training samples is seen each epoch: ceil(14 / 4) steps.
    lrs, losses, steps = out["lrs"], out["losses"], -(-14 // 4)
    assert len(lrs) == len(losses) == 3 * steps and all(math.isfinite(x) for x in losses)
    assert lrs[0] < lrs[steps - 1] <= 2e-3  # linear warmup over the first epoch
    assert lrs[steps] == pytest.approx(2e-3, rel=0.05) and lrs[-1] < lrs[steps]  # cosine decay
    assert out["cursor"] == Cursor(3, 0)
