"""Per-sample content digests: the record, and every read of an image checked against it
(real photos; an image replaced by other pixels in a file of the same size)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import xxhash

from teacher_store.errors import DatasetMismatch, ImageChangedError
from teacher_store.images.dataset import CorruptImageError, ImageFolder
from teacher_store.images.digests import UNREADABLE, SampleDigests, content_digest
from tests.store_fixtures import replace_same_size


@pytest.fixture
def photos(tmp_path: Path, demo_data: Path) -> Path:
    return Path(shutil.copytree(demo_data, tmp_path / "photos"))


def test_digest_is_xxh3_64_of_the_file_bytes(photos):
    folder = ImageFolder.scan(photos)
    digests = folder.sample_digests(threads=3)
    assert len(digests) == len(folder) == 17 and digests.values.dtype == np.uint64
    for i in (0, 7, 16):
        data = (photos / folder.paths[i]).read_bytes()
        assert digests.of(i) == xxhash.xxh3_64_intdigest(data) == content_digest(data)
    assert len(set(digests.values.tolist())) == 17
    # The record: 8 little-endian bytes per sample, named by their sha256.
    raw = digests.to_bytes()
    assert len(raw) == 8 * 17 and raw[:8] == int(digests.of(0)).to_bytes(8, "little")
    back = SampleDigests.from_bytes(raw)
    assert np.array_equal(back.values, digests.values) and back.sha256 == digests.sha256
    assert digests.record() == {"algorithm": "xxh3_64", "sha256": digests.sha256, "version": 1}
    with pytest.raises(ValueError, match="whole number"):
        SampleDigests.from_bytes(raw[:-1])
    with pytest.raises(ValueError, match="unknown content digest"):
        SampleDigests.from_bytes(raw, "md5")


def test_same_size_replacement_is_refused_on_read_naming_file_and_sample(photos):
    folder = ImageFolder.scan(photos)
    checked = folder.with_content(folder.sample_digests())
    assert checked.fingerprint().content == checked.content.record()  # type: ignore[union-attr]
    assert "content" not in folder.fingerprint().to_dict()  # the cheap fingerprint reads nothing
    i = 5
    replace_same_size(photos / folder.paths[i])
    again = ImageFolder.scan(photos)
    assert again.fingerprint() == folder.fingerprint()  # names and sizes cannot tell
    assert again.sizes == folder.sizes
    checked.load(i + 1)  # the others still load
    for read in (checked.read, checked.load):
        with pytest.raises(ImageChangedError) as e:
            read(i)
        msg = str(e.value)
        assert len(msg.splitlines()) == 1
        assert f"{photos / folder.paths[i]} (sample {i})" in msg and "xxh3_64" in msg
        assert e.value.sample == i and e.value.path == str(photos / folder.paths[i])
        assert isinstance(e.value, DatasetMismatch) and not isinstance(e.value, CorruptImageError)
    assert folder.load(i).size  # an unchecked folder still decodes it (as before)
    # The error crosses processes (DataLoader workers) with its message and fields.
    back = pickle.loads(pickle.dumps(e.value))
    assert (str(back), back.path, back.sample) == (msg, e.value.path, i)
    changed = checked.content.differences(ImageFolder.scan(photos).sample_digests())  # type: ignore[union-attr]
    assert changed.tolist() == [i]


def test_unreadable_files_record_zero_and_are_not_checked(photos):
    folder = ImageFolder.scan(photos)
    victim = photos / folder.paths[2]
    data = victim.read_bytes()
    victim.unlink()
    victim.mkdir()  # a folder where the image was: reading it fails
    digests = folder.sample_digests()
    assert digests.of(2) == UNREADABLE and digests.of(3) != UNREADABLE
    victim.rmdir()
    victim.write_bytes(data)
    checked = folder.with_content(digests)
    checked.load(2)  # unknown at generation (its views are invalid): not checked
    with pytest.raises(ValueError, match="17 samples"):
        ImageFolder.scan(photos).with_content(SampleDigests(digests.values[:5]))
    with pytest.raises(CorruptImageError, match="cannot read image"):
        victim.unlink()
        checked.read(2)
