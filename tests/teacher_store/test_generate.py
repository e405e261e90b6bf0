"""`distill generate` on real photos with the real Lite0 teacher (CPU, 64 px views).

The reference store is built once per module; every other run must reproduce its bytes.
Every run here uses ONE torch intra-op thread: on CPU the teacher's float results (and so a few
float16 roundings) change with the thread count, and torchrun gives each rank
OMP_NUM_THREADS=1, so byte-identity holds for an equal per-process thread count.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from teacher_store.cli import main
from teacher_store.errors import ImageChangedError
from teacher_store.generate import RUNTIME_FIELDS, GenerateConfig, build_attrs, run_generate
from teacher_store.images.dataset import ImageFolder
from teacher_store.store.arrays import BOOK, LocalStore
from teacher_store.store.class_order import teacher_class_order
from teacher_store.store.schema import SCHEMA_VERSION, quant_step
from teacher_store.views.codec import CODEC_VERSION, decode
from teacher_store.views.recipe import get_recipe
from teacher_store.views.replay import render_view, view_to_float
from tests.store_fixtures import SMALL_GENERATE, file_digests, replace_same_size

BIN = Path(sys.executable).parent
SMALL = SMALL_GENERATE


def _cfg(data: Path, out: Path, **kw: object) -> GenerateConfig:
    return GenerateConfig(data=str(data), out=str(out), **{**SMALL, **kw})  # type: ignore[arg-type]


@contextlib.contextmanager
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _generate(cfg: GenerateConfig) -> dict:
    with _one_thread():
        return run_generate(cfg)


def _cli_args(data: Path, out: Path) -> list[str]:
    return [
        "generate",
        "--data",
        str(data),
        "--out",
        str(out),
        "--views",
        "2",
        "--topk",
        "5",
        "--img-size",
        "64",
        "--batch-size",
        "4",
        "--shard-samples",
        "8",
        "--chunk-samples",
        "4",
        "--shard-views",
        "1",
        "--workers",
        "0",
        "--quiet",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, demo_data: Path):
    out = tmp_path_factory.mktemp("gen") / "ref"
    summary = _generate(_cfg(demo_data, out))
    return out, summary, file_digests(out)


def test_store_is_complete_and_self_describing(reference, demo_data, lite0):
    out, summary, digest = reference
    _, info = lite0
    assert summary["complete"] and summary["units"] == 6 and summary["units_written"] == 6
    assert summary["views_computed"] == 17 * 2 and summary["bad_samples"] == []
    manifest = json.loads((out / BOOK / "manifest.json").read_text())
    assert manifest["units"] == 6 and manifest["bad_samples"] == []
    assert len(manifest["files"]) == 19 and set(manifest["files"]) <= set(digest)
    # Each sample's content digest (xxh3_64 of its file), named by sha256 in the attrs.
    folder = ImageFolder.scan(demo_data)
    want = folder.sample_digests()
    raw = (out / BOOK / "sample_digests.u64").read_bytes()
    assert raw == want.to_bytes() and manifest["files"][f"{BOOK}/sample_digests.u64"]["size"] == 136
    assert np.array_equal(LocalStore(out).sample_digests().values, want.values)  # type: ignore[union-attr]

    store = LocalStore(out)
    a = store.attrs
    assert (a.schema_version, a.codec_version) == (SCHEMA_VERSION, CODEC_VERSION)
    assert (a.views, a.num_samples, a.topk, a.num_classes) == (2, 17, 5, 1000)
    # Version 2 defaults: prob-u8 at K=5, head-sorted-pad entries in the teacher's class order
    # (shipped for Lite0); shard_views=1 caps the chunk.
    assert a.value_encoding == "prob-u8" and a.temperature == 1.0
    assert (a.id_order, a.chunk_views, a.shard_views) == ("head-sorted-pad", 1, 1)
    assert a.class_order == teacher_class_order(lite0[0], 1000, info.weights_sha256)
    assert a.class_order is not None and sorted(a.class_order) == list(range(1000))
    assert a.teacher["weights_sha256"] == info.weights_sha256
    assert a.teacher["architecture"] == "tf_efficientnet_lite0"
    assert a.teacher["input_size"] == [3, 64, 64]
    assert a.dataset == {**folder.fingerprint().to_dict(), "content": want.record()}
    assert a.teacher["mean"] == list(info.mean) and a.teacher["std"] == list(info.std)
    assert len(a.teacher["class_names"]) == 1000
    assert a.recipe == get_recipe("default").to_dict()
    assert a.libraries["torch"] and a.libraries["zarr"]
    # The creation config is kept, minus the fields that do not change the bytes.
    assert not set(RUNTIME_FIELDS) & set(a.config)
    assert a.config["batch_size"] == 4 and a.config["img_size"] == 64 and a.config["seed"] == 0
    rebuilt = GenerateConfig.from_dict({**a.config, "data": str(demo_data), "out": str(out)})
    assert rebuilt.recipe == get_recipe("default")
    for slot in range(2):
        assert store.read_block(slot, 0, 17).valid.all()


@pytest.mark.parametrize(("views", "want"), [(64, 64), (130, 65), (8, 8)])
def test_small_datasets_get_even_chunks_of_at_least_1024_views(demo_data, lite0, views, want):
    """17 samples: 61 slots give 1,024 views; R slots are spread evenly over chunks that hold
    at least that many (no small remainder chunk, which compresses badly), or all R."""
    folder = ImageFolder.scan(demo_data)
    cfg = GenerateConfig(data=str(demo_data), out="unused", views=views)
    a = build_attrs(cfg, folder, lite0[1])
    assert (a.chunk_samples, a.chunk_views) == (17, want)


def test_stored_topk_equals_a_fresh_teacher_run(reference, demo_data, lite0):
    """Each view replayed alone (batch of one): top-1 exact, the other ranks exact up to
    entries the encoding stores as equal, values within half the encoding's step."""
    out, _, _ = reference
    model, info = lite0
    store = LocalStore(out)
    a = store.attrs
    step = quant_step(a.value_encoding, a.topk)  # [K] the encoding's step in p per rank
    folder = ImageFolder.scan(demo_data)
    recipe = get_recipe("default")
    images = [folder.load(i) for i in range(len(folder))]
    worst = 0.0
    for slot in range(a.views):
        block = store.read_block(slot, 0, a.num_samples)
        for i in range(a.num_samples):
            params = decode(a.store_seed, slot, i, a.num_samples, recipe, a.views)
            partner = images[params.mix.partner] if params.mix else None
            view = render_view(images[i], params, 64, partner=partner)
            with torch.inference_mode():
                logits = model(view_to_float(view[None], info.mean, info.std))
            full = torch.softmax(logits.float(), -1)[0].double().numpy()  # [C]
            fresh_ids = np.argsort(-full, kind="stable")[: a.topk]
            assert block.ids[i][0] == fresh_ids[0], f"view {slot},{i}"
            got = full[block.ids[i].astype(np.int64)]  # fresh p of the stored class at each rank
            # 1e-4: batch-of-one vs batch-of-4 float noise.
            assert np.all(np.abs(got - full[fresh_ids]) <= step + 1e-4), (slot, i)
            stored = np.exp(block.logprobs()[i].astype(np.float64))
            assert np.all(np.abs(stored - got) <= step / 2 + 1e-4), (slot, i, stored, got)
            worst = max(worst, float(np.abs(stored - got).max()))
    assert worst < 2e-3


def _wait_for_record(proc: subprocess.Popen, shards: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shards.is_dir() and any(p.suffix == ".json" for p in shards.iterdir()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"generate ended (rc {proc.returncode}) before any unit")
        time.sleep(0.002)
    raise AssertionError("no shard record appeared in time")


def test_sigkill_mid_run_then_resume_is_byte_identical(reference, demo_data, tmp_path):
    _, _, want = reference
    out = tmp_path / "killed"
    cmd = [str(BIN / "distill"), *_cli_args(demo_data, out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_record(proc, out / BOOK / "shards", timeout=120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / BOOK / "manifest.json").exists(), "killed too late: the run had finished"
    assert not LocalStore(out, require_complete=False).complete

    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout and "already committed" in done.stdout
    assert " 0 already committed" not in done.stdout  # it did resume, not restart
    assert file_digests(out) == want


@pytest.mark.slow
def test_torchrun_two_ranks_is_byte_identical(reference, demo_data, tmp_path):
    _, _, want = reference
    out = tmp_path / "ddp"
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
        str(BIN / "distill"),
        *_cli_args(demo_data, out),
    ]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x2" in done.stdout  # rank 0's summary: world size 2
    assert file_digests(out) == want


def test_corrupt_jpeg_is_reported_and_not_fatal(demo_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG" * 10)
    out = tmp_path / "store"
    with _one_thread():
        assert main(_cli_args(data, out)) == 0
    printed = capsys.readouterr().out
    assert "complete" in printed and "unreadable image" in printed and "cat/broken.jpg" in printed

    folder = ImageFolder.scan(data)
    bad = folder.paths.index("cat/broken.jpg")
    manifest = json.loads((out / BOOK / "manifest.json").read_text())
    assert [b["path"] for b in manifest["bad_samples"]] == ["cat/broken.jpg"]
    assert manifest["bad_samples"][0]["sample"] == bad
    store = LocalStore(out)
    a = store.attrs
    recipe = get_recipe("default")
    for slot in range(a.views):
        valid = store.read_block(slot, 0, a.num_samples).valid
        for i in range(a.num_samples):
            p = decode(a.store_seed, slot, i, a.num_samples, recipe, a.views)
            uses_bad = i == bad or (p.mix is not None and p.mix.partner == bad)
            assert valid[i] == (not uses_bad), (slot, i)
    assert not store.read_block(0, bad, bad + 1).valid[0]


def test_other_config_into_a_store_is_refused_unless_overwrite(reference, demo_data, tmp_path):
    src, _, want = reference
    out = tmp_path / "store"
    shutil.copytree(src, out)
    # The same config resumes a complete store as a no-op.
    again = _generate(_cfg(demo_data, out))
    assert again["complete"] and again["units_written"] == 0 and again["units_skipped"] == 6
    assert file_digests(out) == want
    with pytest.raises(ValueError, match="different store"):
        _generate(_cfg(demo_data, out, topk=3))
    assert file_digests(out) == want  # untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a store"):
        _generate(_cfg(demo_data, other))
    s = _generate(_cfg(demo_data, out, topk=3, overwrite=True))
    assert s["complete"] and LocalStore(out).attrs.topk == 3


def test_a_resume_after_an_image_changed_is_refused(reference, demo_data, tmp_path):
    """Same names and sizes, other bytes: another dataset, not the store's to resume."""
    src, _, want = reference
    out = shutil.copytree(src, tmp_path / "store")
    data = shutil.copytree(demo_data, tmp_path / "data")
    replace_same_size(data / ImageFolder.scan(data).paths[4])
    with pytest.raises(ValueError, match=r"a different store \(dataset differ\)"):
        _generate(_cfg(data, out))
    assert file_digests(out) == want  # untouched


def test_an_image_replaced_during_the_job_stops_it(demo_data, tmp_path):
    """Digested at the start, read again to render: the bytes must still be those. Reads
    in place (--read-threads 0): the hook replaces the image just before its decode, after a
    read-ahead would already have read (and checked) the original bytes."""
    data = shutil.copytree(demo_data, tmp_path / "data")
    path = data / ImageFolder.scan(data).paths[6]
    seen: list[int] = []

    def hook(sample: int) -> None:  # called before each decode, in this process (workers=0)
        seen.append(sample)
        if sample == 6 and seen.count(6) == 1:
            replace_same_size(path)

    with pytest.raises(ImageChangedError) as e:
        _generate_hooked(_cfg(data, tmp_path / "store", read_threads=0), hook)
    assert f"image {path} (sample 6)" in str(e.value) and len(str(e.value).splitlines()) == 1
    assert not (tmp_path / "store" / BOOK / "manifest.json").exists()  # never finished


def _generate_hooked(cfg: GenerateConfig, hook) -> dict:
    with _one_thread():
        return run_generate(cfg, decode_hook=hook)


def test_workers_do_not_change_the_bytes(reference, demo_data, tmp_path):
    _, _, want = reference
    out = tmp_path / "w2"
    assert _generate(_cfg(demo_data, out, workers=2))["complete"]
    assert file_digests(out) == want


def test_thread_count_is_recorded_and_reused(tmp_path, demo_data):
    """CPU float results depend on torch's thread count: a store records it, a re-run without
    --threads adopts it (so torchrun's one-thread ranks match), and another count is refused
    naming the option."""
    import torch

    from teacher_store.generate import GenerateConfig, run_generate

    before = torch.get_num_threads()
    try:
        kw = dict(
            data=str(demo_data), out=str(tmp_path / "s"), views=1, topk=3, img_size=32,
            batch_size=8, shard_samples=8, chunk_samples=8, workers=0, progress=False,
        )  # fmt: skip
        first = run_generate(GenerateConfig(threads=1, **kw))
        assert first["complete"]
        torch.set_num_threads(2)
        again = run_generate(GenerateConfig(**kw))
        assert again["units_written"] == 0 and again["units_skipped"] == first["units"]
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match=r"config\.threads"):
            run_generate(GenerateConfig(threads=2, **kw))
    finally:
        torch.set_num_threads(before)


def _hostile_data(demo_data: Path, root: Path) -> Path:
    """Two real photos per class, plus: a PNG whose header claims 20000 x 20000 pixels, a file
    whose name is not UTF-8, a directory link loop and a file link loop."""
    from tests.teacher_store.images.test_dataset import big_png_header

    for cls, source in (("cat", "microscopy"), ("dog", "space")):
        (root / cls).mkdir(parents=True)
        for src in sorted((demo_data / source).iterdir())[:2]:
            shutil.copy(src, root / cls / src.name)
    big_png_header(root / "cat" / "bomb.png", 20_000, 20_000)
    photo = sorted((root / "dog").iterdir())[0]
    with open(os.path.join(os.fsencode(root / "dog"), b"caf\xe9.jpg"), "wb") as f:
        f.write(photo.read_bytes())
    (root / "dog" / "dirloop").symlink_to("..", target_is_directory=True)
    (root / "cat" / "x.png").symlink_to("y.png")
    (root / "cat" / "y.png").symlink_to("x.png")
    return root


def test_hostile_dataset_generates_completes_and_verifies(demo_data, tmp_path, capsys):
    """Issue 10, items 3, 6, 9, 10: loops are skipped and named, the bomb is a bad sample by
    path, the non-UTF-8 name is a sample like any other; exit 0 and `distill verify` agrees."""
    data = _hostile_data(demo_data, tmp_path / "data")
    out = tmp_path / "store"
    with _one_thread():
        assert main(_cli_args(data, out)) == 0
    printed = capsys.readouterr()
    assert "complete" in printed.out and "cat/bomb.png" in printed.out
    for name in ("dog/dirloop", "cat/x.png", "cat/y.png"):
        assert name in printed.err, printed.err  # the scan's warning names what it skipped
    folder = ImageFolder.scan(data)
    assert len(folder) == 6 and folder.labels == (0, 0, 0, 1, 1, 1)
    bomb = folder.paths.index("cat/bomb.png")
    odd = folder.paths.index(os.fsdecode(b"dog/caf\xe9.jpg"))
    manifest = json.loads((out / BOOK / "manifest.json").read_text())
    assert [(b["sample"], b["path"]) for b in manifest["bad_samples"]] == [(bomb, "cat/bomb.png")]
    assert "too large" in manifest["bad_samples"][0]["error"]
    store = LocalStore(out)
    a = store.attrs
    assert a.config["max_image_pixels"] == 89_478_485  # recorded: it decides which views exist
    content = folder.sample_digests().record()  # the non-UTF-8 name's file is digested too
    assert a.dataset == {**folder.fingerprint().to_dict(), "content": content}
    recipe = get_recipe("default")
    for slot in range(a.views):
        valid = store.read_block(slot, 0, a.num_samples).valid
        for i in range(a.num_samples):
            p = decode(a.store_seed, slot, i, a.num_samples, recipe, a.views)
            uses_bomb = i == bomb or (p.mix is not None and p.mix.partner == bomb)
            assert valid[i] == (not uses_bomb), (slot, i)
    assert store.read_block(0, odd, odd + 1).ids.shape == (1, a.topk)
    assert main(["verify", str(out), "--data", str(data), "--fraction", "1"]) == 0
    verified = capsys.readouterr()
    assert "OK" in verified.out and "dog/dirloop" in verified.err


def test_a_lower_pixel_limit_is_part_of_the_config(demo_data, tmp_path):
    """--max-image-pixels changes which samples are bad, so a resume with another is refused."""
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    for src in sorted((demo_data / "microscopy").iterdir())[:2]:
        shutil.copy(src, data / "cat" / src.name)
    pixels = [w * h for w, h in (im.size for im in map(ImageFolder.scan(data).load, (0, 1)))]
    limit = max(pixels) - 1  # the larger photo is just over it
    out = tmp_path / "store"
    s = _generate(_cfg(data, out, views=1, max_image_pixels=limit))
    assert s["complete"]
    assert [b["sample"] for b in s["bad_samples"]] == [i for i in (0, 1) if pixels[i] > limit]
    assert "over the limit" in s["bad_samples"][0]["error"]
    with pytest.raises(ValueError, match=r"config\.max_image_pixels"):
        _generate(_cfg(data, out, views=1))
