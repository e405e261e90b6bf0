"""The scan's core (entries -> flat SampleTable) and ImageFolder's table: canonical order,
fingerprints unchanged from the tuple-based scan, no Python object per sample."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tracemalloc

import numpy as np
import pytest

from teacher_store.images.dataset import ColumnSequence, ImageFolder, KeySequence
from teacher_store.images.scan import TableBuilder, class_order, table_from_listing
from teacher_store.images.table import SampleTable, TableError

# name -> size: fixed bytes (b"x" * size), so the fingerprint never depends on an encoder.
TREE = {"dog/b.jpg": 7, "dog/a.JPEG": 11, "cat/é.png": 3, "cat/sub/z.png": 5, "cat-2/0.png": 1}
# sha256 of the names and sizes by the formula ImageFolder.fingerprint used before the table
# (computed once with it): existing stores must keep matching their folders.
OLD_SHA256 = "8e437e4c0a5537a0bfe14e6956e3fd8f3f3febab4b92029e402876644c433cbb"


def _old_fingerprint_sha256(paths: list[str], sizes: list[int]) -> str:
    """The tuple-based ImageFolder.fingerprint's sha256, as it was written."""
    h = hashlib.sha256()
    for rel, size in zip(paths, sizes, strict=True):
        h.update(os.fsencode(rel) + f"\0{size}\n".encode())
    return h.hexdigest()


def test_fingerprint_equals_the_tuple_based_formula(tmp_path):
    for key, size in TREE.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x" * size)
    folder = ImageFolder.scan(tmp_path)
    keys = sorted(TREE)  # the old scan: the relative paths sorted as str
    assert list(folder.paths) == keys
    old = _old_fingerprint_sha256(keys, [TREE[k] for k in keys])
    assert old == OLD_SHA256
    fp = folder.fingerprint()
    assert fp.sha256 == OLD_SHA256 and fp.num_samples == 5
    assert fp.classes == ("cat", "cat-2", "dog")
    labels = [{"cat": 0, "cat-2": 1, "dog": 2}[k.split("/")[0]] for k in keys]
    assert fp.labels_sha256 == hashlib.sha256(np.asarray(labels, "<i4").tobytes()).hexdigest()


def test_class_order_puts_prefix_classes_as_their_keys_sort():
    classes = ("a", "a-b", "a.b", "ab", "b")
    ranked = [classes[j] for j in class_order(classes)]
    assert ranked == ["a-b", "a.b", "a", "ab", "b"]  # "a-b/" < "a.b/" < "a/" < "ab/"
    assert sorted(f"{c}/x" for c in classes) == [f"{c}/x" for c in ranked]


def test_builder_gives_the_canonical_table_whatever_the_batches():
    rng = random.Random(3)
    classes = ("a", "a-b", "b", "é")
    items = [(f"{c}/{rng.randrange(10**6)}_{j}.jpg", c, rng.randrange(1, 10**6))
             for c in classes for j in range(40)]  # fmt: skip
    items.sort()
    want = SampleTable.from_items([k for k, _, _ in items],
                                  [classes.index(c) for _, c, _ in items],
                                  [s for _, _, s in items])  # fmt: skip
    # Classes in label order (not key order), each in two shuffled batches: merged again.
    builder = TableBuilder()
    for half in (0, 1):
        for label, c in enumerate(classes):
            mine = [(k, s) for k, cc, s in items if cc == c][half::2]
            rng.shuffle(mine)
            builder.add(label, mine)
    for got in (builder.build(classes), _in_key_order(items, classes)):
        assert np.array_equal(got.names, want.names)
        assert np.array_equal(got.offsets, want.offsets)
        assert np.array_equal(got.labels, want.labels)
        assert np.array_equal(got.sizes, want.sizes)
        assert got.names_sha256() == want.names_sha256()


def _in_key_order(items: list[tuple[str, str, int]], classes: tuple[str, ...]) -> SampleTable:
    listing = [(j, [(k, s) for k, c, s in items if c == classes[j]]) for j in class_order(classes)]
    return table_from_listing(listing, classes)


def test_the_table_is_flat_no_object_per_sample():
    """20,000 samples: the table and views hold ~the arrays' bytes (a tuple of str paths alone
    would add > 70 B per sample)."""
    n, classes = 20_000, tuple(f"n{c:08d}" for c in range(20))
    listing = [(c, [(f"{classes[c]}/{classes[c]}_{j}.JPEG", 1000 + j) for j in range(n // 20)])
               for c in range(20)]  # fmt: skip
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        table = table_from_listing(listing, classes)
        del listing
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    key_bytes = len(table.names)
    assert key_bytes == sum(len(table.key_bytes(i)) for i in range(n))
    assert table.nbytes() == key_bytes + 8 * (n + 1) + 4 * n + 8 * n
    assert held < 1.2 * table.nbytes() + (64 << 10), (held, table.nbytes())


def test_folder_views_are_not_tuples_and_compare_by_content(tmp_path):
    for key, size in TREE.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x" * size)
    folder = ImageFolder.scan(tmp_path)
    assert isinstance(folder.paths, KeySequence) and not isinstance(folder.paths, tuple)
    assert isinstance(folder.labels, ColumnSequence) and isinstance(folder.sizes, ColumnSequence)
    assert folder.paths == tuple(sorted(TREE)) and folder.paths[-1] == "dog/b.jpg"
    assert folder.paths[1:3] == ("cat/sub/z.png", "cat/é.png")
    assert folder.labels == (1, 0, 0, 2, 2) and folder.labels != (1, 0, 0, 2)
    assert np.asarray(folder.sizes).dtype == np.int64 and list(folder.sizes[:2]) == [1, 5]
    assert folder == ImageFolder.scan(tmp_path) and hash(folder) == hash(ImageFolder.scan(tmp_path))


def _saved(table: SampleTable, **extra: np.ndarray) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(table.to_bytes(**extra))) as arrays:
        return {k: arrays[k] for k in arrays.files}


def test_table_file_narrows_what_fits_and_reads_version_1():
    """Version 2 stores offsets and sizes as uint32 when every value fits (the index's load
    at ImageNet-22k then holds 8 B per sample less), int64 when one does not; a version-1
    file (int64 only) still loads, and an unknown version is one line."""
    table = SampleTable.from_items(["a/x.jpg", "b/y.jpg"], [0, 1], [5, 7])
    arrays = _saved(table)
    assert int(arrays["version"][0]) == 2
    assert arrays["offsets"].dtype == arrays["sizes"].dtype == np.uint32
    loaded = SampleTable.from_npz(_Npz(arrays), "t.npz")
    assert loaded.sizes.dtype == np.uint32 and loaded.key(1) == "b/y.jpg"
    assert loaded.names_sha256() == table.names_sha256() and loaded.nbytes() < table.nbytes()
    assert loaded.labels_sha256() == table.labels_sha256()
    big = SampleTable.from_items(["a/x.jpg", "b/y.jpg"], [0, 1], [5, (1 << 32) + 3])
    wide = _saved(big)
    assert wide["offsets"].dtype == np.uint32 and wide["sizes"].dtype == np.int64
    again = SampleTable.from_npz(_Npz(wide), "t.npz")
    assert int(again.sizes[1]) == (1 << 32) + 3 and again.names_sha256() == big.names_sha256()
    old = {**arrays, "version": np.asarray([1], np.int64)}
    old.update(offsets=table.offsets, sizes=table.sizes)  # what version 1 wrote: int64
    assert SampleTable.from_npz(_Npz(old), "t.npz").names_sha256() == table.names_sha256()
    old["sizes"] = arrays["sizes"]  # a version-1 file never held uint32
    with pytest.raises(TableError, match=r"'sizes' is uint32\[2\], not int64\[N\]"):
        SampleTable.from_npz(_Npz(old), "t.npz")
    future = {**arrays, "version": np.asarray([3], np.int64)}
    with pytest.raises(TableError, match=r"t.npz: sample table version \[3\] is not 2; rebuild"):
        SampleTable.from_npz(_Npz(future), "t.npz")


class _Npz(dict):  # type: ignore[type-arg]
    """A dict of arrays with ``np.load``'s ``files`` attribute."""

    @property
    def files(self) -> list[str]:
        return list(self)
