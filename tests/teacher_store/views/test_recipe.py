import json
import math

import pytest
import yaml
from pydantic import ValidationError

from teacher_store.views.recipe import RAMP_KNOBS, RECIPES, Recipe, get_recipe


def test_defaults_are_tinyvit_style():
    r = get_recipe("default")
    assert r.version == 1 and r.name == "default"
    assert r.scale == (0.08, 1.0) and r.ratio == (3 / 4, 4 / 3) and r.hflip == 0.5
    assert (r.randaug_n, r.randaug_m, r.randaug_mstd) == (2, 9.0, 0.5)
    assert (r.mixup_alpha, r.cutmix_alpha, r.mix_prob, r.switch_prob) == (0.8, 1.0, 1.0, 0.5)
    assert (r.color_jitter, r.erase_prob, r.stages, r.ramp) == (0.0, 0.0, 1, {})


def test_presets():
    assert set(RECIPES) == {
        "default",
        "light",
        "none",
        "digits",
        "efficientnetv2-progressive",
        "efficientrain-weak-to-strong",
    }
    for name, recipe in RECIPES.items():
        assert recipe.name == name
    light = get_recipe("light")
    assert light.randaug_n == 0 and light.mix_prob == 0.0 and light.scale == (0.08, 1.0)
    none = get_recipe("none")
    assert none.scale == (1.0, 1.0) and none.ratio == (1.0, 1.0)
    assert (none.hflip, none.randaug_n, none.mix_prob) == (0.0, 0.0, 0.0)
    digits = get_recipe("digits")
    assert (digits.hflip, digits.randaug_n, digits.mix_prob) == (0.0, 1, 0.0)
    assert digits.scale == (0.5, 1.0)
    env2 = get_recipe("efficientnetv2-progressive")
    assert env2.stages == 4 and env2.cutmix_alpha == 0.0
    assert env2.ramp == {"randaug_m": (5.0, 15.0), "mixup_alpha": (0.0, 0.2)}
    et = get_recipe("efficientrain-weak-to-strong")
    assert et.stages == 3 and et.ramp == {"randaug_m": (0.0, 9.0)} and et.mix_prob == 0.0


def test_stage_formula_with_numbers():
    r = Recipe(name="x", stages=4, ramp={"randaug_m": (2.0, 8.0)})
    # stage = floor(slot * 4 / 10); t = stage / 3; m = 2 + t * 6
    expected_stage = [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert [r.stage_of(s, 10) for s in range(10)] == expected_stage
    for slot, stage in enumerate(expected_stage):
        resolved = r.at_slot(slot, 10)
        assert math.isclose(resolved.randaug_m, 2.0 + stage / 3 * 6.0)
        assert resolved.stages == 1 and resolved.ramp == {}
    # fewer slots than stages: each slot is its own, non-contiguous stage
    assert [r.stage_of(s, 2) for s in range(2)] == [0, 2]
    assert r.at_slot(1, 2).randaug_m == pytest.approx(2.0 + 2 / 3 * 6.0)


def test_efficientnetv2_schedule():
    r = get_recipe("efficientnetv2-progressive")
    ms = [r.at_slot(s, 8).randaug_m for s in range(8)]
    alphas = [r.at_slot(s, 8).mixup_alpha for s in range(8)]
    assert ms == pytest.approx([5, 5, 25 / 3, 25 / 3, 35 / 3, 35 / 3, 15, 15])
    assert alphas == pytest.approx([0, 0, 0.2 / 3, 0.2 / 3, 0.4 / 3, 0.4 / 3, 0.2, 0.2])
    et = get_recipe("efficientrain-weak-to-strong")
    assert [et.at_slot(s, 6).randaug_m for s in range(6)] == pytest.approx([0, 0, 4.5, 4.5, 9, 9])


def test_ramp_rounds_randaug_n_and_moves_scale_min():
    r = Recipe(name="x", stages=3, ramp={"randaug_n": (0.0, 3.0), "scale_min": (0.5, 0.1)})
    assert [r.at_slot(s, 3).randaug_n for s in range(3)] == [0, 2, 3]  # round(1.5) == 2
    assert [r.at_slot(s, 3).scale for s in range(3)] == [(0.5, 1.0), (0.3, 1.0), (0.1, 1.0)]


def test_static_recipe_at_slot_is_itself():
    r = get_recipe("default")
    assert r.at_slot(3, 10) is r


@pytest.mark.parametrize("slot,num_slots", [(-1, 4), (4, 4), (0, 0)])
def test_slot_out_of_range(slot, num_slots):
    with pytest.raises(ValueError, match="slot"):
        get_recipe("default").at_slot(slot, num_slots)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hflip": 1.5}, "hflip"),
        ({"mix_prob": -0.1}, "mix_prob"),
        ({"erase_prob": 2}, "erase_prob"),
        ({"switch_prob": 1.01}, "switch_prob"),
        ({"scale": (0.5, 0.2)}, "scale"),
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.5, 1.5)}, "scale"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"stages": 0}, "stages"),
        ({"randaug_n": -1}, "randaug_n"),
        ({"randaug_m": 12.0}, "randaug_mmax"),
        ({"mixup_alpha": -1.0}, "mixup_alpha"),
        ({"hflip": float("nan")}, "hflip"),
        ({"stages": 2, "ramp": {"dropout": (0, 1)}}, "dropout"),
        ({"ramp": {"randaug_m": (1, 2)}}, "stages"),
        ({"stages": 2, "ramp": {"mix_prob": (0.5, 1.5)}}, "mix_prob"),
        ({"stages": 2, "ramp": {"scale_min": (0.5, 1.2)}}, "scale"),
        ({"version": 2}, "version"),
        ({"sharpness": 1.0}, "sharpness"),
    ],
)
def test_validation_names_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Recipe(name="bad", **kwargs)


def test_frozen_and_hashable():
    r = get_recipe("default")
    with pytest.raises(ValidationError):
        r.hflip = 0.0  # type: ignore[misc]
    env2 = get_recipe("efficientnetv2-progressive")
    same = Recipe.from_dict(env2.to_dict())
    assert len({r, env2, same}) == 2 and hash(same) == hash(env2)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_dict_round_trip_is_json_safe(name):
    r = get_recipe(name)
    d = json.loads(json.dumps(r.to_dict()))
    assert Recipe.from_dict(d) == r
    assert set(d["ramp"]) <= set(RAMP_KNOBS)


def test_load_from_json_and_yaml(tmp_path):
    r = Recipe(name="mine", randaug_m=7.0, stages=2, ramp={"erase_prob": (0.0, 0.25)})
    (tmp_path / "r.json").write_text(json.dumps(r.to_dict()))
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(r.to_dict()))
    assert get_recipe(str(tmp_path / "r.json")) == r
    assert get_recipe(str(tmp_path / "r.yaml")) == r
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        get_recipe(str(tmp_path / "bad.yaml"))
    with pytest.raises(FileNotFoundError):
        get_recipe(str(tmp_path / "missing.json"))


def test_unknown_name_lists_presets():
    with pytest.raises(ValueError, match="efficientnetv2-progressive"):
        get_recipe("autoaugment")
