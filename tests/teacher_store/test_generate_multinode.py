"""`distill generate` as a 2-node job on one machine (two torchrun launchers, c10d rendezvous):
the store equals a one-process run's, byte for byte, and launchers that disagree are refused."""

from __future__ import annotations

import numpy as np
import pytest

from teacher_store.client import open_store
from teacher_store.generate import GenerateConfig, run_generate
from tests.multinode import child_env, run_nodes, store_digest
from tests.store_fixtures import SMALL_GENERATE

pytestmark = pytest.mark.slow


def _argv(data: object, out: str, **extra: object) -> list[str]:
    opts = {k: v for k, v in SMALL_GENERATE.items() if k != "progress"}
    opts.update(extra)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    return ["generate", "--data", str(data), "--out", out, *flags, "--quiet"]


def _rank0(done: list) -> int:
    """Which launcher got global rank 0 (the one that prints the summary)."""
    printed = [i for i, d in enumerate(done) if "complete" in d.stdout]
    assert len(printed) == 1, [d.stdout for d in done]
    return printed[0]


def test_two_nodes_write_the_one_process_store(demo_data, store_address):
    """The nodes start with different thread counts (as nodes with other core counts would):
    every rank computes with rank 0's count, so the bytes are those of one process with it."""
    threads = (1, 2)
    two = f"{store_address}/two-nodes"
    done = run_nodes([_argv(demo_data, two)] * 2, [child_env(t) for t in threads])
    assert all(d.returncode == 0 for d in done), [d.stderr[-2000:] for d in done]
    first = _rank0(done)
    assert "x2" in done[first].stdout and "6 shard units written" not in done[first].stdout

    ref = f"{store_address}/one-process"
    cfg = GenerateConfig(data=str(demo_data), out=ref, threads=threads[first], **SMALL_GENERATE)
    assert run_generate(cfg)["complete"]
    want, got = store_digest(ref), store_digest(two)
    assert "_distill/manifest.json" in want and got == want
    a, b = open_store(ref), open_store(two)
    assert b.attrs.config["threads"] == threads[first]
    for slot in range(a.attrs.views):
        x, y = a.read_block(slot, 0, a.attrs.num_samples), b.read_block(slot, 0, 17)
        assert np.array_equal(x.ids, y.ids) and np.array_equal(x.values, y.values)
        assert np.array_equal(x.valid, y.valid) and x.valid.all()


def test_a_launcher_with_other_options_is_refused(demo_data, store_address):
    """One launcher asks for --threads (the count the other one has by default): every rank
    still takes part in sharing rank 0's count, and only --topk is reported."""
    out = f"{store_address}/mixed"
    argvs = [_argv(demo_data, out), _argv(demo_data, out, topk=3, threads=1)]
    done = run_nodes(argvs, [child_env(threads=1), child_env(threads=2)])
    assert all(d.returncode != 0 for d in done)
    errs = "\n".join(d.stderr for d in done)
    # The launcher with other options names what differs on one line (torchrun and the peer it
    # left add their own reports).
    lines = [x for x in errs.splitlines() if "differ from rank 0's store" in x]
    assert len(lines) == 1, errs[-3000:]
    assert lines[0].startswith("distill generate: error: rank 1: this launcher's generate")
    assert "config.topk" in lines[0] and out in lines[0] and "config.threads" not in lines[0]
    assert "manifest.json" not in store_digest(out)  # no store claims to be complete
