"""DDP training as a 2-node x 1 job on one machine (two torchrun launchers, c10d rendezvous):
the same weights as 1 node x 2 processes, bit for bit, also across a resume."""

from __future__ import annotations

import pytest
import torch

from tests.multinode import child_env, run_nodes, run_one_node
from tests.store_fixtures import generate_small

pytestmark = pytest.mark.slow


def _argv(store: str, data: object, out: object, *extra: str) -> list[str]:
    return [
        "train", "--store", store, "--data", str(data), "--model", "tf_efficientnetv2_b0",
        "--out", str(out), "--epochs", "2", "--batch-size", "2", "--img-size", "64",
        "--workers", "0", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


def _state(out: object) -> dict:
    return torch.load(f"{out}/last.pth", map_location="cpu", weights_only=False)


def _ok(done: list) -> None:
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    # Rank 0 alone reports: the other node's --out need not hold the checkpoint it names.
    assert sum("checkpoint:" in d.stdout for d in done) == 1, [d.stdout for d in done]


def test_two_nodes_train_the_weights_of_one_node_with_two_processes(
    demo_data, store_address, tmp_path
):
    """Both layouts run 2 ranks of 1 thread each (torchrun gives one thread per process only
    when it starts several per node: the launchers here are told so, as a runbook says)."""
    store = f"{store_address}/store"
    generate_small(demo_data, store)  # type: ignore[arg-type]
    env = child_env(threads=1)
    one = run_one_node(_argv(store, demo_data, tmp_path / "one"), 2, env)
    _ok([one])

    # 2 nodes: stopped after 2 steps (mid-epoch), then resumed by a new pair of launchers. The
    # run folder is shared but mounted at another path on the second node (a link here).
    two = tmp_path / "two"
    two.mkdir()
    (tmp_path / "mount").symlink_to(two, target_is_directory=True)
    outs = (two, tmp_path / "mount")
    first = [_argv(store, demo_data, out, "--max-steps", "2") for out in outs]
    _ok(run_nodes(first, [env, env]))
    assert _state(two)["step"] == 2
    _ok(run_nodes([_argv(store, demo_data, out, "--resume") for out in outs], [env, env]))

    a, b = _state(tmp_path / "one"), _state(two)
    assert a["step"] == b["step"] == 8 and a["cursor"] == b["cursor"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys() and opt_a
    for sa, sb in zip(opt_a.values(), opt_b.values(), strict=True):
        assert all(torch.equal(sa[n], sb[n]) for n in sa if torch.is_tensor(sa[n]))


def test_resume_without_a_checkpoint_stops_every_node_with_one_line(
    small_store, demo_data, tmp_path
):
    """Rank 0 reads last.pth for every rank: when it has none, every node fails with rank 0's
    one-line reason (no node waits forever, none trains from scratch)."""
    argv = _argv(str(small_store), demo_data, tmp_path / "empty", "--resume")
    done = run_nodes([argv] * 2, [child_env(), child_env()])
    for d in done:
        assert d.returncode != 0
        lines = [x for x in d.stderr.splitlines() if x.startswith("distill train: error:")]
        assert len(lines) == 1, d.stderr[-2000:]
        assert "last.pth does not exist" in lines[0]
        assert "]: Traceback" not in d.stderr  # no worker traceback ("[rank1]: Traceback")
