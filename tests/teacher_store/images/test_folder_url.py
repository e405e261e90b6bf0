"""ImageFolder at an fsspec URL (moto's S3 server on 127.0.0.1, fsspec's memory filesystem,
file://) equals the same folder on local disk; bad URLs are one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from teacher_store.errors import ImageChangedError
from teacher_store.images.dataset import CorruptImageError, ImageFolder
from teacher_store.images.digests import UNREADABLE
from teacher_store.images.table import SampleTable
from teacher_store.storage import Location


def _png(shade: int, i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + i, 8), (shade, i * 40 % 256, 0)).save(buf, "PNG")
    return buf.getvalue()


# Relative key -> bytes. Class "a-b" sorts before "a" by key ("a-b/" < "a/") but after it by
# name (labels follow the names); a nested folder, an upper-case extension, a non-image file
# and a file at the root (not in a class) are as a local scan treats them.
FILES = {
    "a/0.png": _png(30, 0),
    "a/1.PNG": _png(30, 1),
    "a/sub/2.png": _png(30, 2),
    "a/notes.txt": b"not an image",
    "a-b/0.png": _png(90, 3),
    "b/0.png": _png(200, 4),
    "b/10.png": _png(200, 5),
    "b/9.png": _png(200, 6),
    "README.md": b"a file at the root",
}


def _local(root: Path) -> Path:
    for key, data in FILES.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


def _upload(url: str) -> str:
    loc = Location.at(url)
    for key, data in FILES.items():
        loc.write_atomic(key, data)
    return url


def _same_folder(remote: ImageFolder, local: ImageFolder) -> None:
    assert len(remote) == len(local) == 7
    assert remote.classes == local.classes == ("a", "a-b", "b")
    assert remote.paths == local.paths  # the views compare by content
    assert list(remote.paths) == ["a-b/0.png", "a/0.png", "a/1.PNG", "a/sub/2.png",
                                  "b/0.png", "b/10.png", "b/9.png"]  # fmt: skip
    assert list(remote.labels) == list(local.labels) == [1, 0, 0, 0, 2, 2, 2]
    assert remote.sizes == local.sizes
    assert remote.fingerprint() == local.fingerprint()
    assert [remote.read(i) for i in range(len(remote))] == [
        local.read(i) for i in range(len(local))
    ]
    assert remote.load(6).size == local.load(6).size == (14, 8)
    digests = remote.sample_digests(threads=3)
    assert np.array_equal(digests.values, local.sample_digests().values)
    with_content = remote.with_content(digests).fingerprint()
    assert with_content == local.with_content(digests).fingerprint()
    assert with_content.content is not None


def test_folder_on_s3_equals_the_same_folder_on_disk(tmp_path, s3_server):
    local = ImageFolder.scan(_local(tmp_path / "DATA"))
    url = _upload(s3_server.url("in") + "/train")
    remote = ImageFolder.scan(url + "/")  # a trailing slash names the same folder
    _same_folder(remote, local)
    assert remote.location == url and remote.where(0) == f"{url}/a-b/0.png"
    assert remote.key(0) == "a-b/0.png" and remote.label(0) == 1
    with pytest.raises(ValueError, match=f"dataset {url} is not on local disk"):
        _ = remote.root
    # A replaced object is refused with its URL, as a replaced file is with its path.
    checked = remote.with_content(remote.sample_digests())
    Location.at(url).write_atomic("b/9.png", _png(1, 1))
    with pytest.raises(ImageChangedError, match=f"image {url}/b/9.png \\(sample 6\\)"):
        checked.read(6)
    Location.at(url).remove("b/9.png")
    with pytest.raises(CorruptImageError, match=f"cannot read image {url}/b/9.png"):
        checked.read(6)
    assert checked.sample_digests().of(6) == UNREADABLE


def test_folder_in_memory_and_file_urls_equal_local(tmp_path):
    data = _local(tmp_path / "DATA")
    local = ImageFolder.scan(data)
    _same_folder(ImageFolder.scan(_upload("memory://folder-test/train")), local)
    by_url = ImageFolder.scan(f"file://{data}")
    _same_folder(by_url, local)
    assert by_url.root == data and by_url == local


def test_folder_url_reads_are_real_requests_not_a_copy(tmp_path):
    """The scan lists; each read asks the storage again (a changed object is seen)."""
    url = _upload("memory://folder-test/reads")
    folder = ImageFolder.scan(url)
    Location.at(url).write_atomic("a/0.png", b"new bytes")
    assert folder.read(folder.paths.index("a/0.png")) == b"new bytes"


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("no-bucket", r"dataset s3://no-such-\S+/train: bucket 'no-such-\S+' does not exist"),
        ("no-prefix", r"dataset s3://\S+/nothing-here does not exist \(nothing under that prefix"),
        ("no-classes", r"dataset s3://\S+ has no class folders \(expected URL/<class>/<img>\)"),
        ("no-images", r"no images found under s3://\S+ \(expected URL/<class>/<img>\)"),
        ("scheme", r"dataset nosuch://x/y is not a folder or an fsspec URL of one"),
    ],
)  # fmt: skip
def test_bad_folder_urls_are_one_line_errors(s3_server, what, expected):
    url = s3_server.url("bad")
    if what == "no-bucket":
        url = f"s3://no-such-bucket-{what.replace('-', '')}/train"
    elif what == "no-prefix":
        url = f"{url}/nothing-here"
    elif what == "no-classes":
        Location.at(url).write_atomic("0.png", _png(1, 1))  # images, but in no class folder
    elif what == "no-images":
        Location.at(url).write_atomic("a/readme.txt", b"text")
    else:
        url = "nosuch://x/y"
    with pytest.raises(ValueError, match=expected) as e:
        ImageFolder.scan(url)
    assert "\n" not in str(e.value)


def test_refused_credentials_are_one_line_naming_the_dataset(s3_server):
    url = _upload(s3_server.url("refused"))
    with s3_server.refusing_credentials(), pytest.raises(ValueError) as e:
        ImageFolder.scan(url)
    msg = str(e.value)
    assert msg.startswith(f"dataset {url}: ") and "refused" in msg and "\n" not in msg
    assert "AWS_ACCESS_KEY_ID" in msg


def test_table_round_trips_through_npz(tmp_path):
    folder = ImageFolder.scan(_local(tmp_path / "DATA"))
    table = folder.table
    again = SampleTable.from_npz(np.load(io.BytesIO(table.to_bytes())), "t.npz")
    for name in ("names", "offsets", "labels", "sizes"):
        assert np.array_equal(getattr(again, name), getattr(table, name)), name
    assert list(again.keys()) == list(folder.paths)
    assert again.names_sha256() == folder.fingerprint().sha256


def test_unreachable_endpoint_is_one_line_naming_the_dataset():
    with pytest.raises(ValueError, match=r"^dataset http://127\.0\.0\.1:1/x: cannot list") as e:
        ImageFolder.scan("http://127.0.0.1:1/x/")
    assert "\n" not in str(e.value)
