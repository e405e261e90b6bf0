"""Stores on S3: a real S3 server (moto, 127.0.0.1) started by the ``s3_server`` fixture.

`distill generate` killed with SIGKILL and resumed on S3 gives the bytes of a local run; every
reader (open_store, the direct reader, stock zarr-python, info, verify, show) reads the S3 store
(show and info as they read the local copy); bad addresses, a missing bucket and wrong
credentials give one-line errors; an object store refusing or failing writes mid-run (403, 500,
503, credentials revoked, bucket deleted, endpoint gone) gives a one-line, resumable failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from teacher_store.cli import main
from teacher_store.client import StoreAddressError, open_store
from teacher_store.errors import StoreAccessError, StoreNotFound
from teacher_store.generate import GenerateConfig, StoreWriteError, run_generate
from teacher_store.info import store_info
from teacher_store.store.arrays import LocalStore
from teacher_store.store.layout import MANIFEST, SHARDS, shard_units, unit_record_key
from teacher_store.verify import verify_store
from tests.s3_fixtures import S3Server, failing_puts, local_objects, relay
from tests.store_fixtures import SMALL_GENERATE

pytestmark = pytest.mark.usefixtures("one_thread")
BIN = Path(sys.executable).parent


def _cli_generate(data: Path, out: str) -> list[str]:
    flags = {
        "views": 2, "topk": 5, "img-size": 64, "batch-size": 4, "shard-samples": 8,
        "chunk-samples": 4, "shard-views": 1, "workers": 0,
    }  # fmt: skip
    assert len(flags) == len(SMALL_GENERATE) - 1  # the same config as `store` (progress aside)
    args = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    return ["generate", "--data", str(data), "--out", out, *args, "--quiet"]


def _root(url: str) -> str:
    return url.removeprefix("s3://")


def _upload(s3: S3Server, local: Path, name: str) -> str:
    """A copy of a local store on S3 (every file, same keys)."""
    url = s3.url(name)
    fs = s3.fs()
    for key, data in local_objects(local).items():
        fs.pipe_file(f"{_root(url)}/{key}", data)
    return url


def _wait_for_record(proc: subprocess.Popen, s3: S3Server, url: str) -> None:
    fs, shards = s3.fs(), f"{_root(url)}/{SHARDS}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if any(p.endswith(".json") for p in fs.ls(shards, detail=False)):
                return
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"generate ended (rc {proc.returncode}) before any unit")
        time.sleep(0.02)
    raise AssertionError("no unit record appeared in time")


def test_generate_killed_and_resumed_on_s3_is_byte_identical_to_local(
    s3_server: S3Server, store: Path, demo_data: Path
) -> None:
    url = s3_server.url("killed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "distill"), *_cli_generate(demo_data, url)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_record(proc, s3_server, url)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not s3_server.fs().exists(f"{_root(url)}/{MANIFEST}"), "killed after the manifest"
    assert not LocalStore(url, require_complete=False).complete

    cfg = GenerateConfig(data=str(demo_data), out=url, **SMALL_GENERATE)  # type: ignore[arg-type]
    summary = run_generate(cfg)
    assert summary["complete"] and summary["store"] == url
    assert summary["units_skipped"] >= 1 and summary["units_written"] < summary["units"]
    got, want = s3_server.objects(url), local_objects(store)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
    # Nothing about where it was written (endpoint, keys) is in the store.
    blob = b"".join(got.values())
    assert s3_server.endpoint.encode() not in blob and b"testing" not in blob


def test_readers_on_s3_match_the_local_store(
    s3_server: S3Server, store: Path, demo_data: Path
) -> None:
    url = _upload(s3_server, store, "read")
    local = LocalStore(store)
    direct = LocalStore(url)
    assert direct.complete and direct.attrs == local.attrs
    with open_store(url) as client:
        assert client.kind == "fsspec"
        for slot in range(local.attrs.views):
            a, b, c = local.read_block(slot, 0, 17), client.read_block(slot, 0, 17), None
            c = direct.read_block(slot, 3, 11)
            for field in ("ids", "values", "valid"):
                np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
                np.testing.assert_array_equal(getattr(c, field), getattr(a, field)[3:11])
    # Stock zarr-python straight from S3 (its own client, endpoint given as an option).
    remote = zarr.open_group(url, mode="r", storage_options={"endpoint_url": s3_server.endpoint})
    plain = zarr.open_group(store, mode="r")
    assert dict(remote.attrs) == dict(plain.attrs)
    for name in ("ids", "values", "valid"):
        np.testing.assert_array_equal(remote[name][:], plain[name][:])

    info = store_info(url)
    assert info["complete"] and info["path"] == url and info["units_committed"] == 6
    files = local_objects(store)
    assert (info["bytes_on_disk"], info["files_on_disk"]) == (
        sum(map(len, files.values())),
        len(files),
    )


def test_verify_on_s3_names_a_flipped_byte(
    s3_server: S3Server, store: Path, demo_data: Path
) -> None:
    url = _upload(s3_server, store, "verify")
    report = verify_store(url, str(demo_data), fraction=0.2)
    assert report.ok, report.reason
    assert "6 shard units complete" in report.summary and "re-run on cpu" in report.summary

    fs = s3_server.fs()
    key = "values/c/1/1/0"
    data = bytearray(fs.cat_file(f"{_root(url)}/{key}"))
    data[len(data) // 2] ^= 0x10
    fs.pipe_file(f"{_root(url)}/{key}", bytes(data))
    report = verify_store(url, str(demo_data), fraction=0.0)
    assert not report.ok
    assert f"shard {key} fails its checksum" in report.reason and "\n" not in report.reason


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_unsupported_scheme_is_refused_never_a_folder(
    tmp_path: Path, demo_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, _cli_generate(demo_data, "foo://bucket/demo"))
    assert "scheme 'foo' is not supported" in err
    err = _one_line_error(capsys, ["info", "nope://bucket/demo"])
    assert "scheme 'nope' is not supported" in err
    err = _one_line_error(capsys, ["info", "s3:/bucket/demo"])  # a mistyped URL, not a folder
    assert "s3: is not followed by //" in err
    assert list(tmp_path.iterdir()) == []  # no folder called "foo:" or "nope:"
    with pytest.raises(StoreAddressError, match="distill service"):
        LocalStore("http://127.0.0.1:9/v1/stores/demo")


def test_missing_bucket_and_wrong_credentials_are_one_line_errors(
    s3_server: S3Server, store: Path, demo_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _upload(s3_server, store, "creds")
    err = _one_line_error(capsys, ["info", "s3://no-such-bucket/demo"])
    assert "bucket 'no-such-bucket' does not exist at " + s3_server.endpoint in err
    err = _one_line_error(capsys, _cli_generate(demo_data, "s3://no-such-bucket/demo"))
    assert "bucket 'no-such-bucket' does not exist" in err
    assert not s3_server.fs().exists("no-such-bucket")  # the writer did not create it
    err = _one_line_error(capsys, _cli_generate(demo_data, f"s3://{s3_server.bucket}"))
    assert "is a whole bucket; write the store under a prefix" in err
    with pytest.raises(StoreNotFound, match="no-such-bucket"):
        open_store("s3://no-such-bucket/demo")

    with s3_server.refusing_credentials():
        err = _one_line_error(capsys, ["info", url])
        assert "refused the credentials" in err and "AWS_ACCESS_KEY_ID" in err
        err = _one_line_error(capsys, _cli_generate(demo_data, s3_server.url("denied")))
        assert "refused the credentials" in err
        with pytest.raises(StoreAccessError, match="refused the credentials"):
            open_store(url)
        report = verify_store(url, str(demo_data), fraction=0.0)
        assert not report.ok and "refused the credentials" in report.reason


def test_train_reads_its_targets_from_s3(
    s3_server: S3Server, store: Path, demo_data: Path, tmp_path: Path
) -> None:
    """`distill train --store s3://...` trains exactly as from the local copy of the store."""
    import torch

    from student.train import run_train
    from tests.store_fixtures import student_config

    url = _upload(s3_server, store, "train")
    weights = []
    for where, out in ((url, tmp_path / "s3"), (str(store), tmp_path / "local")):
        summary = run_train(student_config(where, demo_data, out, epochs=1))
        assert summary["epoch"] == 0, summary
        state = torch.load(out / "last.pth", map_location="cpu", weights_only=False)["model"]
        weights.append(state)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_unfinished_resumed_and_overwritten_store_local_and_s3(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The writer's protocol on both storages: records, resume, --overwrite, completion."""
    from teacher_store.store.arrays import committed_units, create_store
    from teacher_store.store.layout import shard_units
    from tests.s3_fixtures import store_location
    from tests.store_fixtures import build_store, make_attrs

    s3 = request.getfixturevalue("s3_server") if kind == "s3" else None
    where = store_location(kind, "synthetic", tmp_path, s3)
    old = make_attrs(128, views=2, chunk=64, shard=64)
    build_store(where, old, units=1)  # type: ignore[arg-type]
    units = shard_units(old)
    assert committed_units(where, units) == {units[0].name}
    info = store_info(where)
    assert (info["complete"], info["units_committed"], info["units_total"]) == (False, 1, 2)
    assert create_store(where, old) is True  # same config: resumed, nothing removed
    assert committed_units(where, units) == {units[0].name}

    new = make_attrs(128, views=1, chunk=64, shard=64, shard_views=1)
    with pytest.raises(ValueError, match="a different store"):
        create_store(where, new)
    build_store(where, new)  # type: ignore[arg-type]  # overwrite=True: the old store goes
    store = LocalStore(where)
    assert store.complete and store.attrs == new
    assert sorted(store.manifest["files"]) == sorted(  # type: ignore[index]
        k for u in shard_units(new) for k in u.keys().values()
    )
    assert store_info(where)["files_on_disk"] == 4 + 3 * 2 + 1 + 2  # metadata, shards, records


def _cli_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_show_on_s3_draws_the_local_stores_picture(
    s3_server: S3Server,
    store: Path,
    demo_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`distill show s3://...` writes the same PNG bytes and top-5 as on the local copy, and
    says the same about a unit an unfinished S3 store has not generated yet."""
    url = _upload(s3_server, store, "show")
    view = ["--data", str(demo_data), "--sample", "5", "--view", "1"]
    out = {}
    for name, where in (("s3", url), ("local", str(store))):
        png = tmp_path / f"{name}.png"
        text = _cli_out(capsys, ["show", where, *view, "--out", str(png)])
        out[name] = (text.replace(str(png), "PNG"), png.read_bytes())
    assert out["s3"] == out["local"] and out["s3"][1].startswith(b"\x89PNG")

    # Unfinished copies (no manifest) without the unit's objects: with no record the view is
    # "not generated yet"; with its record left, it "has no targets" (on S3 as on disk).
    unit = next(
        u
        for u in shard_units(LocalStore(store).attrs)
        if u.slot_start <= 1 < u.slot_stop and u.start <= 5 < u.stop
    )
    gone = [MANIFEST, *unit.keys().values()]
    for keep_record, want in ((False, "is not generated yet"), (True, "has no targets")):
        drop = gone if keep_record else [*gone, unit_record_key(unit.name)]
        errs = []
        for where in (_upload(s3_server, store, "show-part"), _local_copy(store, tmp_path)):
            _remove(s3_server, where, drop)
            png = tmp_path / "never.png"
            errs.append(_one_line_error(capsys, ["show", where, *view, "--out", str(png)]))
            assert want in errs[-1], errs[-1]
        assert errs[0] == errs[1]


def _local_copy(store: Path, tmp_path: Path) -> str:
    copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(store, copy)
    return str(copy)


def _remove(s3: S3Server, where: str, keys: list[str]) -> None:
    if where.startswith("s3://"):
        s3.fs().rm([f"{_root(where)}/{k}" for k in keys])
    else:
        for key in keys:
            (Path(where) / key).unlink()


def test_info_on_s3_prints_the_local_stores_figures(
    s3_server: S3Server, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`distill info s3://...` (text and --json) says what it says of the local copy, but for
    the address."""
    url = _upload(s3_server, store, "info")
    for extra in ([], ["--json"]):
        remote = _cli_out(capsys, ["info", url, *extra])
        local = _cli_out(capsys, ["info", str(store), *extra])
        assert url in remote and str(store) not in remote
        assert remote.replace(url, "ADDRESS") == local.replace(str(store), "ADDRESS")


class _Stop(Exception):
    """Raised by a decode hook to stop a run."""


def _after_first_unit(s3: S3Server, url: str, act: Callable[[], None]) -> Callable[[int], None]:
    """A decode hook that calls ``act`` once, on the first decode after a unit record exists."""
    fs, shards, done = s3.fs(), f"{_root(url)}/{SHARDS}", []

    def hook(sample: int) -> None:
        if not done and fs.exists(shards) and fs.ls(shards, detail=False):
            done.append(sample)
            act()

    return hook


def _committed(s3: S3Server, url: str) -> dict[str, bytes]:
    return {k: v for k, v in s3.objects(url).items() if k.startswith(f"{SHARDS}/")}


@contextlib.contextmanager
def _refusing_writes(s3: S3Server, how: str) -> Iterator[tuple[dict[str, str], str]]:
    """(AWS variables under which ``s3`` reads but refuses or fails every PUT, what the error
    then says)."""
    if how == "read-only keys":
        with s3.read_only_keys() as keys:
            yield keys, "refused the request (403 Access Denied); check AWS_ACCESS_KEY_ID"
        return
    status = int(how.split()[-1])
    with failing_puts(s3, status) as endpoint:
        # botocore retries a 5xx; one retry here, not the default's several, keeps this fast.
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2"}
        yield env, f"{endpoint} failed the request ({status} injected); wait for the object store"


@pytest.mark.parametrize("how", ["read-only keys", "PUT answered 503", "PUT answered 500"])
def test_store_refusing_writes_is_a_one_line_resumable_failure(
    how: str,
    s3_server: S3Server,
    store: Path,
    demo_data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An object store that serves reads but refuses (403) or fails (5xx) every PUT:
    `distill generate` gets past its checks and the resume's reads, then its first PUT fails:
    exit 1, one line naming the store and the fix, the committed units intact; with writes
    working again the same command resumes to the bytes of an uninterrupted local run."""
    import s3fs

    url = s3_server.url("refused")
    cfg = GenerateConfig(data=str(demo_data), out=url, **SMALL_GENERATE)  # type: ignore[arg-type]

    def stop() -> None:
        raise _Stop

    with pytest.raises(_Stop):
        run_generate(cfg, decode_hook=_after_first_unit(s3_server, url, stop))
    committed = _committed(s3_server, url)
    assert committed and MANIFEST not in s3_server.objects(url)

    with _refusing_writes(s3_server, how) as (env, want):
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        s3fs.S3FileSystem.clear_instance_cache()  # a new process would make new clients
        assert main(_cli_generate(demo_data, url)) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        assert err.startswith(f"distill generate: cannot write the store {url}: "), err
        assert want in err and err.endswith(", then re-run the same command to resume"), err
    monkeypatch.undo()
    s3fs.S3FileSystem.clear_instance_cache()
    assert _committed(s3_server, url) == committed

    assert main(_cli_generate(demo_data, url)) == 0
    got, want_bytes = s3_server.objects(url), local_objects(store)
    assert sorted(got) == sorted(want_bytes)
    assert [k for k in want_bytes if got[k] != want_bytes[k]] == []


def _trouble(
    trouble: str, s3: S3Server, bucket: str, stack: contextlib.ExitStack, mp: pytest.MonkeyPatch
) -> Callable[[], None]:
    """Set up for ``trouble`` and return what brings it on mid-run."""
    import s3fs

    if trouble == "bucket deleted":
        return lambda: s3.fs().rm(bucket, recursive=True)
    if trouble == "credentials revoked":
        return lambda: stack.enter_context(s3.refusing_credentials()) and None
    front = stack.enter_context(relay(s3))  # the run talks to the server through it
    for var, value in {"AWS_ENDPOINT_URL": front.endpoint, "AWS_MAX_ATTEMPTS": "2"}.items():
        mp.setenv(var, value)
    s3fs.S3FileSystem.clear_instance_cache()
    return front.stop


_TROUBLE = {
    # The first refused request may be a HEAD, whose answer has no body: "403 Forbidden".
    "credentials revoked": "{endpoint} refused the request (403 ",
    "bucket deleted": "bucket '{bucket}' no longer exists at {endpoint}; create it again",
    "endpoint gone": "cannot reach {endpoint} (Could not connect to the endpoint URL: ",
}


@pytest.mark.parametrize("trouble", sorted(_TROUBLE))
def test_object_store_failing_mid_run_is_a_resumable_store_write_error(
    trouble: str,
    s3_server: S3Server,
    store: Path,
    demo_data: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The credentials revoked, the bucket deleted or the endpoint gone after a unit was
    committed: the run stops with one line naming the store and the fix; put right, it
    resumes to the bytes of an uninterrupted local run."""
    import s3fs

    bucket = s3_server.make_bucket(f"distill-mid-{trouble.split()[0]}")
    url = f"s3://{bucket}/store"
    cfg = GenerateConfig(data=str(demo_data), out=url, **SMALL_GENERATE)  # type: ignore[arg-type]
    with contextlib.ExitStack() as stack:
        act = _trouble(trouble, s3_server, bucket, stack, monkeypatch)
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        with pytest.raises(StoreWriteError) as failed:
            run_generate(cfg, decode_hook=_after_first_unit(s3_server, url, act))
    monkeypatch.undo()
    s3fs.S3FileSystem.clear_instance_cache()
    msg = str(failed.value)
    assert "\n" not in msg and msg.startswith(f"cannot write the store {url}: "), msg
    assert _TROUBLE[trouble].format(bucket=bucket, endpoint=endpoint) in msg, msg
    assert msg.endswith(", then re-run the same command to resume"), msg
    if trouble == "bucket deleted":
        s3_server.make_bucket(bucket)
    else:
        assert _committed(s3_server, url)  # the units committed before stay

    assert run_generate(cfg)["complete"]
    got, want = s3_server.objects(url), local_objects(store)
    assert sorted(got) == sorted(want) and [k for k in want if got[k] != want[k]] == []
