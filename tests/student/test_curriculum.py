import json
import math

import pytest

from student.config import TrainConfig
from student.curriculum import (
    Curriculum,
    Regularizers,
    build_curriculum,
    check_family,
    check_store,
    compute_fraction,
    efficientrain_bandwidth,
    efficientrain_levels,
    progressive_size,
)
from student.train import run_train
from teacher_store.cli import main
from teacher_store.views.recipe import get_recipe
from tests.store_fixtures import student_config


def _store(demo_data, root, recipe: str, views: int):
    from teacher_store.generate import GenerateConfig, run_generate

    out = root / recipe
    cfg = GenerateConfig(
        data=str(demo_data),
        out=str(out),
        views=views,
        topk=10,
        img_size=64,
        batch_size=8,
        chunk_samples=8,
        shard_samples=8,
        shard_views=views,
        workers=0,
        recipe=get_recipe(recipe),
        progress=False,
    )
    assert run_generate(cfg)["complete"]
    return out


@pytest.fixture(scope="module")
def progressive_store(demo_data, tmp_path_factory):
    return _store(demo_data, tmp_path_factory.mktemp("cur"), "efficientnetv2-progressive", 4)


@pytest.fixture(scope="module")
def efficientrain_store(demo_data, tmp_path_factory):
    return _store(demo_data, tmp_path_factory.mktemp("cur"), "efficientrain-weak-to-strong", 3)


def _cfg(store, data, out, **kw) -> TrainConfig:
    return student_config(store, data, out, **kw)


# ---------------------------------------------------------------- pure schedules
def test_progressive_sizes_follow_algorithm_1():
    # S0 = 0.5 Se rounded to 8; S_i = S0 + (Se - S0) i / (M - 1) rounded to 8
    assert [progressive_size(i, 4, 112, 224) for i in range(4)] == [112, 152, 184, 224]
    assert [progressive_size(i, 4, 128, 300) for i in range(4)] == [128, 184, 240, 300]
    assert [progressive_size(i, 4, 16, 32) for i in range(4)] == [16, 22, 26, 32]  # 2 px steps


def test_progressive_epoch_plans_ramp_size_and_regularization():
    cfg = TrainConfig(
        store="s", data="d", model="m", out="o", curriculum="efficientnetv2-progressive"
    )
    assert cfg.view_schedule == "stretch" and cfg.drop_rate == 0.3 and cfg.drop_path == 0.2
    c = build_curriculum(cfg, 224)
    assert c is not None and c.stages == 4 and (c.size_start, c.size_end) == (112, 224)
    assert c.drop_rate == pytest.approx((0.1, 0.3)) and c.drop_path == (0.0, 0.2)
    plans = [c.epoch_plan(e, 8, 8) for e in range(8)]
    assert [p.stage for p in plans] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [p.img_size for p in plans[::2]] == [112, 152, 184, 224]
    for p in plans:
        t = p.stage / 3
        assert p.drop_rate == pytest.approx(0.1 + t * 0.2)
        assert p.drop_path == pytest.approx(t * 0.2)
    assert Curriculum.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_efficientrain_levels_are_the_papers_at_224():
    levels = efficientrain_levels(96, 224)
    assert [b for b, _ in levels] == [96, 160, 224]
    # compute shares 0.2 / 0.4 / 0.4 at costs (B/224)^2 -> step shares (w/c) / sum(w/c)
    w_over_c = [0.2 / (96 / 224) ** 2, 0.4 / (160 / 224) ** 2, 0.4]
    shares = [x / sum(w_over_c) for x in w_over_c]
    assert [s for _, s in levels] == pytest.approx(shares)
    assert sum(s * (b / 224) ** 2 for b, s in levels) == pytest.approx(1 / sum(w_over_c))


def test_efficientrain_bandwidth_is_a_function_of_consumed_compute():
    total, start, full = 2000, 96, 224
    bands = [efficientrain_bandwidth(s, total, start, full) for s in range(total)]
    assert bands == sorted(bands) and bands[0] == 96 and bands[-1] == 224
    fractions = [compute_fraction(s, total, start, full) for s in range(total + 1)]
    assert fractions[0] == 0.0 and fractions[-1] == pytest.approx(1.0)
    assert fractions == sorted(fractions)
    for s, b in enumerate(bands):  # the paper's rule, read at the compute consumed so far
        f = fractions[s]
        assert (
            b == (96 if f < 0.2 - 2e-3 else 160 if f < 0.6 - 2e-3 else 224)
            or math.isclose(f, 0.2, abs_tol=2e-3)
            or math.isclose(f, 0.6, abs_tol=2e-3)
        )
    cfg = TrainConfig(store="s", data="d", model="m", out="o", curriculum="efficientrain")
    c = build_curriculum(cfg, 32)
    assert c is not None and c.size_start == 14 and c.bandwidth(0, 10) == 14
    assert c.epoch_plan(0, 6, 3).img_size == 32  # replay at full size, crop on the device


# ---------------------------------------------------------------- checks
def test_store_and_family_checks_are_clear_errors():
    cfg = TrainConfig(
        store="s", data="d", model="m", out="o", curriculum="efficientnetv2-progressive"
    )
    c = build_curriculum(cfg, 64)
    assert c is not None
    with pytest.raises(ValueError, match=r"store recipe 'default' has 1 stage, curriculum "):
        check_store(c, get_recipe("default").to_dict(), 8, 8)
    with pytest.raises(ValueError, match="--curriculum-stages 3"):
        check_store(c, get_recipe("efficientrain-weak-to-strong").to_dict(), 9, 8)
    backwards = get_recipe("efficientnetv2-progressive").model_copy(
        update={"ramp": {"randaug_m": (15.0, 5.0)}, "randaug_mmax": 15.0}
    )
    with pytest.raises(ValueError, match="weak-to-strong"):
        check_store(c, backwards.to_dict(), 8, 8)
    with pytest.raises(ValueError, match="view slots"):
        check_store(c, get_recipe("efficientnetv2-progressive").to_dict(), 3, 8)
    with pytest.raises(ValueError, match="--epochs 2"):
        check_store(c, get_recipe("efficientnetv2-progressive").to_dict(), 8, 2)
    check_store(c, get_recipe("efficientnetv2-progressive").to_dict(), 8, 8)
    for model in ("efficientformer_l1", "efficientformerv2_s0"):
        with pytest.raises(ValueError, match="changes the input size"):
            check_family(c, model)
    check_family(c, "tiny_vit_5m_224")


def test_config_validation():
    with pytest.raises(ValueError, match="stretch"):
        TrainConfig(
            store="s",
            data="d",
            model="m",
            out="o",
            curriculum="efficientrain",
            view_schedule="wrap",
        )
    with pytest.raises(ValueError, match="unknown curriculum"):
        TrainConfig(store="s", data="d", model="m", out="o", curriculum="fast")
    cfg = TrainConfig(store="s", data="d", model="m", out="o", curriculum="efficientrain")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_regularizers_scale_dropout_and_drop_path():
    from timm.layers import DropPath

    from models import create_student

    model = create_student("tf_efficientnetv2_b0", 10, drop_rate=0.3, drop_path_rate=0.2)
    base = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    regs = Regularizers(model, 0.3, 0.2)
    regs.set(0.1, 0.05)
    assert model.drop_rate == 0.1
    now = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    assert now == pytest.approx([b * 0.25 for b in base]) and max(base) == pytest.approx(0.2, 0.1)
    tiny = create_student("tiny_vit_5m_224", 10, drop_rate=0.3, drop_path_rate=0.2)
    regs = Regularizers(tiny, 0.3, 0.2)
    assert regs.dropouts  # the classifier head's dropout
    regs.set(0.15, 0.0)
    assert all(m.p == 0.15 for m in regs.dropouts)
    assert all(m.drop_prob == 0 for m in tiny.modules() if isinstance(m, DropPath))
    with pytest.raises(ValueError, match="exceed"):
        regs.set(0.5, 0.1)


# ---------------------------------------------------------------- training runs
def test_progressive_run_grows_image_size_as_scheduled(progressive_store, demo_data, tmp_path):
    cfg = _cfg(
        progressive_store, demo_data, tmp_path, epochs=4, curriculum="efficientnetv2-progressive"
    )
    s = run_train(cfg)
    assert s["epoch"] == 3 and math.isfinite(s["loss"])
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["img_size"] for r in records] == [32, 40, 56, 64]
    assert [r["stage"] for r in records] == [0, 1, 2, 3]
    assert [r["slot"] for r in records] == [0, 1, 2, 3]  # stretch: stage i reads slot i
    assert [r["drop_rate"] for r in records] == pytest.approx([0.1, 1 / 6 + 0.0, 7 / 30, 0.3])
    assert [r["drop_path"] for r in records] == pytest.approx([0, 0.2 / 3, 0.4 / 3, 0.2])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (
        saved["view_schedule"] == "stretch" and saved["curriculum"] == "efficientnetv2-progressive"
    )


def test_efficientrain_run_crops_low_frequencies(efficientrain_store, demo_data, tmp_path):
    for mode in ("crop", "downsample"):
        out = tmp_path / mode
        cfg = _cfg(
            efficientrain_store, demo_data, out, epochs=3, curriculum="efficientrain",
            lowfreq_mode=mode,
        )  # fmt: skip
        s = run_train(cfg)
        assert math.isfinite(s["loss"])
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert records[0]["bandwidth_min"] == 28 and records[-1]["bandwidth_max"] == 64
        assert [r["img_size"] for r in records] == [64, 64, 64]
        assert records[-1]["compute_fraction"] == pytest.approx(1.0)


def test_mismatched_store_and_curriculum_is_a_clear_error(small_store, demo_data, tmp_path, capsys):
    with pytest.raises(ValueError, match="store recipe 'default' has 1 stage"):
        run_train(_cfg(small_store, demo_data, tmp_path, epochs=4, curriculum="efficientrain"))
    args = ["train", "--store", str(small_store), "--data", str(demo_data), "--model",
            "tf_efficientnetv2_b0", "--out", str(tmp_path / "r"), "--img-size", "64",
            "--epochs", "4", "--curriculum", "efficientnetv2-progressive"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "curriculum efficientnetv2-progressive needs 4 stages" in err
    assert "--recipe efficientnetv2-progressive" in err and "Traceback" not in err


def test_fixed_size_family_refuses_progressive_resizing(progressive_store, demo_data, tmp_path):
    cfg = _cfg(
        progressive_store, demo_data, tmp_path, epochs=4, img_size=None,
        model="efficientformer_l1", curriculum="efficientnetv2-progressive",
    )  # fmt: skip
    with pytest.raises(ValueError, match="224x224 only"):
        run_train(cfg)
