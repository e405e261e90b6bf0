"""`distill show` on real stores (real photos, real Lite0 teacher, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from teacher_store.cli import main
from teacher_store.images.dataset import ImageFolder
from teacher_store.show import show_view
from teacher_store.store.arrays import BOOK, LocalStore
from teacher_store.views.codec import decode
from teacher_store.views.recipe import Recipe
from tests.meta_edits import ATTR_EDITS, GENERATED_EDITS, one_line
from tests.store_fixtures import V1_FIXTURE, copy_store, plant_class_id

pytestmark = pytest.mark.usefixtures("one_thread")  # fixtures: tests/teacher_store/conftest.py


def test_show_writes_the_view_and_the_top5(store, demo_data, tmp_path):
    png = tmp_path / "view.png"
    top = show_view(str(store), str(demo_data), sample=3, view=1, out=str(png))
    # The top-5 entries with a nonzero stored probability (zero ones carry no class when padded).
    stored = LocalStore(store).read_block(1, 3, 4)
    assert 1 <= len(top) == int(np.isfinite(stored.logprobs()[0][:5]).sum())
    assert [p for _, p in top] == pytest.approx(np.exp(stored.logprobs()[0][: len(top)]))
    names = LocalStore(store).attrs.teacher["class_names"]
    assert all(isinstance(n, str) and n in names for n, _ in top)
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-3
    with Image.open(png) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert 224 + 300 <= w <= 2000 and 224 <= h <= 1000  # view (upscaled to >= 224) + text
    top300 = show_view(str(store), str(demo_data), 3, 1, str(tmp_path / "v300.png"), size=300)
    assert top300 == top
    with Image.open(tmp_path / "v300.png") as im:
        assert im.size[1] == 300


def test_show_bounds_and_unreadable_views(store, broken, demo_data, tmp_path):
    out = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="out of range"):
        show_view(str(store), str(demo_data), sample=17, view=0, out=out)
    with pytest.raises(ValueError, match="out of range"):
        show_view(str(store), str(demo_data), sample=0, view=2, out=out)
    data, bstore = broken
    bad = json.loads((bstore / BOOK / "manifest.json").read_text())["bad_samples"][0]["sample"]
    with pytest.raises(ValueError, match="unreadable"):
        show_view(str(bstore), str(data), sample=bad, view=0, out=out)


def test_show_cli_paths(store, demo_data, tmp_path, capsys):
    png = tmp_path / "v.png"
    args = ["show", str(store), "--data", str(demo_data), "--sample", "0", "--view", "0"]
    assert main([*args, "--out", str(png)]) == 0
    nonzero = int(np.isfinite(LocalStore(store).read_block(0, 0, 1).logprobs()[0][:5]).sum())
    # A line naming the file, then one per top-5 entry with a nonzero stored probability.
    assert png.is_file() and capsys.readouterr().out.count("\n") == 1 + nonzero
    args = ["show", str(store), "--data", str(demo_data), "--sample", "99", "--view", "0"]
    assert main([*args, "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert "out of range" in err and err.count("\n") == 1 and "Traceback" not in err


def test_show_writes_lambda_not_a_missing_glyph(store, demo_data):
    from teacher_store.show import ViewRenderer

    renderer = ViewRenderer(str(store), str(demo_data))
    a = renderer.attrs
    mixed = next(
        (slot, sample)
        for slot in range(a.views)
        for sample in range(a.num_samples)
        if renderer.replayer.params(slot, sample).mix is not None
    )
    shown = renderer.render(mixed[1], mixed[0])
    text = "\n".join(shown.lines)
    assert "λ" not in text and f"lambda={shown.params.mix.lam:.2f}" in text


def _show(store, data, sample, view, out) -> list[str]:
    return ["show", str(store), "--data", str(data), "--sample", str(sample), "--view", str(view),
            "--out", str(out)]  # fmt: skip


def test_show_refuses_an_image_replaced_by_one_of_the_same_size(store, replaced, tmp_path, capsys):
    data, i = replaced
    path = data / ImageFolder.scan(data).paths[i]
    out = tmp_path / "x.png"
    assert main(_show(store, data, i, 0, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"image {path} (sample {i}) is not the image the store was built from" in err
    assert not out.exists()  # never a silent render of the new pixels
    # A view of another sample that mixes with it (its partner's pixels are in the view).
    a = LocalStore(store).attrs
    recipe = Recipe.from_dict(a.recipe)
    partner = {
        (r, s): m.partner if (m := decode(a.store_seed, r, s, a.num_samples, recipe, a.views).mix)
        else None
        for r in range(a.views)
        for s in range(a.num_samples)
    }  # fmt: skip
    mixing = [(r, s) for (r, s), p in partner.items() if s != i and p == i]
    assert mixing, "no view mixes with the replaced sample: pick another"
    r, s = mixing[0]
    assert main(_show(store, data, s, r, out)) == 2
    assert f"(sample {i})" in capsys.readouterr().err
    # Views that do not touch it still render.
    r, s = next((r, s) for (r, s), p in partner.items() if i not in (s, p))
    assert main(_show(store, data, s, r, out)) == 0 and out.exists()


def test_a_store_made_before_content_digests_shows_with_a_note(demo_data, tmp_path, capsys):
    out = tmp_path / "v1.png"
    assert main(_show(V1_FIXTURE, demo_data, 2, 1, out)) == 0 and out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"note: store {V1_FIXTURE} records no content")
    assert "checked by name and size only" in err[0]


EDITS = {**ATTR_EDITS, **GENERATED_EDITS}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_show_refuses_invalid_metadata_in_one_line(store, demo_data, tmp_path, capsys, name):
    """Never a render from attrs that fail the schema (no 100000 px allocation, no class
    names turned into letters), contradict the arrays or were edited: exit 2, one line."""
    edit, file = EDITS[name]
    bad = copy_store(store, tmp_path / name)
    edit(bad)
    png = tmp_path / "v.png"
    args = ["show", str(bad), "--data", str(demo_data), "--sample", "0", "--view", "0"]
    assert main([*args, "--out", str(png)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"store {bad}: {file} " in err, err
    assert not png.exists()


def test_show_refuses_class_ids_outside_the_classes(store, demo_data, tmp_path, capsys):
    classes = LocalStore(store).attrs.num_classes
    bad = plant_class_id(copy_store(store, tmp_path / "bad"), classes, slot=1, sample=4)
    args = ["show", str(bad), "--data", str(demo_data), "--sample", "4", "--view", "1"]
    assert main([*args, "--out", str(tmp_path / "v.png")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and f"class id {classes} at view slot 1, sample 4" in err, err
    args = ["show", str(bad), "--data", str(demo_data), "--sample", "5", "--view", "1"]
    assert main([*args, "--out", str(tmp_path / "v.png")]) == 0  # other views are fine


@pytest.mark.parametrize(
    "extra, want",
    [
        (["--size", "100000"], "--size 100000: must be an integer in [8, 4096]"),
        (["--size", "7"], "--size 7: must be an integer in [8, 4096]"),
        (["--size", "0"], "--size 0: must be an integer in [8, 4096]"),
    ],
)
def test_show_size_is_bounded(store, demo_data, tmp_path, capsys, extra, want):
    png = tmp_path / "v.png"
    args = ["show", str(store), "--data", str(demo_data), "--sample", "0", "--view", "0"]
    assert main([*args, "--out", str(png), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"distill show: error: {want}"
    assert not png.exists()


@pytest.mark.parametrize("name", ["x.txt", "x", "x.png.jpg", "x.jpeg"])
def test_show_writes_png_only_under_a_png_name(store, demo_data, tmp_path, capsys, name):
    out = tmp_path / name
    args = ["show", str(store), "--data", str(demo_data), "--sample", "0", "--view", "0"]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"distill show: error: --out {out}: the picture is written as PNG; name it NAME.png"
    )
    assert not out.exists()
