"""LoaderConfig: frozen, versioned, a dict round-trip; the loader's keywords build one."""

from __future__ import annotations

import dataclasses

import pytest

from student.config import TrainConfig
from student.loader_config import LOADER_CONFIG_VERSION, LoaderConfig


def test_round_trip_and_frozen() -> None:
    cfg = LoaderConfig(img_size=64, batch_size=8, epochs=3, view_schedule="stretch")
    d = cfg.to_dict()
    assert d["version"] == LOADER_CONFIG_VERSION and LoaderConfig.from_dict(d) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.batch_size = 4  # type: ignore[misc]


def test_unknown_option_and_version_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown loader option\(s\) \['batchsize'\]"):
        LoaderConfig.from_dict({"batchsize": 4})
    with pytest.raises(ValueError, match="loader config version 9 is not 1"):
        LoaderConfig.from_dict({**LoaderConfig().to_dict(), "version": 9})


def test_train_config_produces_the_loader_config() -> None:
    train = TrainConfig.from_dict(
        {"store": "s", "data": "d", "model": "m", "out": "o", "batch_size": 6, "workers": 0,
         "seed": 3, "val_fraction": 0.25, "epochs": 5}
    )  # fmt: skip
    got = train.loader_config(img_size=48, rank=1, world_size=2, with_targets=False)
    assert got == LoaderConfig(
        img_size=48, batch_size=6, rank=1, world_size=2, workers=0, seed=3, val_fraction=0.25,
        epochs=5, view_schedule="wrap", with_targets=False,
    )  # fmt: skip
    # Every field the trainer does not set at start-up comes from TrainConfig itself.
    shared = {f.name for f in dataclasses.fields(LoaderConfig)} & set(TrainConfig.model_fields)
    assert {k: getattr(got, k) for k in shared} == {
        k: getattr(train, k) if k != "img_size" else 48 for k in shared
    }
