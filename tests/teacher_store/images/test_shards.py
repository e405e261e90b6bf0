"""WebDataset tar shards as an image source (TarShards), packed from a real folder of photos,
local and on moto's S3; their index (built while packing, or from shards made elsewhere); and
the refusals: a changed image, a missing or truncated shard, a wrong index."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
import threading
from pathlib import Path

import pytest

from teacher_store.errors import ImageChangedError
from teacher_store.images.dataset import ImageFolder
from teacher_store.images.pack import PackError, index_shards, pack_images
from teacher_store.images.shard_cache import RangeCache
from teacher_store.images.shard_index import ShardIndexError, ShardPattern
from teacher_store.images.shards import ShardChangedError, TarShards
from teacher_store.images.source import open_images
from teacher_store.storage.location import Location

SHARD_BYTES = 2_000_000  # the 17 demo photos (5 MB) make 3 shards


@pytest.fixture(scope="module")
def packed(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("packed") / "shards"
    return pack_images(str(demo_data), str(out), SHARD_BYTES).pattern


def _same_as_folder(shards: TarShards, folder: ImageFolder) -> None:
    assert len(shards) == len(folder) and shards.classes == folder.classes
    for i in range(len(folder)):
        assert shards.key(i) == folder.key(i) and shards.label(i) == folder.label(i)
        assert shards.read(i) == folder.read(i), folder.key(i)
    with_content = folder.with_content(folder.sample_digests(threads=2))
    fp, ff = shards.fingerprint(), with_content.fingerprint()
    assert fp.sha256 == ff.sha256 and fp.content == ff.content and fp.classes == ff.classes
    assert fp.mismatch(ff) is None and ff.mismatch(fp) is None


def test_packed_shards_read_as_the_folder(demo_data: Path, packed: str) -> None:
    shards = open_images(packed)
    assert isinstance(shards, TarShards) and len(shards.pattern.shards) == 3
    _same_as_folder(shards, ImageFolder.scan(demo_data))
    assert shards.where(0) == f"{shards.pattern.url('shard-000000.tar')}: {shards.key(0)}"
    assert shards.load(0).mode == "RGB"
    # Every store digest attached and right: reads pass the second check as well.
    checked = shards.with_content(shards.sample_digests())
    assert checked.read(5) == shards.read(5)


def test_pack_to_s3_and_read_by_ranges(demo_data: Path, s3_server, tmp_path: Path) -> None:
    url = s3_server.url("packed")
    result = pack_images(str(demo_data), url, SHARD_BYTES)
    assert result.pattern.startswith(url) and result.shards == 3
    shards = TarShards.open(result.pattern, block_bytes=256 << 10)
    assert not shards.shard_location.is_local
    _same_as_folder(shards, ImageFolder.scan(demo_data))
    # Neighbouring samples share blocks: fewer ranged GETs than a request per image would be.
    assert (
        shards.cache.requests
        < sum(int(s) for s in shards.index.table.sizes) // (256 << 10) + 3 * 17
    )
    # On S3 too: a missing shard, or no index, is one line naming it.
    s3_server.fs().rm_file(f"{url.removeprefix('s3://')}/shard-000002.tar")
    with pytest.raises(ShardIndexError, match=f"shard {url}/shard-000002.tar is missing"):
        TarShards.open(result.pattern)
    with pytest.raises(ShardIndexError, match="no index of the shards"):
        TarShards.open(f"{url}/shard-{{000000..000001}}.tar")
    # The same bytes as packing locally.
    local = pack_images(str(demo_data), str(tmp_path / "local"), SHARD_BYTES)
    objects = s3_server.objects(url)
    for name in ShardPattern.parse(local.pattern).shards[:2]:
        assert objects[name] == (tmp_path / "local" / name).read_bytes()


def test_pack_is_deterministic(demo_data: Path, tmp_path: Path) -> None:
    a = pack_images(str(demo_data), str(tmp_path / "a"), SHARD_BYTES)
    b = pack_images(str(demo_data), str(tmp_path / "b"), SHARD_BYTES)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir()) and len(files) == 5
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a.bytes == b.bytes
    # One shard per image when each image passes the bound: whole samples only.
    one = pack_images(str(demo_data), str(tmp_path / "c"), 1)
    assert one.shards == one.samples == 17


def test_stock_tarfile_and_webdataset_read_the_shards(demo_data: Path, packed: str) -> None:
    folder = ImageFolder.scan(demo_data)
    pattern = ShardPattern.parse(packed)
    seen = {}
    for name in pattern.shards:
        with tarfile.open(pattern.url(name)) as tar:
            for m in tar.getmembers():
                assert m.mtime == 0 and m.uid == m.gid == 0 and m.uname == ""
                data = tar.extractfile(m).read()  # type: ignore[union-attr]
                seen[m.name] = data
    for i in range(len(folder)):
        stem = folder.key(i).rsplit(".", 1)[0]
        assert seen[folder.key(i)] == folder.read(i)
        assert seen[f"{stem}.cls"] == str(folder.label(i)).encode()
    classes = json.loads(Path(pattern.url(pattern.classes_name)).read_text())["classes"]
    assert tuple(classes) == folder.classes

    wds = pytest.importorskip("webdataset")
    samples = list(wds.WebDataset(packed, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [folder.key(i).rsplit(".", 1)[0] for i in range(17)]
    for i, s in enumerate(samples):
        ext = folder.key(i).rsplit(".", 1)[1]
        assert s[ext] == folder.read(i) and int(s["cls"]) == folder.label(i)


def _foreign(tmp_path: Path, demo_data: Path, label_member: str) -> str:
    """Shards written by stock WebDataset's TarWriter, keys not sorted, a caption member."""
    wds = pytest.importorskip("webdataset")
    folder = ImageFolder.scan(demo_data)
    order = list(reversed(range(len(folder))))
    for n, part in enumerate((order[:9], order[9:])):
        with wds.TarWriter(str(tmp_path / f"part-{n}.tar"), encoder=False) as w:
            for i in part:
                ext = folder.key(i).rsplit(".", 1)[1]
                label = (
                    str(folder.label(i)).encode()
                    if label_member == "cls"
                    else json.dumps({"label": folder.label(i), "source": "x"}).encode()
                )
                w.write({"__key__": f"s{i:04d}", ext: folder.read(i), label_member: label,
                         "txt": b"a caption"})  # fmt: skip
    return str(tmp_path / "part-{0..1}.tar")


@pytest.mark.parametrize("label_member", ["cls", "json"])
def test_index_of_foreign_shards(demo_data: Path, tmp_path: Path, label_member: str) -> None:
    pattern = _foreign(tmp_path, demo_data, label_member)
    folder = ImageFolder.scan(demo_data)
    index = index_shards(pattern)
    assert index.labels_from == ("cls" if label_member == "cls" else "json:label")
    shards = TarShards.open(pattern)
    assert shards.classes == tuple(str(j) for j in range(len(folder.classes)))  # by number
    assert len(shards) == len(folder)
    for j in range(len(shards)):  # canonical order: keys sorted (s0000.png, s0001.jpg, ...)
        i = int(shards.key(j)[1:5])
        assert shards.key(j).startswith(f"s{i:04d}.") and j == i
        assert shards.read(j) == folder.read(i) and shards.label(j) == folder.label(i)
    assert (
        shards.fingerprint().content
        == folder.with_content(folder.sample_digests(threads=2)).fingerprint().content
    )
    # Named classes from a file, one per line.
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(folder.classes) + "\n")
    index_shards(pattern, str(names))
    assert TarShards.open(pattern).classes == folder.classes
    names.write_text("only-one\n")
    with pytest.raises(ShardIndexError, match="names 1 classes, but a sample's label is"):
        index_shards(pattern, str(names))


def test_reindex_of_packed_shards_is_the_same_index(packed: str, tmp_path: Path) -> None:
    pattern = ShardPattern.parse(packed)
    before = Path(pattern.url(pattern.index_name)).read_bytes()
    index_shards(packed)  # the classes JSON beside the shards names the classes
    assert Path(pattern.url(pattern.index_name)).read_bytes() == before


def test_a_sample_without_label_is_named(tmp_path: Path, demo_data: Path) -> None:
    data = (demo_data / "cat" / "chelsea.png").read_bytes()
    with tarfile.open(tmp_path / "one.tar", "w") as tar:
        info = tarfile.TarInfo("a/x.png")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardIndexError) as e:
        index_shards(str(tmp_path / "one.tar"))
    assert "one.tar: a/x: no label" in str(e.value) and "\n" not in str(e.value)


def _repack(src: Path, out: Path) -> None:
    pack_images(str(src), str(out), SHARD_BYTES, overwrite=True)


def test_replaced_image_is_refused_with_its_key(demo_data: Path, tmp_path: Path) -> None:
    folder = ImageFolder.scan(demo_data)
    digests = folder.sample_digests(threads=2)  # what a store made from the folder records
    copy = tmp_path / "copy"
    for i in range(len(folder)):
        (copy / folder.key(i)).parent.mkdir(parents=True, exist_ok=True)
        (copy / folder.key(i)).write_bytes(folder.read(i))
    victim = folder.key(4)
    (copy / victim).write_bytes(folder.read(3))  # another real image under that name
    _repack(copy, tmp_path / "out")  # the index is rebuilt: it agrees with the shards
    pattern = f"{tmp_path / 'out'}/shard-{{000000..000002}}.tar"
    shards = TarShards.open(pattern).with_content(digests)
    assert shards.read(3) == folder.read(3)
    with pytest.raises(ImageChangedError) as e:
        shards.read(4)
    assert victim in str(e.value) and "shard-00000" in str(e.value) and "\n" not in str(e.value)
    assert "different image content" in str(
        folder.with_content(digests).fingerprint().mismatch(shards.fingerprint())
    )


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_changed_shard_under_its_index_is_refused(packed: str, tmp_path: Path) -> None:
    src = Path(ShardPattern.parse(packed).folder)
    out = tmp_path / "shards"
    out.mkdir()
    for p in src.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    pattern = f"{out}/{ShardPattern.parse(packed).name}"
    shards = TarShards.open(pattern)
    i = 6
    shard = out / shards.pattern.shards[int(shards.index.shard[i])]
    _flip(shard, int(shards.index.data_offset[i]) + 100)  # same size, other bytes
    fresh = TarShards.open(pattern)  # sizes agree: the read itself catches it
    with pytest.raises(ShardChangedError) as e:
        fresh.read(i)
    msg = str(e.value)
    assert f"{shard}: {shards.key(i)}" in msg and "distill images index" in msg
    assert "\n" not in msg


def test_missing_truncated_shards_and_wrong_index(packed: str, tmp_path: Path) -> None:
    parsed = ShardPattern.parse(packed)
    out = tmp_path / "shards"
    out.mkdir()
    for p in Path(parsed.folder).iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    pattern = f"{out}/{parsed.name}"
    shard1 = out / "shard-000001.tar"
    good = shard1.read_bytes()

    def refused(match: str) -> str:
        with pytest.raises(ShardIndexError) as e:
            TarShards.open(pattern)
        msg = str(e.value)
        assert match in msg and "\n" not in msg, msg
        return msg

    shard1.write_bytes(good[:-10240])
    assert "distill images index" in refused(f"shard {shard1} is {len(good) - 10240} bytes")
    shard1.unlink()
    refused(f"shard {shard1} is missing")
    shard1.write_bytes(good)
    index = out / parsed.index_name
    saved = index.read_bytes()
    index.write_bytes(b"not an index")
    refused(f"{index} is not a tar shard index; rebuild it with `distill images index {pattern}`")
    index.write_bytes(saved[: len(saved) // 2])
    refused(f"{index}")
    index.unlink()
    refused(f"no index of the shards {pattern} at {index}")
    # The index of other shards (the first two only) under this pattern's name.
    two = f"{out}/shard-{{000000..000001}}.tar"
    index_shards(two)
    (out / ShardPattern.parse(two).index_name).rename(index)
    refused("was built for other shards than")
    with pytest.raises(ShardIndexError, match="braces in its folder part"):
        TarShards.open(f"{out}/{{a,b}}/shard.tar")


def test_pack_refuses_out_inside_dir_and_a_full_out(demo_data: Path, tmp_path: Path) -> None:
    with pytest.raises(PackError, match="lies inside the image folder"):
        pack_images(str(demo_data), str(demo_data / "shards"))
    with pytest.raises(PackError, match="contains the image folder"):
        pack_images(str(demo_data), str(demo_data.parent))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"x")
    with pytest.raises(PackError, match="is not empty"):
        pack_images(str(demo_data), str(tmp_path / "full"))
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["x"]


def test_block_cache_stays_within_its_bounds(demo_data: Path, packed: str, tmp_path: Path) -> None:
    # A memory:// copy of the shards: a non-local location, so the block cache is used.
    parsed = ShardPattern.parse(packed)
    url = "memory://cache-bound"
    mem = Location.at(url)
    for p in Path(parsed.folder).iterdir():
        mem.write_atomic(p.name, p.read_bytes())
    pattern = f"{url}/{parsed.name}"
    block, bound = 64 << 10, 256 << 10
    shards = TarShards.open(
        pattern, memory_bytes=bound, block_bytes=block, cache_dir=str(tmp_path), disk_bytes=bound
    )
    folder = ImageFolder.scan(demo_data)
    for i in [*range(len(shards)), *range(len(shards))]:
        assert shards.read(i) == folder.read(i)
        assert shards.cache.held <= bound
        on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.blk"))
        assert on_disk <= bound + block  # evicted back under the bound after each write
    assert shards.cache.held > 0 and on_disk > 0
    # The disk blocks outlive the reader: a new one reads the last sample from disk.
    again = TarShards.open(pattern, memory_bytes=bound, block_bytes=block, cache_dir=str(tmp_path))
    last = len(again) - 1
    if again.index.table.sizes[last] < block:  # a small sample's blocks are the latest kept
        assert again.read(last) == folder.read(last) and again.cache.requests == 0
    # A corrupt cached block is re-read from the shard, not served.
    for p in tmp_path.rglob("*.blk"):
        p.write_bytes(b"\0" * p.stat().st_size)
    third = TarShards.open(pattern, cache_dir=str(tmp_path), block_bytes=block)
    assert all(third.read(i) == folder.read(i) for i in range(len(third)))


def test_the_disk_cache_is_set_by_the_environment(
    demo_data: Path, packed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DISTILL_SHARD_CACHE_DIR / _BYTES reach every command that opens shards (no flag each)."""
    parsed = ShardPattern.parse(packed)
    url = "memory://cache-env"
    mem = Location.at(url)
    for p in Path(parsed.folder).iterdir():
        mem.write_atomic(p.name, p.read_bytes())
    monkeypatch.setenv("DISTILL_SHARD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DISTILL_SHARD_CACHE_BYTES", "2e6")
    shards = open_images(f"{url}/{parsed.name}")
    folder = ImageFolder.scan(demo_data)
    assert all(shards.read(i) == folder.read(i) for i in range(len(shards)))
    on_disk = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.blk"))
    assert 0 < on_disk <= 2_000_000 + (1 << 20)  # the bound, plus the block just written
    for bad in ("lots", "10", "1e20"):
        monkeypatch.setenv("DISTILL_SHARD_CACHE_BYTES", bad)
        with pytest.raises(ValueError, match=r"DISTILL_SHARD_CACHE_BYTES=.* must be a byte count"):
            open_images(f"{url}/{parsed.name}")


def test_threads_share_the_cache_and_a_copy_pickles(demo_data: Path, packed: str) -> None:
    parsed = ShardPattern.parse(packed)
    mem = Location.at("memory://threads")
    for p in Path(parsed.folder).iterdir():
        mem.write_atomic(p.name, p.read_bytes())
    shards = TarShards.open(f"memory://threads/{parsed.name}", block_bytes=4 << 20)
    folder = ImageFolder.scan(demo_data)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(len(folder)):
                assert shards.read(i) == folder.read(i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # 4 MiB blocks: each block fetched once however many threads wanted it at once.
    big = 4 << 20
    blocks = set()
    for s, o, n in zip(
        shards.index.shard, shards.index.data_offset, shards.index.table.sizes, strict=True
    ):
        blocks |= {(int(s), b) for b in range(int(o) // big, (int(o) + int(n) - 1) // big + 1)}
    assert shards.cache.requests <= len(blocks)
    copy = pickle.loads(pickle.dumps(shards))
    assert copy.read(2) == folder.read(2) and copy.cache.held <= copy.cache.memory_bytes


def test_range_cache_reads_past_the_end_short(tmp_path: Path) -> None:
    mem = Location.at("memory://short")
    mem.write_atomic("s.tar", bytes(range(256)) * 10)
    cache = RangeCache(mem, ("s.tar",), block_bytes=1000)
    assert cache.read(0, 2500, 2600) == (bytes(range(256)) * 10)[2500:2560]
    assert cache.read(0, 10, 1990) == (bytes(range(256)) * 10)[10:1990]


def test_index_version_2_is_narrow_and_version_1_still_reads(packed: str, tmp_path: Path) -> None:
    """pack writes index version 2 (data offsets, key offsets and sizes as uint32: they fit);
    an index written by version 1 (every one int64) opens and reads the same bytes."""
    import numpy as np

    from teacher_store.images.table import SampleTable

    parsed = ShardPattern.parse(packed)
    out = tmp_path / "shards"
    out.mkdir()
    for p in Path(parsed.folder).iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    index_file = out / parsed.index_name
    with np.load(index_file) as arrays:
        saved = {k: arrays[k] for k in arrays.files}
    meta = json.loads(saved["meta"].tobytes())
    assert meta["version"] == 2 and int(saved["version"][0]) == 2
    for name in ("data_offset", "offsets", "sizes"):
        assert saved[name].dtype == np.uint32, name
    new = TarShards.open(f"{out}/{parsed.name}")
    old = dict(saved, version=np.asarray([1], np.int64))
    for name in ("data_offset", "offsets", "sizes"):
        old[name] = saved[name].astype(np.int64)
    old["meta"] = np.frombuffer(json.dumps({**meta, "version": 1}).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **old)
    index_file.write_bytes(buf.getvalue())
    v1 = TarShards.open(f"{out}/{parsed.name}")
    assert v1.index.data_offset.dtype == np.int64 and len(v1) == len(new)
    assert [v1.read(i) for i in range(len(v1))] == [new.read(i) for i in range(len(new))]
    assert v1.fingerprint() == new.fingerprint()
    assert isinstance(v1.index.table, SampleTable)


def test_scattered_reads_fetch_their_bytes_and_ordered_reads_blocks() -> None:
    """Over object storage, reads in order share aligned blocks (one request serves several
    samples); a read elsewhere in its shard (a shuffled epoch over more data than the cache
    holds) fetches its own bytes, not a block for one sample; a read of cached blocks is free."""
    import numpy as np

    data = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    mem = Location.at("memory://scattered")
    mem.write_atomic("a.tar", data)
    block, size = 64 << 10, 10_000
    ordered = RangeCache(mem, ("a.tar",), block_bytes=block, memory_bytes=4 << 20)
    for k in range(100):  # 1 MB in order: 16 blocks of 64 KiB
        assert ordered.read(0, k * size, (k + 1) * size) == data[k * size : (k + 1) * size]
    assert ordered.requests <= 17 and ordered.fetched <= 17 * block
    scattered = RangeCache(mem, ("a.tar",), block_bytes=block, memory_bytes=4 << 20)
    starts = [(k * 7 % 19) * 210_000 + 1000 for k in range(19)]  # >= 200 kB apart, mixed
    assert len(set(starts)) == 19
    for start in starts:
        assert scattered.read(0, start, start + size) == data[start : start + size]
    # The first read of the shard takes its block; every later one its 10,000 bytes.
    assert scattered.requests == 19 and scattered.fetched == block + 18 * size
    assert (
        scattered.read(0, starts[0] + 10, starts[0] + 20) == data[starts[0] + 10 : starts[0] + 20]
    )
    assert scattered.requests == 19  # from the cached block
