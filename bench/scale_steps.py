"""The steps of bench/scale.py, each run as ``python bench/scale_steps.py STEP`` with its
config as JSON on stdin; prints one JSON line with ``seconds`` and ``peak_rss`` (this process's
``VmHWM``, bytes) and the step's figures. Fresh processes: each peak RSS is the step's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common  # bench/ is sys.path[0]; it puts the repo first on sys.path
import numpy as np

C = 1000


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size of process ``pid`` in bytes (``VmHWM`` of /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc status")


# `distill generate`'s layout defaults (GenerateConfig; tests/bench/test_scale.py checks them),
# written out so that the write step does not import torch (~480 MiB of RSS) through generate.
LAYOUT = {"chunk_samples": 64, "chunk_views": 16, "shard_samples": 4096}


def synthetic_attrs(cfg: dict[str, Any]) -> Any:
    """Attrs as ``distill generate`` builds them at its defaults (schema 2, auto encoding)."""
    from teacher_store.store.schema import default_encoding
    from teacher_store.testing import synthetic_attrs as attrs_of
    from teacher_store.testing import synthetic_teacher
    from teacher_store.views.recipe import get_recipe

    d = LAYOUT
    n, r, k = cfg["samples"], cfg["views"], cfg["topk"]
    chunk = min(d["chunk_samples"], n)
    cviews = max(1, min(r, -(-(d["chunk_samples"] * d["chunk_views"]) // chunk)))
    shard = min(max(d["shard_samples"], chunk), -(-n // chunk) * chunk)
    names = [f"n{c:08d}" for c in range(C)]
    h = hashlib.sha256(f"synthetic {n} files".encode()).hexdigest()
    # The synthetic teacher's parameters go with the generation config (attrs.teacher holds a
    # teacher's identity and preprocessing only).
    config = {"synthetic": True, "views": r, "topk": k, "teacher": "synthetic",
              "batch_size": 256, "synthetic_teacher": cfg["teacher"]}  # fmt: skip
    return attrs_of(
        n, r, k, C, default_encoding(k), chunk, shard, min(cviews, -(-r // cviews) * cviews),
        device_type="cpu", chunk_views=cviews, id_order="head-sorted",
        teacher=synthetic_teacher(C, "synthetic (Lite0-calibrated)"),
        dataset={"num_samples": n, "sha256": h, "classes": names, "version": 1},
        recipe=get_recipe("default").to_dict(), config=config,
    )  # fmt: skip


def _relabel(i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bank row, class shift) of samples ``i``: a fixed hash, so units are independent."""
    h = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
    return h, (h >> np.uint64(16)) % np.uint64(C)


def step_write(cfg: dict[str, Any]) -> dict[str, Any]:
    from scale_teacher import SyntheticTeacher, bank

    from teacher_store.store.id_order import encoding_kl
    from teacher_store.store.layout import ShardUnit
    from teacher_store.store.schema import encode_values
    from teacher_store.testing import write_store

    attrs = synthetic_attrs(cfg)
    b_ids, b_logp = bank(SyntheticTeacher(**cfg["teacher"]), cfg["bank"], attrs.views, attrs.topk)
    enc = attrs.value_encoding

    def targets(u: ShardUnit) -> tuple[Any, ...]:
        """The unit's samples relabelled from the bank (a fixed hash: units are independent)."""
        row, shift = _relabel(np.arange(u.start, u.stop))
        row = (row % np.uint64(len(b_ids))).astype(np.int64)
        ids = b_ids[row, u.slot_start : u.slot_stop].astype(np.uint64) + shift[:, None, None]
        ids = (ids % np.uint64(C)).astype(attrs.ids_dtype).transpose(1, 0, 2)
        logp = b_logp[row, u.slot_start : u.slot_stop].transpose(1, 0, 2)
        values = encode_values(logp, enc)
        valid = np.ones(ids.shape[:2], np.uint8)
        stats = {"views": int(valid.size),
                 "encoding_kl_sum": float(encoding_kl(logp, values, enc, C).sum())}  # fmt: skip
        return np.ascontiguousarray(ids), np.ascontiguousarray(values), valid, stats

    t0 = time.perf_counter()
    manifest = write_store(cfg["store"], attrs, targets)
    assert manifest is not None
    secs = time.perf_counter() - t0
    _check_written(cfg["store"])
    views = attrs.num_samples * attrs.views
    data = sum(int(f["size"]) for f in manifest["files"].values())
    return {
        "seconds": secs,
        "views": views,
        "views_per_s": views / secs,
        "store_bytes": data,
        "bytes_per_view": data / views,
        "units": int(manifest["units"]),
        "files": sum(1 for f in manifest["files"].values() if f["size"]),
        "note": f"{views / secs:,.0f} views/s, {data / 1e9:.2f} GB, {data / views:.1f} B/view",
    }


def _check_written(store: str) -> None:
    """The manifest is where the address says: a writer without ``s3://`` support would have
    written a local folder named ``s3:`` and reported success."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(store)
    if not fs.exists(f"{path}/_distill/manifest.json"):
        raise SystemExit(f"the writer reported success but {store} has no manifest")


def _cli(argv: list[str]) -> tuple[float, int, str]:
    """Run the ``distill`` CLI in this process: (seconds, exit status, last output line)."""
    import io

    from teacher_store.cli import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    lines = out.getvalue().strip().splitlines()
    return time.perf_counter() - t0, rc, (lines[:2] or [""])[-1] if lines else ""


def step_info(cfg: dict[str, Any]) -> dict[str, Any]:
    secs, rc, line = _cli(["info", cfg["store"]])
    if rc:
        raise SystemExit(f"distill info exited {rc}")
    return {"seconds": secs, "note": line.strip()[:120]}


def step_verify(cfg: dict[str, Any]) -> dict[str, Any]:
    secs, rc, line = _cli(["verify", "--checksums-only", cfg["store"]])
    if rc:
        raise SystemExit(f"distill verify exited {rc}")
    return {"seconds": secs, "note": line.split("(", 1)[-1].rstrip(")")[:120]}


def _start_server(root: str) -> Any:
    """A real uvicorn (``api.main:app``, one worker, the service's HTTP protocol) on loopback."""
    from teacher_store.testing import ServiceProcess

    args = ("--host", "127.0.0.1", "--http", "api.protocol:GuardedH11Protocol")
    return ServiceProcess.uvicorn(root, args=args, cwd=_common.REPO, ready_s=300.0)


def step_serve(cfg: dict[str, Any]) -> dict[str, Any]:
    """uvicorn opens the store; the HTTP client reads view slot 0 whole, block by block."""
    import requests

    from teacher_store.client import open_store

    t0 = time.perf_counter()
    with _start_server(cfg["root"]) as server:
        url = server.store_url(Path(cfg["store"]).name)
        client = open_store(url, prefetch=1, max_cache_blocks=2)
        opened = time.perf_counter() - t0
        n, step = client.attrs.num_samples, int(requests.get(url, timeout=60).json()["max_block"])
        views = 0
        t1 = time.perf_counter()
        ranges = [(a, min(n, a + step)) for a in range(0, n, step)]
        for blk in client.iter_blocks(0, ranges):
            views += int(blk.valid.sum())
        served = time.perf_counter() - t1
        client.close()
        server_rss = vm_hwm(server.pid)
    if views != n:
        raise SystemExit(f"served {views} valid views of {n}")
    return {
        "seconds": opened + served,
        "open_s": opened,
        "serve_s": served,
        "views_per_s": n / served,
        "server_peak_rss": server_rss,
        "note": f"open {opened:.1f} s + slot {served:.1f} s ({n / served:,.0f} views/s); "
        f"server {server_rss / 2**20:.0f} MiB, client {vm_hwm() / 2**20:.0f} MiB",
    }


def _epoch(address: str, batch_size: int) -> dict[str, Any]:
    """One epoch's target gathering as StoreLoader does it, without images or a model."""
    from student.data import open_targets, split_samples
    from student.loader import epoch_plan

    t0 = time.perf_counter()
    targets = open_targets(address)
    attrs = targets.attrs
    n = attrs.num_samples
    labels = (np.arange(n, dtype=np.int64) * C) // n  # ImageFolder order: classes in turn
    train, _ = split_samples(labels, 0.1, 0)
    plan = epoch_plan(attrs, train, seed=0, epoch=0, batch_size=batch_size)
    steps = len(plan.order) // plan.batch_size
    setup = time.perf_counter() - t0
    gathered = 0
    for b in range(steps):
        for ahead in range(b + 1, min(b + 3, steps)):
            targets.prefetch(plan.slot, plan.batch(ahead))
        _, _, valid = targets.gather(plan.slot, plan.batch(b))
        gathered += int(valid.sum())
    targets.close()
    secs = time.perf_counter() - t0
    return {
        "seconds": secs,
        "setup_s": setup,
        "views": gathered,
        "views_per_s": gathered / (secs - setup),
        "note": f"{steps} batches of {plan.batch_size}: order {setup:.1f} s, "
        f"{gathered / (secs - setup):,.0f} views/s",
    }


def step_epoch(cfg: dict[str, Any]) -> dict[str, Any]:
    """The epoch reading the store directly (a folder or an fsspec URL)."""
    return _epoch(cfg["store"], cfg["batch_size"])


def step_epoch_service(cfg: dict[str, Any]) -> dict[str, Any]:
    """The epoch reading the store through a real uvicorn on loopback (its block endpoint)."""
    with _start_server(cfg["root"]) as server:
        out = _epoch(server.store_url(Path(cfg["store"]).name), cfg["batch_size"])
        out["server_peak_rss"] = vm_hwm(server.pid)
    out["note"] += f"; server {out['server_peak_rss'] / 2**20:.0f} MiB"
    return out


def step_order(cfg: dict[str, Any]) -> dict[str, Any]:
    """split_samples + epoch_plan alone (no store) at ``cfg["samples"]``: the O(N) arrays a
    trainer holds, at any N (ImageNet-22k included) without writing a store."""
    from student.data import split_samples
    from student.loader import epoch_plan

    attrs = synthetic_attrs({**cfg, "teacher": {}})
    base = vm_hwm()
    t0 = time.perf_counter()
    n = attrs.num_samples
    labels = (np.arange(n, dtype=np.int64) * cfg["classes"]) // n
    train, _ = split_samples(labels, 0.1, 0)
    plan = epoch_plan(attrs, train, seed=0, epoch=0, batch_size=cfg["batch_size"])
    secs = time.perf_counter() - t0
    assert len(plan.order) >= len(train)
    peak = vm_hwm()
    return {
        "seconds": secs,
        "base_rss": base,
        "note": f"N={n:,}, {cfg['classes']:,} classes: {secs:.1f} s, "
        f"+{(peak - base) / 2**20:.0f} MiB over the imports' {base / 2**20:.0f} MiB",
    }


def make_tree(root: Path, files: int) -> None:
    """``files`` tiny real PNGs (8 x 8, ~100 bytes each) in 1,000 class folders."""
    import io

    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text() == str(files):
        return
    per = -(-files // C)
    made = 0
    for c in range(C):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(min(per, files - made)):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), ((c * 7) % 256, j % 256, (c + j) % 256)).save(buf, "PNG")
            (d / f"n{c:08d}_{j:06d}.png").write_bytes(buf.getvalue())
            made += 1
    done.write_text(str(files))


def step_tree(cfg: dict[str, Any]) -> dict[str, Any]:
    from teacher_store.images.dataset import ImageFolder

    root = Path(cfg["tree"])
    t0 = time.perf_counter()
    make_tree(root, cfg["files"])
    made = time.perf_counter() - t0
    base = vm_hwm()
    t0 = time.perf_counter()
    folder = ImageFolder.scan(root)
    fp = folder.fingerprint()
    secs = time.perf_counter() - t0
    peak = vm_hwm()
    files, full = len(folder), cfg["full_samples"]
    per_file = (peak - base) / files
    at_n = base + per_file * full
    return {
        "seconds": secs,
        "files": files,
        "tree_make_s": made,
        "base_rss": base,
        "rss_per_file": per_file,
        "peak_rss": peak,
        "peak_rss_at_n": at_n,
        "note": f"measured on {files:,} real files ({fp.sha256[:8]}); at {full:,} files "
        f"(extrapolated): {secs * full / files:.0f} s, {at_n / 2**20:.0f} MiB",
    }


def synthetic_listing(samples: int, classes: int, seed: int = 0) -> Any:
    """(class names, a generator of ``(label, [(key, size), ...])`` per class folder): an
    ImageNet-like listing of ``samples`` files, ``n01440764/n01440764_10026.JPEG`` (wnid-style
    class names, unpadded ids so that ``str`` order is not numeric order), sizes 20-200 KB.
    One class's entries exist at a time, as when a walk lists one folder."""
    rng = np.random.default_rng(seed)
    wnids = np.sort(rng.choice(10**8, size=classes, replace=False))
    names = tuple(f"n{w:08d}" for w in wnids)
    per, extra = divmod(samples, classes)

    def listing() -> Any:
        for label, name in enumerate(names):
            count = per + (label < extra)
            crng = np.random.default_rng([seed, label])
            ids = np.sort(crng.choice(max(2 * count, 16), size=count, replace=False)) + 1
            sizes = crng.integers(20_000, 200_000, size=count)
            entries = [
                (f"{name}/{name}_{i}.JPEG", s)
                for i, s in zip(ids.tolist(), sizes.tolist(), strict=True)
            ]
            rng_order = crng.permutation(count)  # a listing comes in no particular order
            yield label, [entries[j] for j in rng_order.tolist()]

    return names, listing()


def step_index(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ImageFolder scan's core at full N: a synthetic listing -> a flat SampleTable, its
    fingerprint, then saved as ``.npz`` (peak RSS after each part: the save must add none)."""
    from teacher_store.images.scan import table_from_listing

    n, c = cfg["index_samples"], cfg["index_classes"]
    base = vm_hwm()
    t0 = time.perf_counter()
    names, listing = synthetic_listing(n, c)
    table = table_from_listing(listing, names)
    scan_s = time.perf_counter() - t0
    scan_rss = vm_hwm()
    t0 = time.perf_counter()
    sha = table.names_sha256()
    labels_sha = table.labels_sha256()
    fp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(cfg["index_file"], "wb") as f:
        table.save(f)
    save_s = time.perf_counter() - t0
    peak = vm_hwm()
    assert len(table) == n and table.key(0) < table.key(n - 1)
    return {
        "seconds": scan_s,
        "samples": n,
        "classes": c,
        "base_rss": base,
        "scan_rss": scan_rss,
        "fingerprint_s": fp_s,
        "save_s": save_s,
        "table_bytes": table.nbytes(),
        "file_bytes": Path(cfg["index_file"]).stat().st_size,
        "sha256": sha,
        "labels_sha256": labels_sha,
        "peak_rss": peak,
        "peak_rss_at_n": peak,
        "note": f"N={n:,} in {c:,} classes: scan {scan_s:.1f} s (RSS {scan_rss / 2**20:.0f} MiB),"
        f" fingerprint {fp_s:.1f} s, save {save_s:.1f} s; table {table.nbytes() / 2**20:.0f} MiB"
        f"; goal <= 1024 MiB",
    }


def step_index_load(cfg: dict[str, Any]) -> dict[str, Any]:
    """``np.load`` + ``SampleTable.from_npz`` (every array validated) of the index step's file,
    and a lookup: what a reader holds for the dataset at full N."""
    from teacher_store.images.table import SampleTable

    base = vm_hwm()
    t0 = time.perf_counter()
    with np.load(cfg["index_file"]) as arrays:
        table = SampleTable.from_npz(arrays, cfg["index_file"])
    secs = time.perf_counter() - t0
    n = len(table)
    middle = table.key(n // 2)
    peak = vm_hwm()
    return {
        "seconds": secs,
        "samples": n,
        "base_rss": base,
        "peak_rss": peak,
        "peak_rss_at_n": peak,
        "note": f"N={n:,}: load {secs:.1f} s ({middle}), table {table.nbytes() / 2**20:.0f} MiB"
        f"; goal <= 1024 MiB",
    }


def _tar_layout(sizes: np.ndarray, shards: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shard int32 [N], data offset int64 [N], shard sizes int64 [S]) of samples of ``sizes``
    bytes packed in order into ``shards`` tars as ``distill images pack`` lays them out: per
    sample a header, the image padded to 512 B, the ``.cls`` member (header + one block)."""
    n, block = len(sizes), 512
    shard = (np.arange(n, dtype=np.int64) * shards // max(n, 1)).astype(np.int32)
    member = block + (sizes + block - 1) // block * block + 2 * block
    end = np.cumsum(member)
    starts = np.searchsorted(shard, np.arange(shards))  # first sample of each shard
    first = np.concatenate([[0], end])[starts]  # bytes before each shard's first sample
    offset = end - member - first[shard] + block
    last = np.concatenate([starts[1:], [n]]) - 1
    shard_sizes = end[last] - first + 20 * block  # the end blocks, padded to 10 KiB
    return shard, offset, shard_sizes


def step_tar_index(cfg: dict[str, Any]) -> dict[str, Any]:
    """A tar shard index at full N without tars: the synthetic listing's table (what
    ``distill images pack`` of that folder would index), random digests, the shards' layout,
    saved as ``NAME.index.npz`` beside sparse shard files of the recorded sizes (so that
    ``TarShards.open`` finds every shard with its size, reading none of it)."""
    from teacher_store.images.scan import table_from_listing
    from teacher_store.images.shard_index import ShardIndex, ShardPattern, ShardRecord
    from teacher_store.images.table import SampleTable

    n, c, count = cfg["index_samples"], cfg["index_classes"], cfg["tar_shards"]
    t0 = time.perf_counter()
    names, listing = synthetic_listing(n, c)
    table = table_from_listing(listing, names)
    digests = np.random.default_rng(1).integers(0, 2**63, size=n, dtype=np.int64)
    table = SampleTable(table.names, table.offsets, table.labels, table.sizes,
                        digests.view(np.uint64))  # fmt: skip
    shard, offset, shard_sizes = _tar_layout(table.sizes, count)
    folder = Path(cfg["tar_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    pattern = ShardPattern.parse(cfg["tar_pattern"])
    assert len(pattern.shards) == count and Path(pattern.folder) == folder
    per = np.bincount(shard, minlength=count)
    records = tuple(
        ShardRecord(name, int(size), "0" * 64, int(k))
        for name, size, k in zip(pattern.shards, shard_sizes.tolist(), per.tolist(), strict=True)
    )
    for record in records:  # sparse: the size is recorded, no byte is written
        with open(folder / record.name, "wb") as f:
            f.truncate(record.size)
    index = ShardIndex(table, shard, offset, records, names, pattern.name, "cls")
    assert index.problem() is None
    with open(folder / pattern.index_name, "wb") as f:
        index.save(f)
    secs = time.perf_counter() - t0
    size = (folder / pattern.index_name).stat().st_size
    return {
        "seconds": secs,
        "samples": n,
        "pattern": pattern.text,
        "file_bytes": size,
        "key_bytes": int(table.offsets[-1]),
        "peak_rss_at_n": vm_hwm(),
        "note": f"N={n:,} in {count:,} shards (sparse files): built (by the bench, from arrays) "
        f"and saved in {secs:.1f} s, "
        f"index file {size / 2**20:.0f} MiB ({size / n:.0f} B/sample; keys "
        f"{int(table.offsets[-1]) / n:.1f} B/sample)",
    }


def step_tar_index_load(cfg: dict[str, Any]) -> dict[str, Any]:
    """``TarShards.open`` of the tar_index step's shards (index load with every check, the
    shards' listing) and a read's lookups: what a generation or a student holds for the
    dataset's images at full N."""
    from teacher_store.images.shards import TarShards

    pattern = cfg["tar_pattern"]
    base = vm_hwm()
    t0 = time.perf_counter()
    shards = TarShards.open(pattern)
    secs = time.perf_counter() - t0
    n = len(shards)
    middle = shards.where(n // 2)
    held = shards.index.table.nbytes() + shards.index.shard.nbytes + shards.index.data_offset.nbytes
    fp_t0 = time.perf_counter()
    fp = shards.fingerprint()
    fp_s = time.perf_counter() - fp_t0
    peak = vm_hwm()
    return {
        "seconds": secs,
        "samples": n,
        "base_rss": base,
        "held_bytes": held,
        "fingerprint_s": fp_s,
        "content": fp.content is not None,
        "peak_rss": peak,
        "peak_rss_at_n": peak,
        "note": f"N={n:,}: open {secs:.1f} s ({middle.rsplit('/', 1)[-1]}), arrays "
        f"{held / 2**20:.0f} MiB ({held / n:.0f} B/sample), fingerprint {fp_s:.1f} s; "
        f"goal <= 1024 MiB",
    }


def step_index_tuples(cfg: dict[str, Any]) -> dict[str, Any]:
    """The tuple-based scan this replaced, on the same synthetic listing at a share of N
    (``index_tuple_samples``), its RSS projected linearly to N: a list of (path, label, size)
    tuples, sorted, then three tuples (what ImageFolder.scan did until the sample table)."""
    n, c, full = cfg["index_tuple_samples"], cfg["index_classes"], cfg["index_samples"]
    n = min(n, full)
    _, listing = synthetic_listing(full, c)
    base = vm_hwm()
    t0 = time.perf_counter()
    items: list[tuple[str, int, int]] = []
    for label, entries in listing:
        items += [(key, label, size) for key, size in entries]
        if len(items) >= n:
            break
    items.sort()
    paths, labels, sizes = (tuple(col) for col in zip(*items, strict=True))
    secs = time.perf_counter() - t0
    peak = vm_hwm()
    got = len(paths)
    per = (peak - base) / got
    at_n = base + per * full
    del items, labels, sizes
    return {
        "seconds": secs,
        "samples": got,
        "scale": full / got,
        "base_rss": base,
        "rss_per_sample": per,
        "peak_rss": peak,
        "peak_rss_at_n": at_n,
        "note": f"measured at {got:,} samples ({per:.0f} B each over the imports); at "
        f"{full:,} (extrapolated): {at_n / 2**20:.0f} MiB",
    }


def step_calibrate(cfg: dict[str, Any]) -> dict[str, Any]:
    from scale_teacher import measure_real

    t0 = time.perf_counter()
    out = measure_real(cfg["views"], cfg["topk"])
    return {"seconds": time.perf_counter() - t0, **out}


STEPS = {
    "write": step_write,
    "info": step_info,
    "verify": step_verify,
    "serve": step_serve,
    "epoch": step_epoch,
    "epoch_service": step_epoch_service,
    "tree": step_tree,
    "order": step_order,
    "calibrate": step_calibrate,
    "index": step_index,
    "index_load": step_index_load,
    "index_tuples": step_index_tuples,
    "tar_index": step_tar_index,
    "tar_index_load": step_tar_index_load,
}


def main() -> None:
    step = sys.argv[1]
    cfg = json.loads(sys.stdin.read())
    out = STEPS[step](cfg)
    out.setdefault("peak_rss", vm_hwm())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
