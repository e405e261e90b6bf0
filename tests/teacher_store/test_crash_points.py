"""`distill generate` SIGKILLed at chosen points of every phase, then resumed: same bytes.

Each case runs the CLI in a subprocess with ``DISTILL_CRASH_AT=<point>:<n>``
(:mod:`teacher_store.store._faults`: the process SIGKILLs itself the n-th time it reaches the
point, no sleeps, no races), checks the kill happened where intended, then re-runs the same
command without it (in this process) and compares every file with an uninterrupted run's.
The store here has 6 units of 3 shard files each (18 shard writes) and 10 teacher batches.

Local disk: a torn write is a temporary file cut after half its bytes (the rename never
happens). S3 (moto server): a PUT is atomic, so the hook tears the object itself, a fault
stronger than S3 can produce. CI runs a subset; ``DISTILL_RELIABILITY_SCALE=full`` runs all.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teacher_store.cli import main
from teacher_store.store._faults import ENV
from teacher_store.store.layout import MANIFEST, ROOT_META, SHARDS, is_temporary
from tests.reliability import full_scale, record
from tests.s3_fixtures import S3Server
from tests.store_fixtures import generate_small

pytestmark = [pytest.mark.reliability, pytest.mark.usefixtures("one_thread")]
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
UNITS, SHARDS_PER_UNIT = 6, 3

# (phase, point, n): all at full scale, the CI ones marked True.
_LOCAL: list[tuple[str, str, int, bool]] = [
    ("create", "meta-written", 1, False),
    ("create", "root-meta-torn", 1, True),
    ("mid-unit batch", "batch", 1, False),
    ("mid-unit batch", "batch", 4, True),
    ("mid-unit batch", "batch", 7, False),
    ("mid-unit batch", "batch", 10, False),
    ("shard write", "shard-torn", 1, False),
    ("shard write", "shard-torn", 8, True),
    ("shard write", "shard-torn", 18, False),
    ("between shards", "shard-written", 1, False),
    ("between shards", "shard-written", 5, False),
    ("shards before record", "shard-written", 3, False),
    ("shards before record", "shard-written", 18, True),
    ("unit record", "record-torn", 1, False),
    ("unit record", "record-torn", 6, True),
    ("unit record", "record-written", 1, False),
    ("unit record", "record-written", 6, False),
    ("final metadata", "root-meta-torn", 2, False),
    ("final metadata", "root-meta-written", 2, True),
    ("content digests", "digests-torn", 1, True),
    ("content digests", "digests-written", 1, False),
    ("manifest", "manifest-torn", 1, True),
    ("manifest", "manifest-written", 1, False),
]
_S3: list[tuple[str, str, int, bool]] = [
    ("shard write", "shard-torn", 8, True),
    ("shards before record", "shard-written", 9, False),
    ("unit record", "record-torn", 4, True),
    ("final metadata", "root-meta-written", 2, False),
    ("manifest", "manifest-torn", 1, True),
]


def _cases(table: list[tuple[str, str, int, bool]]) -> list[Any]:
    return [
        pytest.param(point, n, id=f"{phase}-{point}-{n}".replace(" ", "_"))
        for phase, point, n, ci in table
        if ci or full_scale()
    ]


class _Tally:
    """Kills tried and survived (resumed to the reference bytes) in this module, per storage."""

    def __init__(self) -> None:
        self.tried: dict[str, int] = {}
        self.survived: dict[str, int] = {}

    def count(self, where: str, same: bool) -> None:
        self.tried[where] = self.tried.get(where, 0) + 1
        self.survived[where] = self.survived.get(where, 0) + int(same)


@pytest.fixture(scope="module")
def tally() -> Iterator[_Tally]:
    t = _Tally()
    yield t
    for where, tried in t.tried.items():
        survived = t.survived[where]
        record(
            f"generation crash points, {where}",
            faults_survived=survived,
            inputs_tried=tried,
            data_lost=tried - survived,
        )


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> dict[str, bytes]:
    """Every file of an uninterrupted store, by key."""
    out = generate_small(demo_data, tmp_path_factory.mktemp("crash") / "ref")
    return _files(out)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative key, temporary files included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _args(data: Path, out: str) -> list[str]:
    flags = {
        "views": 2, "topk": 5, "img-size": 64, "batch-size": 4, "shard-samples": 8,
        "chunk-samples": 4, "shard-views": 1, "workers": 0,
    }  # fmt: skip
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    return ["generate", "--data", str(data), "--out", out, *args, "--quiet"]


def _kill_at(point: str, n: int, data: Path, out: str) -> None:
    """Run `distill generate` armed to SIGKILL itself at ``point``'s n-th arrival."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", ENV: f"{point}:{n}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [str(BIN / "distill"), *_args(data, out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr[-2000:])


def _resume(data: Path, out: str) -> None:
    assert main(_args(data, out)) == 0


def _records(keys: list[str]) -> int:
    return sum(
        1 for k in keys if k.startswith(f"{SHARDS}/") and not is_temporary(k[len(SHARDS) + 1 :])
    )


def _expected_records(point: str, n: int) -> int | None:
    """How many unit records a kill at ``point:n`` leaves (None: not checked)."""
    if point.startswith("shard-"):
        return (n - 1) // SHARDS_PER_UNIT
    if point == "record-torn":
        return n - 1
    if point == "record-written":
        return n
    if point.startswith(("root-meta", "meta")):
        return 0 if n == 1 else UNITS
    return UNITS if point.startswith("manifest") else None


def _check_killed_where_intended(point: str, n: int, files: dict[str, bytes], torn: bool) -> None:
    """The store as the kill left it says where the kill happened."""
    assert (MANIFEST in files) == (point == "manifest-written"), sorted(files)
    want = _expected_records(point, n)
    if want is not None:
        assert _records(list(files)) == want, sorted(files)
    if point == "batch":
        assert _records(list(files)) < UNITS
    if point.startswith("meta") or (point == "root-meta-torn" and n == 1):
        assert ROOT_META not in files  # killed while creating the store
    if point == "root-meta-written" and n == 2:
        assert "consolidated_metadata" in json.loads(files[ROOT_META])
    if point.endswith("-torn"):
        assert torn, f"no torn file after {point}:{n}: {sorted(files)}"


def _local_torn(files: dict[str, bytes]) -> bool:
    return any(is_temporary(k.rsplit("/", 1)[-1]) for k in files)


@pytest.mark.parametrize(("point", "n"), _cases(_LOCAL))
def test_kill_then_resume_local(point, n, reference, tally, demo_data, tmp_path):
    out = tmp_path / "store"
    _kill_at(point, n, demo_data, str(out))
    left = _files(out)
    _check_killed_where_intended(point, n, left, _local_torn(left))
    _resume(demo_data, str(out))
    got = _files(out)
    tally.count("local disk", got == reference)
    assert sorted(got) == sorted(reference)  # no temporary file left either
    assert {k: _sha(v) for k, v in got.items()} == {k: _sha(v) for k, v in reference.items()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _s3_whole(files: dict[str, bytes], reference: dict[str, bytes]) -> dict[str, bytes]:
    """The objects that are not a strict prefix of the reference's (a PUT cut short)."""
    return {
        k: v
        for k, v in files.items()
        if not (k in reference and v != reference[k] and reference[k].startswith(v))
    }


@pytest.mark.parametrize(("point", "n"), _cases(_S3))
def test_kill_then_resume_s3(point, n, reference, tally, demo_data, s3_server: S3Server):
    url = s3_server.url("crash")
    _kill_at(point, n, demo_data, url)
    left = s3_server.objects(url)
    whole = _s3_whole(left, reference)
    _check_killed_where_intended(point, n, whole, len(whole) < len(left))
    _resume(demo_data, url)
    got = s3_server.objects(url)
    tally.count("S3 (moto server)", got == reference)
    assert sorted(got) == sorted(reference)
    assert {k: _sha(v) for k, v in got.items()} == {k: _sha(v) for k, v in reference.items()}


@pytest.mark.parametrize("doc", [b'{"unit": "0.0"}', b'{"unit": "1.1", "files": {}}', b"[]", b"{"])
def test_a_record_that_parses_but_is_no_record_is_not_committed(doc, reference, tmp_path):
    """A unit record cut or damaged into other JSON (no files, another unit's name) means the
    unit is not committed (it was a KeyError in committed_units/finalize)."""
    from teacher_store.store.arrays import committed_units
    from teacher_store.store.layout import Location, read_unit_record, shard_units
    from teacher_store.store.schema import StoreAttrs

    for key, data in reference.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(data)
    (tmp_path / SHARDS / "0.0.json").write_bytes(doc)
    attrs = StoreAttrs.from_dict(json.loads(reference[ROOT_META])["attributes"])
    units = shard_units(attrs)
    assert read_unit_record(Location.local(tmp_path), "0.0") is None
    assert committed_units(tmp_path, units) == {u.name for u in units} - {"0.0"}
