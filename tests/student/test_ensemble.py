"""The ensemble of sparse teachers (student.ensemble.ensemble_targets): its sparse form is
exactly the mixture of the teachers' dense distributions (each teacher's rest spread evenly
over its other classes), for any weights, overlaps, zero-probability entries and K vs C."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from student.ensemble import ensemble_targets, ensemble_weights
from student.loss import sparse_kd_loss, sparse_teacher_logprobs


def _teacher(rng: np.random.Generator, b: int, k: int, c: int, zeros: int = 0, share=None):
    """(ids [B, K], log-probs [B, K]) of a sparse teacher: distinct ids, descending values,
    the last ``zeros`` entries rounded to p = 0 (-inf); ``share``: ids [B, S] it ranks first
    (classes another teacher has too)."""
    rows = []
    for r in range(b):
        first = [] if share is None else list(share[r])
        others = rng.permutation(np.setdiff1d(np.arange(c), first))[: k - len(first)]
        rows.append(np.array([*first, *others]))
    ids = np.stack(rows)
    logits = np.sort(rng.normal(0, 2, (b, k)), -1)[:, ::-1]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True) + rng.uniform(0.1, 5, (b, 1)))
    if zeros:
        logp[:, -zeros:] = -np.inf
    return ids, logp.astype(np.float32)


def _dense_mixture(parts, weights, c: int) -> torch.Tensor:
    """[B, C] probabilities: sum_t w_t * (teacher t's dense distribution by the loss's rule)."""
    dense = [
        sparse_teacher_logprobs(torch.from_numpy(i), torch.from_numpy(lp), c).double().exp()
        for i, lp in parts
    ]
    return sum(float(w) * d for w, d in zip(weights, dense, strict=True))


@pytest.mark.parametrize(
    ("k", "c", "zeros", "w"),
    [(5, 50, 0, None), (10, 1000, 2, None), (5, 50, 1, [0.7, 0.3]), (10, 12, 0, [1.0, 3.0])],
)
def test_sparse_ensemble_is_the_dense_mixture(k, c, zeros, w) -> None:
    rng = np.random.default_rng(k + c)
    a = _teacher(rng, 16, k, c, zeros)
    parts = [a, _teacher(rng, 16, k, c, share=a[0][:, [1, 0]])]  # overlapping supports
    weights = ensemble_weights(w, 2)
    ids, logp = ensemble_targets(parts, weights, c)
    assert ids.shape == logp.shape == (16, min(2 * k, c))
    got = sparse_teacher_logprobs(torch.from_numpy(ids), torch.from_numpy(logp), c).double().exp()
    want = _dense_mixture(parts, weights, c)
    torch.testing.assert_close(got, want, atol=2e-7, rtol=1e-5)
    kept = np.isfinite(logp)
    assert (np.diff(np.where(kept, logp, -1e30), axis=1)[kept[:, 1:]] <= 0).all()  # rank order
    for row_ids in ids:  # padding never collides with a class: every id distinct in its row
        assert len(set(row_ids.tolist())) == len(row_ids)


def test_weights_select_and_the_loss_is_kl_to_the_mixture() -> None:
    rng = np.random.default_rng(0)
    c = 40
    parts = [_teacher(rng, 8, 6, c, 1), _teacher(rng, 8, 6, c)]
    only_b = ensemble_targets(parts, ensemble_weights([0.0, 2.0], 2), c)
    dense_b = sparse_teacher_logprobs(*(torch.from_numpy(x) for x in parts[1]), c).exp()
    got = sparse_teacher_logprobs(*(torch.from_numpy(x) for x in only_b), c).exp()
    torch.testing.assert_close(got, dense_b, atol=1e-6, rtol=1e-5)

    weights = ensemble_weights(None, 2)
    ids, logp = (torch.from_numpy(x) for x in ensemble_targets(parts, weights, c))
    logits = torch.randn(8, c)
    mix = _dense_mixture(parts, weights, c)
    log_q = torch.log_softmax(logits.double(), -1)
    want = (mix * (mix.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(
        sparse_kd_loss(logits, ids, logp).double(), want, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize(
    ("w", "match"),
    [([1.0], "1 weights for 2 stores"), ([-1.0, 2.0], ">= 0"), ([0.0, 0.0], "not all 0")],
)
def test_bad_weights_are_refused(w, match) -> None:
    with pytest.raises(ValueError, match=match):
        ensemble_weights(w, 2)


# ---------------------------------------------------------------------------------------------
# Real stores: Lite0 (A) and a random-weight resnet10t on A's views (B, `generate --like A`).


@pytest.fixture(scope="module")
def two_teachers(tmp_path_factory, demo_data) -> dict[str, Path]:
    import timm

    from teacher_store.generate import GenerateConfig, run_generate
    from tests.store_fixtures import SMALL_GENERATE, generate_small

    root = tmp_path_factory.mktemp("ensemble")
    torch.manual_seed(0)
    ckpt = root / "resnet10t-random.pth"
    torch.save(timm.create_model("resnet10t", num_classes=1000).state_dict(), ckpt)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = generate_small(demo_data, root / "a")
        kw = {k: v for k, v in SMALL_GENERATE.items() if k not in ("views", "img_size")}
        cfg = GenerateConfig(
            data=str(demo_data), out=str(root / "b"), like=str(a), teacher="resnet10t",
            checkpoint=str(ckpt), value_encoding="logprob-f16", **kw,
        )  # fmt: skip
        run_generate(cfg)
        other = generate_small(demo_data, root / "other", seed=1)  # other views
    finally:
        torch.set_num_threads(before)
    return {"a": a, "b": root / "b", "other": other}


def test_loader_with_two_stores_gives_the_mixture(two_teachers, demo_data) -> None:
    from student.loader import StoreLoader

    a, b = str(two_teachers["a"]), str(two_teachers["b"])
    kw = {"img_size": 32, "batch_size": 4, "workers": 0, "val_fraction": 0.2}
    with (
        StoreLoader([a, b], demo_data, teacher_weights=[3.0, 1.0], **kw) as both,
        StoreLoader(a, demo_data, **kw) as one_a,
        StoreLoader(b, demo_data, **kw) as one_b,
    ):
        seen = 0
        for batch, ba, bb in zip(both, one_a, one_b, strict=True):
            seen += 1
            assert torch.equal(batch.samples, ba.samples) and torch.equal(batch.images, ba.images)
            parts = [(x.topk_ids.numpy(), x.topk_logprobs.numpy()) for x in (ba, bb)]
            ids, logp = ensemble_targets(parts, np.array([0.75, 0.25]), 1000)
            assert torch.equal(batch.topk_ids, torch.from_numpy(ids))
            assert torch.equal(batch.topk_logprobs, torch.from_numpy(logp))
            assert torch.equal(batch.valid, ba.valid & bb.valid)
            assert batch.topk_ids.shape[1] == 10  # K=5 + K=5: the union, padded
        assert seen == both.steps_per_epoch >= 3


def test_train_cli_with_two_stores_and_weights(two_teachers, demo_data, tmp_path, capsys) -> None:
    from teacher_store.cli import main

    a, b, other = (str(two_teachers[k]) for k in ("a", "b", "other"))
    base = [
        "train", "--data", str(demo_data), "--model", "tf_efficientnetv2_b0", "--epochs", "1",
        "--max-steps", "2", "--batch-size", "4", "--img-size", "32", "--workers", "0",
        "--val-fraction", "0.2", "--quiet",
    ]  # fmt: skip
    out = tmp_path / "run"
    args = [*base, "--store", a, "--store", b, "--teacher-weights", "0.7", "0.3", "--out", str(out)]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["store"] == [a, b] and saved["teacher_weights"] == [0.7, 0.3]
    assert "agreement with the teacher's top-1" in capsys.readouterr().out
    assert main([*base, "--store", a, "--store", other, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds other views" in err and "store_seed" in err
    assert (
        main([*base, "--store", a, "--store", b, "--teacher-weights", "1", "--out", str(out)]) == 2
    )
    assert "1 teacher weights for 2 stores" in capsys.readouterr().err


def test_a_run_resumes_on_its_store_grown_since_and_not_on_another(
    two_teachers, demo_data, tmp_path
) -> None:
    """The checkpoint records the store's identity; the store grown since (its slots kept,
    its manifest naming the identity it grew from) is the same store; a regenerated one is not."""
    import shutil

    from student.train import run_train
    from teacher_store.errors import StoreMismatch
    from teacher_store.generate import GenerateConfig, run_generate
    from tests.store_fixtures import SMALL_GENERATE, student_config

    store = tmp_path / "a"
    shutil.copytree(two_teachers["a"], store)
    run = tmp_path / "run"
    kw = {"img_size": 32, "epochs": 2, "val_fraction": 0.2}
    run_train(student_config(store, demo_data, run, max_steps=1, **kw))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grown = {**SMALL_GENERATE, "views": 3}
        s = run_generate(GenerateConfig(data=str(demo_data), out=str(store), **grown))
        assert s["grown_from_views"] == 2
    finally:
        torch.set_num_threads(before)
    summary = run_train(student_config(store, demo_data, run, resume=True, **kw))
    assert summary["epoch"] == 1 and summary["step"] > 1
    other = tmp_path / "other"
    shutil.copytree(two_teachers["other"], other)  # other views: another store
    with pytest.raises(StoreMismatch, match="another store"):
        run_train(student_config(other, demo_data, run, resume=True, **kw))
