"""`distill scale`: the scaling rules, the concrete configs, measured FLOPs/activations, the CLI."""

import json
import math
import re
import subprocess
import sys

import pytest
import timm
import torch

from models import ScaledConfig, build_scaled, measure, rule_multipliers, scale_config
from teacher_store.cli import main

S_VALUES = (2, 4, 8)
ALPHAS = (1 / 3, 0.8, 1.0)
RES = 64  # small base resolution for the measured grid


def count(cfg, res=None):
    """torch's counts (params, FLOPs, activations) of cfg's model, built on the meta device."""
    return measure(build_scaled(cfg, 1000, device="meta"), res or cfg.resolution, ())


# ----------------------------------------------------------------------------- the pure rule


@pytest.mark.parametrize("s", [0.25, 0.5, 1.0, 2.0, 3.7, 4.0, 8.0, 100.0])
def test_fast_rule_multiplies_flops_by_s_for_every_alpha(s):
    for alpha in [i / 20 for i in range(21)] + [1 / 3]:
        d, w, r = rule_multipliers(s, alpha)
        assert d * w**2 * r**2 == pytest.approx(s, rel=1e-12)
        assert d == pytest.approx(s ** ((1 - alpha) / 2), rel=1e-12)
        assert w == pytest.approx(s ** (alpha / 2), rel=1e-12)
        assert r == pytest.approx(s ** ((1 - alpha) / 4), rel=1e-12)


def test_alpha_one_is_width_only_and_one_third_is_uniform():
    for s in S_VALUES:
        d, w, r = rule_multipliers(s, 1.0)
        assert (d, r) == (1.0, 1.0)
        assert w == pytest.approx(math.sqrt(s))
        d, w, r = rule_multipliers(s, 1 / 3)
        # each of depth, width² and resolution² takes the same share s^(1/3) of the FLOPs
        for share in (d, w**2, r**2):
            assert share == pytest.approx(s ** (1 / 3), rel=1e-12)
    assert rule_multipliers(2.0) == rule_multipliers(2.0, 0.8)  # the default alpha


def test_resnet_rs_rule_grows_resolution_slowly_and_the_rest_goes_to_depth():
    for s in S_VALUES:
        d, w, r = rule_multipliers(s, None, "resnet-rs")
        assert r == pytest.approx(s ** (1 / 8))
        assert (d, w) == (pytest.approx(s**0.75), 1.0)
        d, w, r = rule_multipliers(s, None, "resnet-rs", "short")
        assert (d, w, r) == (1.0, pytest.approx(s ** (3 / 8)), pytest.approx(s ** (1 / 8)))
        assert d * w**2 * r**2 == pytest.approx(s)
        # slower than fast scaling at uniform alpha, and than EfficientNet's s^0.2
        assert r < rule_multipliers(s, 1 / 3)[2] < s**0.2


# -------------------------------------------------------------------- concrete configs (pure)


def test_s_one_is_the_base_and_the_build_equals_timms_registered_model():
    cfg = scale_config("efficientnetv2", 1)
    assert cfg.base == "efficientnetv2_rw_t" and cfg.resolution == 224
    assert cfg.depths == cfg.base_depths == (2, 4, 4, 6, 9, 14)
    assert cfg.widths == cfg.base_widths == (24, 40, 48, 104, 128, 208)
    ours = count(cfg, RES)
    with torch.device("meta"):
        ref_model = timm.create_model("efficientnetv2_rw_t", pretrained=False)
    ref = measure(ref_model, RES, ())
    assert (ours["params"], ours["flops"]) == (ref["params"], ref["flops"])
    assert ours["flops"] == pytest.approx(measure(build_scaled(cfg), RES, ())["flops"])  # CPU

    tv = scale_config("tiny_vit", 1)  # native 224: timm's windows and heads
    assert tv.window_sizes == (7, 7, 14, 7) and tv.num_heads == (2, 4, 5, 10)
    with torch.device("meta"):
        ref_tv = timm.create_model("tiny_vit_5m_224", pretrained=False, num_classes=1000)
    assert count(tv)["params"] == sum(p.numel() for p in ref_tv.parameters())


def test_built_models_have_the_configs_depths_and_widths():
    cfg = scale_config("efficientnetv2", 4, 1 / 3, resolution=RES)
    model = build_scaled(cfg, 10, device="meta")
    assert tuple(len(stage) for stage in model.blocks) == cfg.depths
    outs = []
    for stage in model.blocks:
        last = stage[-1]
        conv = getattr(last, "conv_pwl", None) or last.conv
        outs.append(conv.out_channels)
    assert tuple(outs) == cfg.widths
    tv = scale_config("tiny_vit", 4, 0.8, resolution=96)
    model = build_scaled(tv, 10)  # real weights: it must run
    assert tuple(len(st.blocks) for st in model.stages) == tv.depths
    assert model.feature_info[-1]["num_chs"] == tv.widths[-1]
    assert tuple(f["num_chs"] for f in model.feature_info) == tv.widths
    assert all(w % 32 == 0 for w in tv.widths[1:])  # whole 32-wide heads
    assert model(torch.randn(1, 3, tv.resolution, tv.resolution)).shape == (1, 10)


def test_configs_are_integral_and_hit_the_flops_target_analytically():
    for family, res in (("efficientnetv2", 128), ("tiny_vit", 128)):
        for s in (0.5, *S_VALUES, 16):
            for alpha in ALPHAS:
                cfg = scale_config(family, s, alpha, resolution=res)
                assert all(isinstance(d, int) and d >= 1 for d in cfg.depths)
                # scaling down hits the channel floor (8) of timm's rounding: looser there
                assert cfg.est_flops_ratio == pytest.approx(s, rel=0.031 if s >= 1 else 0.15)
                if alpha == 1.0:  # width only: depth and resolution untouched
                    assert (cfg.depths, cfg.resolution) == (cfg.base_depths, res)
            rs = scale_config(family, 8, None, "resnet-rs", resolution=res)
            assert rs.est_flops_ratio == pytest.approx(8, rel=0.031)
            assert rs.eff_depth_mult > 3 and rs.resolution <= res * 8 ** (1 / 8) + 32


def test_scaled_config_dict_round_trip():
    for cfg in (
        scale_config("efficientnetv2", 4, 0.8, resolution=128),
        scale_config("tiny_vit", 2, None, "resnet-rs", regime="short"),
    ):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert d["version"] == 1
        assert ScaledConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="version 99"):
        ScaledConfig.from_dict({**cfg.to_dict(), "version": 99})
    with pytest.raises(ValueError, match="bogus"):
        ScaledConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="'nope'"):
        ScaledConfig.from_dict({**cfg.to_dict(), "family": "nope"})
    with pytest.raises(ValueError, match=r"depths must be 4 integers >= 1, got \(2, 0, 6, 2\)"):
        ScaledConfig.from_dict({**cfg.to_dict(), "depths": [2, 0, 6, 2]})
    with pytest.raises(ValueError, match="got -1"):
        ScaledConfig.from_dict({**cfg.to_dict(), "s": -1})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(family="efficientnetv2", s=0), "got 0"),
        (dict(family="efficientnetv2", s=-2), "got -2"),
        (dict(family="efficientnetv2", s=float("nan")), "got nan"),
        (dict(family="efficientnetv2", s=2, alpha=1.5), "alpha .* got 1.5"),
        (dict(family="efficientnetv2", s=2, alpha=-0.1), "got -0.1"),
        (dict(family="resnet", s=2), "unknown family 'resnet'"),
        (dict(family="efficientnetv2", s=2, base="resnet50"), "'resnet50'"),
        (dict(family="tiny_vit", s=2, rule="efficientnet"), "rule 'efficientnet'"),
        (dict(family="tiny_vit", s=2, alpha=0.5, rule="resnet-rs"), "alpha=0.5"),
        (dict(family="tiny_vit", s=2, rule="resnet-rs", regime="medium"), "'medium'"),
        (dict(family="tiny_vit", s=2, resolution=100), "got 100"),
        (dict(family="efficientnetv2", s=2, resolution=16), "got 16"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_config(**kwargs)


def test_bad_build_and_measure_arguments():
    cfg = scale_config("efficientnetv2", 1, resolution=RES)
    with pytest.raises(ValueError, match="got 0"):
        build_scaled(cfg, 0)
    with pytest.raises(ValueError, match="got 0"):
        measure(torch.nn.Linear(2, 2), RES, (0,))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            measure(torch.nn.Linear(2, 2), RES, (1,), device="cuda")
    with pytest.raises(ValueError, match="meta"):
        measure(build_scaled(cfg, 10, device="meta"), RES, (1,))


def test_scaling_and_cli_modules_import_neither_torch_nor_timm():
    code = (
        "import sys, models.cli, models.scaling as m\n"
        "m.scale_config('tiny_vit', 8, 1/3); m.scale_config('efficientnetv2', 8)\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------ measured FLOPs and activations


@pytest.fixture(scope="module")
def rw_t_grid():
    """torch-counted FLOPs/activations of the base and of every (s, alpha) at 64 px."""
    base_cfg = scale_config("efficientnetv2", 1, resolution=RES)
    out = {(1, None): (base_cfg, count(base_cfg))}
    for s in S_VALUES:
        for alpha in ALPHAS:
            cfg = scale_config("efficientnetv2", s, alpha, resolution=RES)
            out[(s, alpha)] = (cfg, count(cfg))
    return out


def test_measured_flops_are_within_15_percent_of_s_times_base(rw_t_grid):
    base = rw_t_grid[(1, None)][1]["flops"]
    for s in S_VALUES:
        for alpha in ALPHAS:
            cfg, m = rw_t_grid[(s, alpha)]
            assert m["flops"] == pytest.approx(s * base, rel=0.15), (s, alpha, cfg)
            # the analytic count used to pick the config is torch's count exactly
            assert m["flops"] / base == pytest.approx(cfg.est_flops_ratio, rel=1e-9)


def test_activations_grow_least_for_width_scaling_and_most_for_uniform(rw_t_grid):
    base = rw_t_grid[(1, None)][1]["activations"]
    for s in S_VALUES:
        growth = {a: rw_t_grid[(s, a)][1]["activations"] / base for a in ALPHAS}
        assert growth[1.0] < growth[0.8] < growth[1 / 3], (s, growth)
        # the paper's prediction: activations grow as s^(1 - alpha/2)
        for a, g in growth.items():
            assert g == pytest.approx(s ** (1 - a / 2), rel=0.2), (s, a, g)


def test_tiny_vit_measured_flops_follow_s():
    base = count(scale_config("tiny_vit", 1, resolution=RES))
    for s in S_VALUES:
        for alpha in ALPHAS:
            cfg = scale_config("tiny_vit", s, alpha, resolution=RES)
            m = count(cfg)
            assert m["flops"] == pytest.approx(s * base["flops"], rel=0.15), (s, alpha, cfg)
            assert m["flops"] / base["flops"] == pytest.approx(cfg.est_flops_ratio, rel=1e-9)


# ------------------------------------------------------------------------------------- CLI


def test_cli_prints_the_table_with_latency(capsys):
    argv = ["scale", "--family", "efficientnetv2", "--base", "tf_efficientnetv2_b0", "--s", "2"]
    argv += ["--resolution", "32", "--batch", "2", "--repeats", "1", "--device", "cpu"]
    rc = main(argv)
    assert rc == 0
    out = capsys.readouterr().out
    assert "b=1 ms" in out and "b=2 ms" in out and "GFLOPs" in out and "act M" in out
    assert "tf_efficientnetv2_b0" in out and "not by FLOPs" in out
    rows = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ("1", "2")]
    assert [r[0] for r in rows] == ["1", "2"]
    assert float(rows[1][-1]) == pytest.approx(2.0, rel=0.15)  # FLOPs / base


def test_cli_json_with_several_alphas(capsys):
    argv = ["scale", "--family", "tiny_vit", "--s", "2", "--alpha", "1/3", "1", "--json"]
    argv += ["--resolution", "32", "--batch", "2", "--repeats", "1", "--num-classes", "10"]
    rc = main(argv)
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert [(r["s"], r["alpha"]) for r in rows] == [(1.0, 0.8), (2.0, 1 / 3), (2.0, 1.0)]
    assert report["batch"] == 2 and report["device"] == "cpu"
    assert all(r["latency_b1_ms"] > 0 and r["latency_batch_ms"] > 0 for r in rows)
    assert rows[1]["activations_m"] > rows[2]["activations_m"]
    assert ScaledConfig.from_dict(rows[1]["config"]).s == 2.0


@pytest.mark.parametrize(
    "args, match",
    [
        (["--family", "resnet"], "'resnet'"),
        (["--family", "efficientnetv2", "--s", "0"], "got 0"),
        (["--family", "efficientnetv2", "--s", "two"], "'two'"),
        (["--family", "efficientnetv2", "--alpha", "1.5"], "got 1.5"),
        (["--family", "efficientnetv2", "--rule", "resnet-rs", "--alpha", "0.5"], "--alpha"),
        (["--family", "efficientnetv2", "--batch", "0"], "--batch"),
        (["--family", "tiny_vit", "--resolution", "100"], "got 100"),
    ],
)
def test_cli_bad_arguments_give_one_line_and_status_2(args, match, capsys):
    assert main(["scale", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("distill scale: error:")
    assert re.search(match, err), err
