import json

import pytest

from student.config import TrainConfig, active_regularizers, load_train_config, resolve_recipe
from student.recipes import (
    RECIPES,
    apply_presets,
    resnet_rs_drop_path,
    resnet_rs_weight_decay,
)
from student.train import run_train
from teacher_store.cli import main
from teacher_store.views.recipe import get_recipe

_BASE = dict(store="s", data="d", model="m", out="o")


def test_resnet_rs_preset_values():
    cfg = TrainConfig(**_BASE, recipe="resnet-rs", batch_size=128)
    assert cfg.opt == "sgd" and cfg.momentum == 0.9 and cfg.sched == "cosine"
    assert cfg.label_smoothing == 0.1 and cfg.drop_rate == 0.25
    assert cfg.ema and cfg.ema_decay == 0.9999 and cfg.ema_warmup
    assert cfg.lr == pytest.approx(0.1 * 128 / 256)
    plain = TrainConfig(**_BASE)
    assert plain.opt == "adamw" and plain.drop_rate == 0.0 and plain.recipe is None


def test_explicit_values_override_the_preset():
    cfg = TrainConfig(**_BASE, recipe="resnet-rs", lr=0.5, opt="adamw", drop_rate=0.0)
    assert (cfg.lr, cfg.opt, cfg.drop_rate) == (0.5, "adamw", 0.0)
    assert cfg.label_smoothing == 0.1  # the rest of the preset stays
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # a saved config round-trips unchanged


def test_yaml_and_flags_override_the_preset(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("recipe: resnet-rs\nema_decay: 0.999\nmomentum: 0.8\n")
    cfg = load_train_config(str(y), {**_BASE, "momentum": 0.95, "lr": None, "ema": None})
    assert cfg.recipe == "resnet-rs" and cfg.ema_decay == 0.999 and cfg.momentum == 0.95
    assert cfg.ema is True and cfg.opt == "sgd"  # flags left unset (None) keep the preset
    with pytest.raises(ValueError, match="unknown training recipe"):
        load_train_config(None, {**_BASE, "recipe": "resnet-x"})


def test_curriculum_defaults_sit_between_recipe_and_explicit_values():
    merged = apply_presets({"recipe": "resnet-rs", "curriculum": "efficientnetv2-progressive"})
    assert merged["drop_rate"] == 0.3 and merged["view_schedule"] == "stretch"
    assert merged["opt"] == "sgd"
    assert apply_presets({"curriculum": "efficientrain", "drop_rate": 0.1})["drop_rate"] == 0.1
    assert set(RECIPES) == {"resnet-rs"}


def test_weight_decay_and_stochastic_depth_rules():
    assert resnet_rs_weight_decay(0) == resnet_rs_weight_decay(1) == 1e-4
    assert resnet_rs_weight_decay(2) == resnet_rs_weight_decay(5) == 4e-5
    assert resnet_rs_drop_path(5_000_000) == 0.0
    assert resnet_rs_drop_path(100_000_000) == 0.1 and resnet_rs_drop_path(200_000_000) == 0.2
    with pytest.raises(ValueError, match="regularizers"):
        resnet_rs_weight_decay(-1)


def test_resolution_at_train_start():
    cfg = TrainConfig(**_BASE, recipe="resnet-rs")
    default, light = get_recipe("default").to_dict(), get_recipe("light").to_dict()
    aligned, notes = resolve_recipe(cfg, light, True, 5_000_000)
    assert aligned.hard_label_weight == 0.5 and aligned.drop_path == 0.0
    assert active_regularizers(aligned, light) == ["dropout", "label smoothing"]
    assert aligned.weight_decay == 4e-5
    assert any("no RandAugment" in n for n in notes)
    kd_only, notes = resolve_recipe(cfg, light, False, 5_000_000)
    assert kd_only.hard_label_weight == 0.0 and any("KD-only" in n for n in notes)
    assert kd_only.weight_decay == 1e-4  # dropout alone
    both, _ = resolve_recipe(cfg, default, False, 5_000_000)
    assert active_regularizers(both, default)[1:] == ["RandAugment (store)", "MixUp/CutMix (store)"]
    assert both.weight_decay == 4e-5
    explicit = TrainConfig(**_BASE, recipe="resnet-rs", weight_decay=0.01, hard_label_weight=0.0)
    kept, _ = resolve_recipe(explicit, default, True, 200_000_000)
    assert kept.weight_decay == 0.01 and kept.hard_label_weight == 0.0 and kept.drop_path == 0.2
    plain = TrainConfig(**_BASE)
    assert resolve_recipe(plain, default, True, 1) == (plain, [])


def test_resnet_rs_run_on_a_store(small_store, demo_data, tmp_path, capsys):
    args = ["train", "--store", str(small_store), "--data", str(demo_data), "--model",
            "tf_efficientnetv2_b0", "--out", str(tmp_path), "--img-size", "64", "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--quiet", "--recipe", "resnet-rs",
            "--momentum", "0.8"]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "KD-only" in err  # the ImageNet teacher's classes are not the demo folders
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["opt"] == "sgd" and saved["momentum"] == 0.8 and saved["ema_decay"] == 0.9999
    assert saved["weight_decay"] == 4e-5  # dropout + the store's RandAugment + MixUp/CutMix
    assert saved["hard_label_weight"] == 0.0 and saved["drop_path"] == 0.0
    # resuming with the same flags resolves to the same config
    cfg = load_train_config(None, {
        "store": str(small_store), "data": str(demo_data), "model": "tf_efficientnetv2_b0",
        "out": str(tmp_path), "img_size": 64, "epochs": 1, "batch_size": 4, "workers": 0,
        "progress": False, "recipe": "resnet-rs", "momentum": 0.8, "resume": True,
    })  # fmt: skip
    run_train(cfg)  # no "options changed since the checkpoint" error
