"""Store writes and reads on S3 (a moto server on loopback) vs on local disk, in one run.

Builds a synthetic teacher-like store (R view slots x N samples x top-K, logprob-f16) three
ways and times each phase:

- ``zarr-direct``: local disk, each unit written by zarr straight into the on-disk arrays (the
  writer before stores could live on S3), then records and manifest as now;
- ``local``: the writer as it is (shards encoded in memory, each file written whole through the
  store's Location, atomically);
- ``s3``: the same writer into ``s3://bench/store`` on moto's server (``moto.server``, a
  subprocess on 127.0.0.1: ``teacher_store.testing.running_s3_server``). moto is a Python
  server sharing the 2 cores with the client: the S3 figures bound what the client pays per
  request, they are no measure of a real S3.

Phases: write every unit + finalize; a resume scan (``committed_units``: list and check every
record); a full read of every slot through ``open_store``. Prints seconds and ratios.

Usage: ``.venv/bin/python bench/s3_store.py [--views 4] [--samples 65536] [--topk 10]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(REPO)]:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import zarr  # noqa: E402

from teacher_store.client import open_store  # noqa: E402
from teacher_store.storage.location import Location  # noqa: E402
from teacher_store.store import layout  # noqa: E402
from teacher_store.store.arrays import committed_units, create_store, finalize  # noqa: E402
from teacher_store.store.id_order import rank_to_stored  # noqa: E402
from teacher_store.store.layout import ShardUnit, shard_units  # noqa: E402
from teacher_store.store.schema import StoreAttrs  # noqa: E402
from teacher_store.testing import (  # noqa: E402
    random_targets,
    running_s3_server,
    synthetic_attrs,
    write_store,
)


def _attrs(r: int, n: int, k: int) -> StoreAttrs:
    return synthetic_attrs(n, r, k, shard_views=min(2, r))


def _targets(unit: ShardUnit, a: StoreAttrs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(unit.start * 7 + unit.group)
    rs, n = unit.slot_stop - unit.slot_start, unit.stop - unit.start
    return random_targets(rng, a, rs, n, invalid=0.0)


def _write_direct(path: str, unit: ShardUnit, ids: np.ndarray, values: np.ndarray,
                  valid: np.ndarray) -> None:  # fmt: skip
    """The previous writer: zarr writes the unit straight into the on-disk arrays."""
    group = zarr.open_group(path, mode="r+")
    ids, values = rank_to_stored(ids, values, StoreAttrs.from_dict(dict(group.attrs)))
    sl = (slice(unit.slot_start, unit.slot_stop), slice(unit.start, unit.stop))
    for name, data in (("ids", ids), ("values", values), ("valid", valid)):
        group[name][sl] = data  # type: ignore[index]
    loc = Location.local(path)
    files = {key: layout.file_record(loc, key).to_dict() for key in unit.keys().values()}
    layout.write_unit_record(loc, unit.name, {"unit": unit.name, "files": files, "bad": []})


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall s, this process's CPU s): on shared cores the CPU time is the steadier figure."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _run(address: str, a: StoreAttrs, direct: bool) -> dict[str, tuple[float, float]]:
    units = shard_units(a)
    data = {u.name: _targets(u, a) for u in units}

    def write() -> None:
        if not direct:
            write_store(address, a, lambda u: data[u.name])
            return
        create_store(address, a, overwrite=True)
        for u in units:
            _write_direct(address, u, *data[u.name])
        finalize(address, units)

    def read() -> None:
        with open_store(address, prefetch=0) as client:
            for slot in range(a.views):
                for start in range(0, a.num_samples, 8192):
                    client.read_block(slot, start, min(a.num_samples, start + 8192))

    out = {"write": _timed(write)}
    out["resume scan"] = _timed(lambda: committed_units(address, units))
    out["read"] = _timed(read)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--samples", type=int, default=65536)
    p.add_argument("--topk", type=int, default=10)
    args = p.parse_args()
    a = _attrs(args.views, args.samples, args.topk)
    views = args.views * args.samples
    with tempfile.TemporaryDirectory() as tmp, running_s3_server(Path(tmp), process=True) as moto:
        where = moto.endpoint.removeprefix("http://")
        print(f"R={a.views} N={a.num_samples} K={a.topk}: {len(shard_units(a))} units, "
              f"{views} views; cpus={os.cpu_count()}, moto_server on {where}")  # fmt: skip
        moto.make_bucket("bench")
        rows = {
            "zarr-direct": _run(f"{tmp}/direct", a, direct=True),
            "local": _run(f"{tmp}/local", a, direct=False),
            "s3": _run("s3://bench/store", a, direct=False),
        }
        same = all(
            Path(f"{tmp}/direct/{k}").read_bytes() == Path(f"{tmp}/local/{k}").read_bytes()
            for k in layout.load_manifest(Location.local(f"{tmp}/local"))[1].files
        )
    print("seconds, wall / client CPU (moto's own CPU not counted)")
    print(f"{'':12} {'write':>13} {'resume scan':>13} {'read':>13} {'write views/s':>14}")
    for name, t in rows.items():
        cells = " ".join(f"{t[k][0]:6.2f}/{t[k][1]:6.2f}" for k in ("write", "resume scan", "read"))
        print(f"{name:12} {cells} {views / t['write'][0]:14,.0f}")
    for phase in ("write", "resume scan", "read"):
        for i, what in ((0, "wall"), (1, "CPU")):
            new, old, s3 = (rows[k][phase][i] for k in ("local", "zarr-direct", "s3"))
            print(f"{phase} ({what}): local/zarr-direct {new / old:.2f}, s3/local {s3 / new:.2f}")
    print(f"shard files of the two local writers identical: {same}")


if __name__ == "__main__":
    main()
