"""Fuzzing the view codec and replay with Hypothesis: any seed, slot and recipe in range renders.

For any store seed, view slot of R, sample of N (1, odd, even, beyond a pairing tile, up to
2**64 - 1) and any recipe drawn field by field over the ranges its validation accepts (crop
scale and ratio ranges down to their bounds, flip, RandAugment count / magnitude / noise /
clip, colour jitter, erasing, MixUp / CutMix on or off with any alpha, switch probability,
staged ramps of every rampable knob), the decoded parameters are in the recipe's ranges at
that slot, and :meth:`Replayer.render` (the one replay entry point) returns a uint8 view of the
requested size, the same bytes on a second, fresh replayer and the same as
:func:`render_view` on the images in their own modes. The images are tiny real files of odd
sizes (1x1, 1 pixel wide or tall, 3x5, ...) in RGB, L, LA, P, RGBA, 1 and CMYK (JPEG).

Recipes drawn over the whole of each field's type (negative, huge, NaN, infinite, reversed
ranges, wrong types) are either refused by validation with pydantic's ValidationError (a
ValueError) or render like the above: nothing out of range reaches the renderer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from teacher_store.images.dataset import ImageFolder
from teacher_store.views.codec import PAIR_TILE, decode
from teacher_store.views.recipe import (
    COLOR_JITTER_MAX,
    RAMP_KNOBS,
    RATIO_RANGE,
    SCALE_MIN,
    Recipe,
)
from teacher_store.views.replay import MIN_SIZE, Replayer, render_view
from tests.reliability import full_scale, record
from tests.teacher_store.views.test_codec import check_view

pytestmark = pytest.mark.reliability

VIEWS = 2000 if full_scale() else 300  # replayed views of in-range recipes
WIDE = 1000 if full_scale() else 200  # recipes drawn over each field's whole type
ROW = "fuzz: view codec and replay"
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

# (class folder, file, mode, width, height): tiny real images of odd sizes and modes
IMAGES = (
    ("a", "one.png", "RGB", 1, 1),
    ("a", "column.png", "L", 1, 23),
    ("a", "row.png", "P", 31, 1),
    ("a", "small.png", "RGBA", 3, 5),
    ("b", "gray_alpha.png", "LA", 7, 2),
    ("b", "bits.png", "1", 5, 3),
    ("b", "photo.jpg", "RGB", 13, 9),
    ("b", "cmyk.jpg", "CMYK", 2, 17),
)


def _image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    if mode == "P":
        return rgba.convert("RGB").quantize(colors=7)
    return rgba.convert(mode)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> ImageFolder:
    root = tmp_path_factory.mktemp("tiny")
    for i, (cls, name, mode, w, h) in enumerate(IMAGES):
        (root / cls).mkdir(exist_ok=True)
        _image(mode, w, h, i).save(root / cls / name)
    return ImageFolder.scan(root)


@pytest.fixture(scope="module")
def native(folder: ImageFolder) -> list[Image.Image]:
    """The folder's images as they decode, in their own modes (not converted to RGB)."""
    out = []
    for rel in folder.paths:
        with Image.open(folder.root / rel) as im:
            im.load()
            out.append(im.copy())
    assert {im.mode for im in out} >= {"RGB", "L", "LA", "P", "RGBA", "1", "CMYK"}
    return out


class _Cyclic(Sequence[Any]):
    """``n`` entries, entry ``i`` being ``items[i % len(items)]`` (computed, so n may be 2**64)."""

    def __init__(self, items: Sequence[Any], n: int) -> None:
        self.items, self.n = items, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        if not isinstance(i, int) or not 0 <= i < self.n:
            raise IndexError(i)
        return self.items[i % len(self.items)]

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(self.n))


class _Samples:
    """A dataset of ``n`` samples over the folder's images: sample i is image i mod 8."""

    def __init__(self, folder: ImageFolder, n: int) -> None:
        self.folder, self.n = folder, n
        self.root, self.max_image_pixels = folder.root, folder.max_image_pixels
        self.paths = _Cyclic(folder.paths, n)
        self.labels = _Cyclic(folder.labels, n)

    def __len__(self) -> int:
        return self.n

    def label(self, index: int) -> int:
        return self.labels[index]

    def where(self, index: int) -> str:
        return self.folder.where(index % len(self.folder.paths))

    def load(self, index: int, draft: Any = None) -> Image.Image:
        return self.folder.load(index % len(self.folder.paths), draft)


def _replayer(
    folder: ImageFolder, seed: int, n: int, views: int, recipe: Recipe, size: int
) -> Replayer:
    from tests.store_fixtures import make_attrs

    a = make_attrs(num_samples=8, views=1, chunk=4, shard=8, shard_views=1)
    a = a.model_copy(
        update={
            "store_seed": seed,
            "num_samples": n,
            "views": views,
            "teacher": {**a.teacher, "input_size": [3, size, size]},
            "recipe": recipe.to_dict(),
        }
    )
    dataset = folder if n == len(folder) else _Samples(folder, n)
    return Replayer(dataset, a)  # type: ignore[arg-type]


# ------------------------------------------------------------------ recipes in validated ranges
_unit = st.floats(0.0, 1.0)
_alpha = st.one_of(st.just(0.0), st.floats(0.0, 4.0), st.floats(0.0, 1e308), st.floats(0.0, 1e-300))
_scale_min = st.floats(SCALE_MIN, 1.0)
_KNOB_RANGES: dict[str, st.SearchStrategy[float]] = {
    "randaug_n": st.floats(0.0, 16.0),
    "mixup_alpha": _alpha,
    "cutmix_alpha": _alpha,
    "mix_prob": _unit,
    "color_jitter": st.floats(0.0, COLOR_JITTER_MAX),
    "erase_prob": _unit,
}


@st.composite
def recipes(draw: st.DrawFn) -> Recipe:
    """Any recipe whose every field lies in the range its validation documents."""
    lo = draw(_scale_min)
    scale = (lo, draw(st.floats(lo, 1.0)))
    r_lo = draw(st.floats(*RATIO_RANGE))
    ratio = (r_lo, draw(st.floats(r_lo, RATIO_RANGE[1])))
    mmax = draw(st.floats(0.0, 30.0, exclude_min=True))
    fields: dict[str, Any] = {
        "name": draw(st.text(min_size=1, max_size=8).filter(str.strip)),
        "scale": scale,
        "ratio": ratio,
        "hflip": draw(_unit),
        "randaug_n": draw(st.integers(0, 16)),
        "randaug_m": draw(st.floats(0.0, mmax)),
        "randaug_mstd": draw(st.one_of(st.floats(0.0, 3.0), st.floats(0.0, 1e308))),
        "randaug_mmax": mmax,
        "color_jitter": draw(st.floats(0.0, COLOR_JITTER_MAX)),
        "erase_prob": draw(_unit),
        "mixup_alpha": draw(_alpha),
        "cutmix_alpha": draw(_alpha),
        "mix_prob": draw(st.one_of(st.just(1.0), _unit)),
        "switch_prob": draw(_unit),
    }
    stages = draw(st.integers(1, 6))
    ramp: dict[str, tuple[float, float]] = {}
    if stages > 1:
        for knob in draw(st.lists(st.sampled_from(RAMP_KNOBS), unique=True, max_size=4)):
            if knob == "randaug_m":
                ends = st.floats(0.0, mmax)
            elif knob == "scale_min":
                ends = st.floats(SCALE_MIN, scale[1])
            else:
                ends = _KNOB_RANGES[knob]
            ramp[knob] = (draw(ends), draw(ends))
    return Recipe(**fields, stages=stages, ramp=ramp)  # must not raise: all in range


_num_samples = st.one_of(
    st.integers(1, 9),
    st.sampled_from([8, PAIR_TILE * 2 - 1, PAIR_TILE * 2, PAIR_TILE * 2 + 1, PAIR_TILE * 5 + 3]),
    st.integers(1, 2**64 - 1),
)
_size = st.one_of(
    st.integers(MIN_SIZE, 24), st.tuples(st.integers(MIN_SIZE, 24), st.integers(MIN_SIZE, 24))
)


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def _check_renders(
    folder: ImageFolder,
    native: list[Image.Image],
    recipe: Recipe,
    key: tuple[int, int, int, int, int],
    size: int | tuple[int, int],
) -> None:
    """View (slot, sample) of a store (seed, N, R) decodes in range and renders at ``size``."""
    seed, n, views, slot, sample = key
    replay = _replayer(folder, seed, n, views, recipe, 16)
    params = replay.params(slot, sample)
    assert params == decode(seed, slot, sample, n, recipe, views)
    resolved = recipe.at_slot(slot, views)
    for im in (native[sample % len(native)], native[-1]):  # each crop box, on odd sizes
        check_view(params, resolved, n, im.width, im.height)
    if params.mix is not None:  # the partner is drawn as its own base view (codec 2)
        assert (
            params.mix.partner_aug == decode(seed, slot, params.mix.partner, n, recipe, views).base
        )
    view = replay.render(slot, sample, size)
    h, w = (size, size) if isinstance(size, int) else size
    assert view.pixels.dtype == torch.uint8 and view.pixels.shape == (3, h, w)
    assert view.params == params and view.lam == (1.0 if params.mix is None else params.mix.lam)
    again = _replayer(folder, seed, n, views, recipe, 16).render(slot, sample, size)
    assert _digest(again.pixels) == _digest(view.pixels)
    partner = None if params.mix is None else native[params.mix.partner % len(native)]
    direct = render_view(native[sample % len(native)], params, size, partner=partner)
    assert torch.equal(direct, view.pixels)


def test_any_seed_slot_and_recipe_in_range_renders(
    folder: ImageFolder, native: list[Image.Image]
) -> None:
    tried = [0]
    mixed = [0]

    @settings(max_examples=VIEWS, **_SETTINGS)
    @given(
        recipe=recipes(),
        seed=st.integers(0, 2**64 - 1),
        n=_num_samples,
        views=st.integers(1, 64),
        data=st.data(),
        size=_size,
    )
    def fuzz(recipe: Recipe, seed: int, n: int, views: int, data: st.DataObject, size: int) -> None:
        slot = data.draw(st.integers(0, views - 1))
        sample = data.draw(st.one_of(st.integers(0, min(n, 9) - 1), st.integers(0, n - 1)))
        tried[0] += 1
        _check_renders(folder, native, recipe, (seed, n, views, slot, sample), size)
        mixed[0] += decode(seed, slot, sample, n, recipe, views).mix is not None

    try:
        fuzz()
    finally:
        record(ROW, inputs_tried=tried[0], data_lost=0)
    assert 0 < mixed[0] < tried[0]  # both mixed and unmixed views were rendered


# ------------------------------------------------------------------- recipes over whole types
_EDGES = [0.0, -0.0, 5e-324, SCALE_MIN / 2, 1e-9, 1e9, 1e301, 1.7976931348623157e308]
_positive = st.one_of(st.floats(0.0, 1e308), st.floats(0.0, 2.0), st.sampled_from(_EDGES))
_any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(-2.0, 40.0), _positive
)
_any_value = st.one_of(
    _any_float, st.integers(-3, 40), st.integers(), st.none(), st.text(max_size=3)
)
_any_pair = st.one_of(
    st.tuples(_positive, _positive).map(lambda t: (min(t), max(t))),  # ordered, any magnitude
    st.tuples(_any_float, _any_float),
    _any_value,
    st.lists(_any_float, max_size=3),
)
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "scale": _any_pair,
    "ratio": _any_pair,
    "hflip": _any_value,
    "randaug_n": _any_value,
    "randaug_m": _any_value,
    "randaug_mstd": _any_value,
    "randaug_mmax": _any_value,
    "color_jitter": _any_value,
    "erase_prob": _any_value,
    "mixup_alpha": _any_value,
    "cutmix_alpha": _any_value,
    "mix_prob": _any_value,
    "switch_prob": _any_value,
    "stages": st.one_of(st.integers(-2, 5), _any_value),
    "version": st.one_of(st.just(1), _any_value),
    "name": st.one_of(st.text(max_size=4), _any_value),
    "ramp": st.dictionaries(st.sampled_from([*RAMP_KNOBS, "dropout"]), _any_pair, max_size=3),
}


@st.composite
def _wild_recipes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid recipe's dict with one to three fields set to anything of any type."""
    d = draw(recipes()).to_dict()
    for field in draw(st.lists(st.sampled_from(sorted(_FIELDS)), unique=True, min_size=1,
                               max_size=3)):  # fmt: skip
        d[field] = draw(_FIELDS[field])
    return d


def test_recipes_out_of_range_are_refused_at_validation(
    folder: ImageFolder, native: list[Image.Image]
) -> None:
    tried = [0]
    refused = [0]

    @settings(max_examples=WIDE, **_SETTINGS)
    @given(d=_wild_recipes(), seed=st.integers(0, 2**64 - 1), data=st.data())
    def fuzz(d: dict[str, Any], seed: int, data: st.DataObject) -> None:
        tried[0] += 1
        try:
            recipe = Recipe.from_dict(d)
        except ValidationError:  # the typed error (a ValueError); anything else fails here
            refused[0] += 1
            return
        views = data.draw(st.integers(1, 8))
        n = data.draw(st.integers(1, 9))
        key = (
            seed,
            n,
            views,
            data.draw(st.integers(0, views - 1)),
            data.draw(st.integers(0, n - 1)),
        )
        _check_renders(folder, native, recipe, key, 12)

    try:
        fuzz()
    finally:
        record(ROW, inputs_tried=tried[0], data_lost=0)
    assert 0 < refused[0] < tried[0]


@pytest.mark.parametrize(
    "field,value",
    [
        ("scale", (SCALE_MIN / 2, 0.5)),  # below the codec's quantization step
        ("ratio", (1.0, RATIO_RANGE[1] * 10)),  # beyond crop_box's e**20
        ("ratio", (RATIO_RANGE[0] / 10, 1.0)),
        ("ratio", (0.0, 1.0)),
        ("color_jitter", 1e308),  # overflowed the codec's grid quantization
        ("color_jitter", COLOR_JITTER_MAX * 1.5),
        ("mixup_alpha", math.inf),
        ("randaug_mmax", 31.0),
    ],
)
def test_validation_refuses_what_once_crashed_the_renderer(field: str, value: Any) -> None:
    """Out-of-range knobs are refused at validation, also as a ramp's end."""
    with pytest.raises(ValidationError, match=field):
        Recipe.from_dict({"name": "bad", field: value})
    knob = "scale_min" if field == "scale" else field
    if knob in RAMP_KNOBS:
        end = value[0] if isinstance(value, tuple) else value
        with pytest.raises(ValidationError, match=field):
            Recipe.from_dict({"name": "bad", "stages": 2, "ramp": {knob: (0.5, end)}})


def test_views_of_the_bounds_render(folder: ImageFolder, native: list[Image.Image]) -> None:
    """The extreme recipes validation accepts render (the fuzzer's draws need not hit them)."""
    extremes = [
        Recipe(name="tiny crops", scale=(SCALE_MIN, SCALE_MIN), ratio=(RATIO_RANGE[0],) * 2),
        Recipe(name="wide crops", scale=(SCALE_MIN, 1.0), ratio=(RATIO_RANGE[1],) * 2),
        Recipe(
            name="strong",
            randaug_n=16,
            randaug_m=30.0,
            randaug_mmax=30.0,
            randaug_mstd=1.7976931348623157e308,
            color_jitter=COLOR_JITTER_MAX,
            erase_prob=1.0,
            mixup_alpha=1.7976931348623157e308,
            cutmix_alpha=5e-324,
        ),
    ]
    rendered = 0
    for recipe in extremes:
        for sample in range(len(native)):
            _check_renders(folder, native, recipe, (3, len(native), 2, 1, sample), (9, 23))
            rendered += 1
    record(ROW, inputs_tried=rendered, data_lost=0)
