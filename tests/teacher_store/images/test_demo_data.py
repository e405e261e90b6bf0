import hashlib

from PIL import Image

from teacher_store.cli import main
from teacher_store.images.demo_data import DEMO_PHOTOS, write_demo_data


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_data_is_a_deterministic_imagefolder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files = write_demo_data(a)
    write_demo_data(b)
    assert _digest(a) == _digest(b)
    assert len(files) == sum(len(v) for v in DEMO_PHOTOS.values())
    assert {p.parent.name for p in files} == set(DEMO_PHOTOS)
    for p in files:
        with Image.open(p) as im:
            assert min(im.size) >= 64  # real photos, not thumbnails


def test_cli_demo_data(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "d")]) == 0
    assert "real photos" in capsys.readouterr().out


def test_cli_demo_data_bad_target(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo-data", str(f)]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "Traceback" not in err
