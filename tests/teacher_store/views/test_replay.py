import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from teacher_store.views.codec import RANDAUG_OPS, AugParams, ViewParams, crop_box, decode
from teacher_store.views.recipe import Recipe, get_recipe
from teacher_store.views.replay import render_aug, render_view, view_to_float

REPO = Path(__file__).resolve().parents[3]
HEAVY = Recipe(name="heavy", color_jitter=0.4, erase_prob=0.5, randaug_n=3)
NUM_SLOTS = 4


def _photos(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.suffix in (".png", ".jpg"))


def _load(path: Path | str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _render(images: list[Image.Image], slot: int, i: int, recipe: Recipe, size: int):
    params = decode(17, slot, i, len(images), recipe, NUM_SLOTS)
    partner = images[params.mix.partner] if params.mix else None
    return render_view(images[i], params, size, partner=partner)


def _digests(root: str) -> list[str]:
    """sha256 of a fixed set of views of the demo photos (also run in a subprocess)."""
    images = [_load(p) for p in _photos(Path(root))]
    out = []
    for recipe in (get_recipe("default"), HEAVY):
        for slot in range(2):
            for i in range(0, len(images), 2):
                view = _render(images, slot, i, recipe, 96)
                out.append(hashlib.sha256(view.numpy().tobytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def images(demo_data):
    return [_load(p) for p in _photos(demo_data)]


@pytest.fixture(scope="module")
def coffee(demo_data):
    return _load(demo_data / "coffee/coffee.png")


@pytest.fixture(scope="module")
def cat(demo_data):
    return _load(demo_data / "cat/chelsea.png")


def _plain(**kw) -> AugParams:
    base = {"area": 0.4, "log_ratio": 0.2, "cx": 0.3, "cy": 0.7, "flip": True}
    return AugParams(**{**base, **kw})


def _view(aug: AugParams) -> ViewParams:
    return ViewParams(seed=0, slot=0, sample=0, base=aug)


def test_dtype_and_shape(coffee, cat):
    v = decode(1, 0, 0, 2, get_recipe("default"), 1)
    out = render_view(coffee, v, 224, partner=cat)
    assert out.dtype == torch.uint8 and out.shape == (3, 224, 224) and out.is_contiguous()
    out = render_view(coffee, v, (96, 128), partner=cat)
    assert out.shape == (3, 96, 128)
    gray = coffee.convert("L")
    assert render_view(gray, _view(_plain()), 32).shape == (3, 32, 32)


def test_errors(coffee):
    v = decode(1, 0, 0, 2, Recipe(name="mix", mixup_alpha=0.0), 1)
    assert v.mix is not None
    with pytest.raises(ValueError, match="partner"):
        render_view(coffee, v, 64)
    for size in (7, (64, 4), 4097, (64, 100000)):  # 8..4096 px a side: never a huge allocation
        with pytest.raises(ValueError, match="must be 8 to 4096 px a side"):
            render_view(coffee, _view(_plain()), size)
    with pytest.raises(ValueError, match="resample"):
        render_view(coffee, _view(_plain()), 64, resample="magic")


def test_identical_bytes_in_another_process(demo_data):
    here = _digests(str(demo_data))
    code = (
        "import json, sys; from tests.teacher_store.views.test_replay import _digests;"
        "print(json.dumps(_digests(sys.argv[1])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(demo_data)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    there = json.loads(proc.stdout.strip().splitlines()[-1])
    assert here == there and len(set(here)) == len(here)


class _Views(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return 14

    def __getitem__(self, idx: int) -> torch.Tensor:
        n = len(self.paths)
        params = decode(5, 1, idx % n, n, HEAVY, NUM_SLOTS)
        partner = _load(self.paths[params.mix.partner]) if params.mix else None
        return render_view(_load(self.paths[idx % n]), params, 64, partner=partner)


def test_dataloader_workers_and_batch_size_do_not_matter(demo_data):
    data = _Views(_photos(demo_data))
    runs = []
    for workers, batch in ((0, 1), (2, 7), (0, 7), (2, 1)):
        loader = DataLoader(data, batch_size=batch, num_workers=workers, shuffle=False)
        runs.append(torch.cat(list(loader)))
    assert runs[0].shape == (14, 3, 64, 64)
    for other in runs[1:]:
        assert torch.equal(runs[0], other)


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _down(view: torch.Tensor, size: int) -> np.ndarray:
    img = Image.fromarray(view.permute(1, 2, 0).numpy())
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC))


def test_same_view_at_any_size(coffee):
    aug = _plain()
    small = render_view(coffee, _view(aug), 64).permute(1, 2, 0).numpy()
    big = render_view(coffee, _view(aug), 224)
    assert _mad(_down(big, 64), small) < 2.0
    shifted = render_view(coffee, _view(_plain(cx=0.5)), 64).permute(1, 2, 0).numpy()
    assert _mad(shifted, small) > 4 * _mad(_down(big, 64), small)  # the bound is meaningful


@pytest.mark.parametrize(
    "op", [("Rotate", 8.0), ("ShearX", -6.0), ("ShearY", 4.0), ("TranslateXRel", 5.0)]
)
def test_geometric_ops_are_the_same_at_any_size(coffee, op):
    aug = _plain(ops=(op, ("TranslateYRel", -3.0)))
    small = render_view(coffee, _view(aug), 64).permute(1, 2, 0).numpy()[2:-2, 2:-2]
    big = _down(render_view(coffee, _view(aug), 224), 64)[2:-2, 2:-2]
    # affine ops resample bilinearly at each size (a little blur), but the geometry agrees:
    # the error is a fraction of what a one-pixel misalignment costs
    assert _mad(big, small) < 3.5
    for axis in (0, 1):
        assert _mad(big, small) < 0.35 * _mad(big, np.roll(small, 1, axis=axis))


def test_crop_geometry(coffee):
    # 600x400 photo, area 1/6 square: a 200x200 box at (cx * 400, cy * 200) = (200, 50)
    aug = AugParams(area=1 / 6, log_ratio=0.0, cx=0.5, cy=0.25, flip=False)
    assert crop_box(aug, 600, 400) == pytest.approx((200.0, 50.0, 400.0, 250.0))
    view = render_view(coffee, _view(aug), 100).permute(1, 2, 0).numpy()
    manual = coffee.crop((200, 50, 400, 250)).resize((100, 100), Image.Resampling.BICUBIC)
    assert _mad(view, np.asarray(manual)) < 0.5
    flipped = render_view(coffee, _view(AugParams(**{**aug.__dict__, "flip": True})), 100)
    assert np.array_equal(flipped.permute(1, 2, 0).numpy(), view[:, ::-1])
    whole = render_view(coffee, decode(0, 0, 0, 1, get_recipe("none"), 1), 64)
    expected = coffee.resize((64, 64), Image.Resampling.BICUBIC)
    assert np.array_equal(whole.permute(1, 2, 0).numpy(), np.asarray(expected))


def _find(recipe: Recipe, mode: str) -> ViewParams:
    for i in range(100):
        v = decode(3, 0, i % 2, 2, recipe, 1)
        if v.mix is not None and v.mix.mode == mode and 0.2 < v.mix.lam < 0.8:
            return v
    raise AssertionError("no such view")


def test_mixup_is_the_formula(coffee, cat):
    v = _find(Recipe(name="mixup", cutmix_alpha=0.0), "mixup")
    assert v.mix is not None
    size = (80, 96)
    mixed = render_view(coffee, v, size, partner=cat).permute(1, 2, 0).numpy()
    a = render_view(coffee, _view(v.base), size).permute(1, 2, 0).numpy()
    b = render_aug(cat, v.mix.partner_aug, size)
    assert not np.array_equal(mixed, a) and not np.array_equal(mixed, b)
    lam = np.float32(v.mix.lam)
    expected = np.rint(a.astype(np.float32) * lam + b.astype(np.float32) * (np.float32(1) - lam))
    assert np.array_equal(mixed, expected.astype(np.uint8))
    y, x = 40, 50  # one pixel by hand, in float64
    for c in range(3):
        exact = v.mix.lam * float(a[y, x, c]) + (1 - v.mix.lam) * float(b[y, x, c])
        assert abs(float(mixed[y, x, c]) - exact) <= 0.5 + 1e-4


def test_cutmix_pastes_the_partner_inside_the_box(coffee, cat):
    v = _find(Recipe(name="cutmix", mixup_alpha=0.0), "cutmix")
    assert v.mix is not None and v.mix.box is not None
    mixed = render_view(coffee, v, 100, partner=cat).permute(1, 2, 0).numpy()
    a = render_view(coffee, _view(v.base), 100).permute(1, 2, 0).numpy()
    b = render_aug(cat, v.mix.partner_aug, 100)
    left, top, right, bottom = (round(c * 100) for c in v.mix.box)
    inside = np.zeros((100, 100), bool)
    inside[top:bottom, left:right] = True
    assert inside.any() and not inside.all()
    assert np.array_equal(mixed[inside], b[inside]) and np.array_equal(mixed[~inside], a[~inside])
    assert abs(inside.mean() - (1 - v.mix.lam)) < 0.03


@pytest.mark.parametrize("op", RANDAUG_OPS)
def test_every_op_runs_and_changes_something(op, cat):
    base = _plain(flip=False)
    plain = render_view(cat, _view(base), 48)
    changed = 0
    for mag in (-10.0, 0.0, 4.0, 10.0, 15.0):
        out = render_view(cat, _view(_plain(flip=False, ops=((op, mag),))), 48)
        assert out.shape == (3, 48, 48) and out.dtype == torch.uint8
        changed += not torch.equal(out, plain)
    assert changed >= 1


def test_jitter_and_erase(cat):
    aug = _plain(jitter=(1.3, 0.8, 1.2), erase=(0.25, 0.5, 0.75, 1.0, 10, 200, 30))
    out = render_view(cat, _view(aug), 64).permute(1, 2, 0).numpy()
    assert (out[32:64, 16:48] == [10, 200, 30]).all()
    assert not (out[0:32] == [10, 200, 30]).all(axis=-1).any()
    plain = render_view(cat, _view(_plain()), 64).permute(1, 2, 0).numpy()
    assert not np.array_equal(out[:32], plain[:32])  # jitter changed the rest


def test_view_to_float():
    batch = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = view_to_float(batch, (0.5, 0.5, 0.2), (0.5, 0.25, 0.1))
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2, 2)
    assert out[0, :, 0, 0].tolist() == pytest.approx([-1.0, 2.0, 0.0], abs=1e-6)
    assert view_to_float(batch[0], (0.5,) * 3, (0.5,) * 3).shape == (3, 2, 2)
    with pytest.raises(ValueError):
        view_to_float(batch.float(), (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError):
        view_to_float(batch, (0.5,) * 2, (0.5,) * 2)


def test_views_of_real_photos_are_distinct(images):
    views = [_render(images, 0, i, get_recipe("default"), 32) for i in range(len(images))]
    digests = {hashlib.sha256(v.numpy().tobytes()).hexdigest() for v in views}
    assert len(digests) == len(images)


# -- Replayer: the one replay entry point -----------------------------------------------------

MIXED = Recipe(name="mixed", mix_prob=0.5, color_jitter=0.4, erase_prob=0.5)


def _attrs(folder, size: int = 48, recipe: Recipe = MIXED, views: int = 2):
    """Store attrs for ``folder`` (store seed 7) replaying ``recipe`` at ``size``."""
    from tests.store_fixtures import make_attrs

    a = make_attrs(num_samples=len(folder), views=views, chunk=4, shard=8, shard_views=1)
    teacher = {**a.teacher, "input_size": [3, size, size]}
    return a.model_copy(
        update={
            "teacher": teacher,
            "recipe": recipe.to_dict(),
            "dataset": folder.fingerprint().to_dict(),
        }
    )


class _CountingFolder:
    """An ImageFolder that records every decode (picklable: it travels with a Replayer)."""

    def __init__(self, folder) -> None:
        self.folder, self.loads = folder, []

    def label(self, i: int) -> int:
        return self.folder.label(i)

    def where(self, i: int) -> str:
        return self.folder.where(i)

    def load(self, i: int):
        self.loads.append(i)
        return self.folder.load(i)


@pytest.fixture(scope="module")
def folder(demo_data):
    from teacher_store.images.dataset import ImageFolder

    return ImageFolder.scan(demo_data)


def test_replayer_gives_the_render_view_pixels(folder):
    """Every view of every sample, at the canonical size and another: the old path's bytes."""
    from teacher_store.views.replay import Replayer

    a = _attrs(folder)
    replay = Replayer(folder, a)
    images = [folder.load(i) for i in range(len(folder))]
    modes = set()
    for slot in range(a.views):
        for i in range(len(folder)):
            params = decode(a.store_seed, slot, i, a.num_samples, MIXED, a.views)
            partner = images[params.mix.partner] if params.mix else None
            for size in (None, (40, 56)):
                want = render_view(images[i], params, size or 48, partner=partner)
                got = replay.render(slot, i, size)
                assert torch.equal(got.pixels, want), (slot, i, size)
            assert got.params == params and got.label == folder.labels[i]
            if params.mix is None:
                assert (got.partner, got.partner_label, got.lam) == (None, got.label, 1.0)
            else:
                p = params.mix.partner
                assert (got.partner, got.lam) == (p, params.mix.lam)
                assert got.partner_label == folder.labels[p]
            modes.add(params.mix and params.mix.mode)
    assert modes == {None, "mixup", "cutmix"}


def test_replayer_cache_is_a_bounded_lru_and_pickling_drops_it(folder):
    import pickle

    from teacher_store.views.replay import Replayer

    counting = _CountingFolder(folder)
    replay = Replayer(counting, _attrs(folder), cache_size=2)  # type: ignore[arg-type]
    for i in (0, 1, 0, 2, 0, 1):  # 2 evicts 1 (least recently used), so 1 loads again
        replay.image(i)
    assert counting.loads == [0, 1, 2, 1]
    before = len(counting.loads)
    for _ in range(3):
        replay.render(0, 5)
    view = replay.render(0, 5)
    assert len(counting.loads) - before == (2 if view.partner is not None else 1)

    copy = pickle.loads(pickle.dumps(replay))
    copy.folder.loads.clear()
    assert torch.equal(copy.render(0, 5).pixels, view.pixels)
    assert copy.folder.loads == [5] + ([view.partner] if view.partner is not None else [])

    uncached = Replayer(counting, _attrs(folder), cache_size=0)  # type: ignore[arg-type]
    counting.loads.clear()
    uncached.image(3)
    uncached.image(3)
    assert counting.loads == [3, 3]


def test_replayer_names_the_unreadable_sample_and_remembers_it(demo_data, tmp_path):
    import pickle
    import shutil

    from teacher_store.images.dataset import CorruptImageError, ImageFolder
    from teacher_store.views.replay import Replayer, UnreadableSampleError

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    (data / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage" * 20)
    counting = _CountingFolder(ImageFolder.scan(data))
    bad = counting.folder.paths.index("cat/broken.jpg")
    with pytest.raises(CorruptImageError) as plain:
        counting.folder.load(bad)
    attrs = _attrs(counting.folder, views=8, recipe=get_recipe("default"))  # every view mixed
    replay = Replayer(counting, attrs)  # type: ignore[arg-type]
    with pytest.raises(UnreadableSampleError) as own:
        replay.render(0, bad)
    assert own.value.sample == bad and str(own.value) == str(plain.value)
    n = len(counting.folder)
    mixes = {(slot, i): replay.params(slot, i).mix for slot in range(8) for i in range(n)}
    slot, user = next(key for key, m in mixes.items() if m is not None and m.partner == bad)
    with pytest.raises(UnreadableSampleError) as partner:
        replay.render(slot, user)
    assert partner.value.sample == bad and str(partner.value) == str(plain.value)
    assert counting.loads.count(bad) == 1  # a corrupt file is not decoded again
    back = pickle.loads(pickle.dumps(partner.value))
    assert isinstance(back, UnreadableSampleError) and back.sample == bad


def test_student_generation_and_show_replay_the_same_pixels(folder, tmp_path):
    """The same (slot, sample) through the student dataset, generation's views and show's PNG."""
    from student.data import ReplayDataset
    from teacher_store.show import show_view
    from teacher_store.store.arrays import LocalStore, shard_units
    from teacher_store.views.replay import Replayer
    from teacher_store.views.unit_views import UnitViews
    from tests.store_fixtures import build_store

    a = _attrs(folder, size=64, recipe=get_recipe("default"))
    store = build_store(tmp_path / "store", a)  # random targets; show only reads its top-5
    valid = LocalStore(store).read_block
    student = ReplayDataset(folder, a, 64)
    units = shard_units(a)
    generation = UnitViews(folder, a, get_recipe("default"), units)
    replay = Replayer(folder, a)
    keys = [(0, 0), (1, 3), (0, 9), (1, 16)]
    shown = 0
    for slot, sample in keys:
        params = decode(a.store_seed, slot, sample, a.num_samples, get_recipe("default"), a.views)
        assert params.mix is not None  # the default recipe mixes every view
        partner = folder.load(params.mix.partner)
        want = render_view(folder.load(sample), params, 64, partner=partner)  # the old path
        assert torch.equal(replay.render(slot, sample).pixels, want)
        assert torch.equal(student[(slot, sample)]["image"], want)
        k = next(k for k in range(len(generation)) if (slot, sample) in generation.step(k)[1])
        item = generation[k]
        assert item.ok.all() and torch.equal(item.views[item.keys.index((slot, sample))], want)
        if valid(slot, sample, sample + 1).valid[0]:
            png = tmp_path / f"{slot}-{sample}.png"
            show_view(str(store), str(folder.root), sample, slot, str(png))
            with Image.open(png) as im:
                drawn = np.asarray(im.convert("RGB"))[: 4 * 64 : 4, : 4 * 64 : 4]  # 4x nearest
            assert np.array_equal(drawn, want.permute(1, 2, 0).numpy()), (slot, sample)
            shown += 1
    assert shown >= 2  # views the random targets mark invalid cannot be shown


def test_render_many_decodes_each_image_once_with_the_render_bytes(folder):
    """A batch holding both views of each pair: one decode per image, render()'s bytes."""
    from student.data import ReplayDataset
    from student.sampler import mix_groups, pair_order
    from teacher_store.views.pairing import slot_partners
    from teacher_store.views.replay import Replayer

    a = _attrs(folder, recipe=get_recipe("default"))  # mixes every view
    n, slot = len(folder), 1
    groups = mix_groups(slot_partners(a.store_seed, slot, n))
    order, _ = pair_order(0, 0, np.arange(n), groups, 1024, 1)
    keys = [(slot, int(s)) for s in order]
    counting = _CountingFolder(folder)
    many = Replayer(counting, a, cache_size=0).render_many(keys, 40)  # type: ignore[arg-type]
    assert sorted(counting.loads) == list(range(n))  # each image decoded once
    one = Replayer(folder, a)
    for (s, i), view in zip(keys, many, strict=True):
        want = one.render(s, i, 40)
        assert torch.equal(view.pixels, want.pixels), i
        assert (view.params, view.partner_label, view.lam) == (
            want.params,
            want.partner_label,
            want.lam,
        )
    dataset = ReplayDataset(counting, a, 40)  # type: ignore[arg-type]
    counting.loads.clear()
    items = dataset.__getitems__(keys[:6])
    assert len(counting.loads) <= 7  # 3 pairs (or 2 and a triple's two): no partner re-decodes
    assert all(torch.equal(x["image"], v.pixels) for x, v in zip(items, many, strict=False))
    assert torch.equal(dataset[keys[2]]["image"], many[2].pixels)


def test_a_codec_1_store_is_refused_with_one_line(tmp_path):
    from teacher_store.store.arrays import LocalStore
    from tests.store_fixtures import build_store, make_attrs

    old = build_store(
        tmp_path / "old", make_attrs(num_samples=8).model_copy(update={"codec_version": 1})
    )
    with pytest.raises(
        ValueError, match="view codec version 1, this distill replays version 2"
    ) as e:
        LocalStore(old)
    assert "\n" not in str(e.value)


def test_draft_decode_is_deterministic_close_and_smaller(folder):
    """JPEG draft mode: same bytes in any batch, near the full decode, a reduced decode."""
    from teacher_store.views.codec import AugParams
    from teacher_store.views.replay import Replayer, draft_rule

    jpegs = [i for i, p in enumerate(folder.paths) if p.endswith(".jpg")]
    assert jpegs
    whole = AugParams(area=1.0, log_ratio=0.0, cx=0.5, cy=0.5, flip=False)
    rule = draft_rule(whole, 48)
    assert rule(640, 427) == (80, 53)  # 1/8: a 427 px tall crop still covers 48 px
    assert rule(100, 100) == (50, 50)  # 1/2 leaves 50 px >= 48
    assert draft_rule(whole, 60)(100, 100) is None  # below 2x the output: a full decode
    assert draft_rule(whole, 40)(100, 100) == (50, 50)
    img = folder.load(jpegs[0], draft=rule)
    full = folder.load(jpegs[0])
    assert img.width * 4 < full.width  # decoded at 1/8 scale

    a = _attrs(folder, recipe=get_recipe("default"))
    drafted = Replayer(folder, a, cache_size=0, draft=True)
    plain = Replayer(folder, a)
    keys = [(0, i) for i in range(len(folder))]
    many = drafted.render_many(keys, 32)
    diffs = []
    for k, view in zip(keys, many, strict=True):
        assert torch.equal(view.pixels, drafted.render(*k, 32).pixels)  # alone = in a batch
        diffs.append((view.pixels.float() - plain.render(*k, 32).pixels.float()).abs().mean())
    assert any(d > 0 for d in diffs)  # some views did decode at a reduced scale
    assert max(diffs) < 12  # and stay close to the full decode (0..255 levels)
