"""Reliability: the disk fills up while `distill generate` writes a store (issue 16).

The store is written onto a size-limited filesystem: a tmpfs mounted with ``size=`` when this
process may mount (root with CAP_SYS_ADMIN), else the child runs under ``RLIMIT_FSIZE`` (a
per-file limit, with SIGXFSZ ignored so a write past it fails with EFBIG). The limit is sized
from an uninterrupted reference run so that the job fails in a chosen phase:

- ``create``: the store's metadata (its root ``zarr.json``) cannot be written.
- ``units``: mid-way through the shard units (some committed, one half-written); tmpfs only: a
  per-file limit cannot stop a job there, since every shard is far smaller than the root
  ``zarr.json``, which is written first.
- ``finalize``: every unit committed, the final root ``zarr.json`` (consolidated) cannot be
  written. (The manifest, written after it, is smaller than the first root ``zarr.json`` that
  the final one replaces, so no limit makes the manifest alone fail.)

Each time: exit 1, one stderr line naming the store and "free space", no traceback; every
committed unit's files match its record and the reference's bytes. With space back (remount the
tmpfs bigger, or drop the limit) the same command resumes: exit 0, `distill verify` accepts the
store and it is byte-identical to the reference. ``DISTILL_TEST_DISK_LIMIT=fsize`` forces the
fallback on a machine that could mount.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from teacher_store.cli import main
from teacher_store.store.arrays import (
    BOOK,
    LocalStore,
    committed_units,
    create_store,
    shard_units,
)
from teacher_store.store.layout import Location, listed_units, unit_record_key
from tests.reliability import record
from tests.store_fixtures import file_digests, generate_small

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
PAGE = 4096  # tmpfs charges whole pages per file; directories cost none
CLI = ["--views", "2", "--topk", "5", "--img-size", "64", "--batch-size", "4"]
CLI += ["--shard-samples", "8", "--chunk-samples", "4", "--shard-views", "1"]
CLI += ["--workers", "0", "--quiet"]  # = SMALL_GENERATE, the reference's config


def _env() -> dict[str, str]:
    """One thread (as the reference), offline, and this checkout's packages first: a git
    worktree may share a venv whose editable install points at another checkout."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _mount(where: Path, size: int) -> bool:
    """Mount a tmpfs of ``size`` bytes at ``where``; False where this process may not."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _file_size_limit(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so writes past the limit get EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@dataclass(frozen=True)
class Sizes:
    """What the reference store's files cost, in tmpfs pages where not said otherwise."""

    created: int  # the files a new store starts with (arrays' and root zarr.json)
    first_root_bytes: int  # the root zarr.json written at creation
    root: int  # the final root zarr.json (consolidated metadata: bigger)
    root_bytes: int
    units: list[int]  # per unit, in commit order: its shard files and its record


def _pages(path: Path) -> int:
    return math.ceil(path.stat().st_size / PAGE)


def _sizes(ref: Path, scratch: Path) -> Sizes:
    """Sizes of ``ref``'s files; a fresh store of its attrs in ``scratch`` gives the sizes a
    store starts with (no teacher needed)."""
    attrs = LocalStore(ref).attrs
    create_store(scratch, attrs)
    created = sum(_pages(p) for p in scratch.rglob("*") if p.is_file())
    per_unit = [
        sum(_pages(ref / k) for k in u.keys().values()) + _pages(ref / unit_record_key(u.name))
        for u in shard_units(attrs)
    ]
    first, root = (scratch / "zarr.json").stat().st_size, ref / "zarr.json"
    return Sizes(created, first, _pages(root), root.stat().st_size, per_unit)


def _tmpfs_limit(s: Sizes, phase: str) -> int:
    """Bytes for a tmpfs that fills up in ``phase``."""
    if phase == "create":  # the arrays' metadata, not the root zarr.json
        return PAGE * (s.created - 1)
    if phase == "units":  # half of the units, then the first shard file of the next one
        return PAGE * (s.created + sum(s.units[: len(s.units) // 2]) + 1)
    # All units fit; the new root zarr.json (written beside the old one) does not.
    return PAGE * (s.created + sum(s.units) + s.root - 1)


def _fsize_limit(s: Sizes, phase: str) -> int:
    """A per-file limit: under the first root zarr.json, or between it and the final one,
    which only consolidation makes bigger."""
    assert s.first_root_bytes < s.root_bytes and phase != "units"
    return s.first_root_bytes // 2 if phase == "create" else s.root_bytes - 1


def _mechanism(tmp: Path) -> str:
    forced = os.environ.get("DISTILL_TEST_DISK_LIMIT", "")
    if forced in ("tmpfs", "fsize"):
        return forced
    probe = tmp / "probe"
    if not _mount(probe, 64 * 1024):
        return "fsize"
    subprocess.run(["umount", str(probe)], capture_output=True)
    return "tmpfs"


@contextlib.contextmanager
def _limited(mnt: Path, how: str, limit: int) -> Iterator[Callable[[], None] | None]:
    """A place at ``mnt`` limited to ``limit`` bytes (tmpfs), or the child's preexec_fn."""
    if how == "fsize":
        mnt.mkdir()
        yield _file_size_limit(limit)
        return
    assert _mount(mnt, limit), "mounting a tmpfs worked a moment ago"
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, demo_data: Path):
    out = generate_small(demo_data, tmp_path_factory.mktemp("full") / "ref")
    return out, file_digests(out)


def _failed_in(stderr: str, store: Path) -> str:
    """The file the one-line error names, after checking the line."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    line = lines[0]
    assert line.startswith(f"distill generate: cannot write the store {store}: "), line
    assert "free space" in line and "re-run the same command" in line, line
    named = re.search(r"\(([^()]*)\); ", line)
    assert named, line
    return named.group(1)


def _lost_in_committed(store: Path, want: dict[str, str]) -> tuple[int, int]:
    """(units committed, files of those units or records that differ from the reference):
    a record whose files do not match it would be a damaged committed unit."""
    units = shard_units(LocalStore(store, require_complete=False).attrs)
    done = committed_units(store, units)
    listed = listed_units(Location.at(store))
    lost = len(listed - done)  # a record whose files do not match it
    have = file_digests(store)
    for u in units:
        if u.name in done:
            keys = [*u.keys().values(), unit_record_key(u.name)]
            lost += sum(have.get(k) != want[k] for k in keys)
    return len(done), lost


def _fill_and_resume(
    ref: Path, want: dict[str, str], data: Path, mnt: Path, how: str, phase: str
) -> tuple[int, str]:
    """Run out of space in ``phase``, check what is left, resume with space back: (data lost,
    what happened, for the record)."""
    sizes = _sizes(ref, mnt.with_name(f"{phase}-new"))
    n_units = len(sizes.units)
    limit = (_tmpfs_limit if how == "tmpfs" else _fsize_limit)(sizes, phase)
    store = mnt / "store"
    cmd = [str(BIN / "distill"), "generate", "--data", str(data), "--out", str(store), *CLI]
    with _limited(mnt, how, limit) as preexec:
        full = subprocess.run(
            cmd, env=_env(), capture_output=True, text=True, timeout=180, preexec_fn=preexec
        )
        assert full.returncode == 1, full.stderr
        named = _failed_in(full.stderr, store)
        assert not (store / BOOK / "manifest.json").exists()
        committed, lost = 0, 0
        if (store / "zarr.json").exists():
            committed, lost = _lost_in_committed(store, want)
        if phase == "finalize":
            assert committed == n_units and named == f"{store}/zarr.json", named
        elif phase == "units":  # some units committed, the next one half-written
            shard = re.match(r"(ids|values|valid)/c/", named[len(f"{store}/") :])
            assert 0 < committed < n_units and shard, (committed, named)
        else:  # the store's creation: nothing of it is left, so the same command starts it
            assert named == f"{store}/zarr.json", named
            assert committed == 0 and not (store.exists() and any(store.iterdir()))
        if how == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert f" {committed} already committed" in done.stdout, done.stdout
        have = file_digests(store)
        lost += sum(have.get(k) != want.get(k) for k in have.keys() | want.keys())
        verified = main(["verify", str(store), "--data", str(data), "--fraction", "0"])
        lost += int(verified != 0)
    size = f"size={limit // 1024}k" if how == "tmpfs" else f"{limit} B"
    key = named.removeprefix(f"{store}/")
    return lost, f"{phase}: {size}, {committed}/{n_units} units committed, failed on {key}"


def test_disk_full_during_generation(reference, demo_data: Path, tmp_path: Path):
    ref, want = reference
    how = _mechanism(tmp_path)
    lost, seen = 0, []
    phases = ("create", "units", "finalize") if how == "tmpfs" else ("create", "finalize")
    for phase in phases:
        phase_lost, what = _fill_and_resume(ref, want, demo_data, tmp_path / phase, how, phase)
        lost += phase_lost
        seen.append(what)
    forced = os.environ.get("DISTILL_TEST_DISK_LIMIT") == how
    why = "DISTILL_TEST_DISK_LIMIT" if forced else "cannot mount a tmpfs here"
    mechanism = "tmpfs" if how == "tmpfs" else f"RLIMIT_FSIZE ({why})"
    record(
        "disk full during generation",
        faults_survived=len(phases) if lost == 0 else 0,
        inputs_tried=len(phases),
        data_lost=lost,
        note=f"{mechanism}; " + "; ".join(seen),
    )
    print(f"disk full via {mechanism}: " + "; ".join(seen))
    assert lost == 0
