import itertools
import math

import pytest

from student.schedule import linear_ramp, lr_at, round_size, slot_for_epoch, stage_for_epoch
from teacher_store.views.recipe import get_recipe


def test_lr_warmup_then_cosine():
    assert lr_at(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, warmup=10, min_lr=0.0) == pytest.approx(1.0)
    mid = 10 + 45
    assert lr_at(mid, 100, 1.0, warmup=10, min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, warmup=10, min_lr=0.01) == pytest.approx(0.01)
    assert lr_at(50, 100, 0.3, kind="constant") == 0.3
    with pytest.raises(ValueError, match="schedule"):
        lr_at(1, 10, 1.0, kind="step")


def test_view_slot_schedules():
    assert [slot_for_epoch(e, 10, 4, "wrap") for e in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [slot_for_epoch(e, 8, 4, "stretch") for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="outside"):
        slot_for_epoch(8, 8, 4)


def test_round_size():
    assert round_size(185.33, 8) == 184 and round_size(242.67, 8) == 240
    assert round_size(13.71, 2) == 14 and round_size(3.0, 8) == 8
    with pytest.raises(ValueError, match="quantum"):
        round_size(10, 0)


def test_linear_ramp_is_efficientnetv2_algorithm_1():
    # EfficientNetV2-S, Table 6: size 128 -> 300 and dropout 0.1 -> 0.3 over M = 4 stages:
    # S_i = S0 + (Se - S0) * i / (M - 1)
    sizes = [linear_ramp(i, 4, 128, 300) for i in range(4)]
    assert sizes == pytest.approx([128, 128 + 172 / 3, 128 + 344 / 3, 300])
    assert sizes[0] == 128 and sizes[-1] == 300  # exact at both ends
    drops = [linear_ramp(i, 4, 0.1, 0.3) for i in range(4)]
    assert drops == pytest.approx([0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])
    assert all(b > a for a, b in itertools.pairwise(drops))
    assert linear_ramp(0, 1, 5, 15) == 15
    with pytest.raises(ValueError, match="stage"):
        linear_ramp(4, 4, 0, 1)


@pytest.mark.parametrize("epochs,views,stages", [(8, 8, 4), (12, 4, 4), (9, 6, 3), (40, 8, 4)])
def test_stage_boundaries_are_equal_splits_when_stages_divide_views(epochs, views, stages):
    got = [stage_for_epoch(e, epochs, views, stages) for e in range(epochs)]
    assert got == [math.floor(e * stages / epochs) for e in range(epochs)]


@pytest.mark.parametrize("epochs,views,stages", [(10, 8, 3), (7, 5, 4), (30, 6, 4), (8, 8, 4)])
def test_stage_is_the_stores_stage_of_the_slot(epochs, views, stages):
    recipe = get_recipe("efficientnetv2-progressive").model_copy(update={"stages": stages})
    for e in range(epochs):
        slot = slot_for_epoch(e, epochs, views, "stretch")
        assert stage_for_epoch(e, epochs, views, stages) == recipe.stage_of(slot, views)
    got = [stage_for_epoch(e, epochs, views, stages) for e in range(epochs)]
    assert got == sorted(got) and got[0] == 0 and got[-1] == stages - 1


@pytest.mark.parametrize("epochs,views,span,stages", [(12, 8, 4, 4), (16, 12, 8, 4), (9, 6, 3, 3)])
def test_stage_of_a_grown_store_is_the_stores_stage_of_the_slot(epochs, views, span, stages):
    """A store grown from ``span`` to ``views`` slots: appended slots are in the stage of slot
    span - 1 (the last stage extends), on the student side too."""
    from teacher_store.views.codec import decode

    recipe = get_recipe("efficientnetv2-progressive").model_copy(update={"stages": stages})
    for e in range(epochs):
        slot = slot_for_epoch(e, epochs, views, "stretch")
        stage = stage_for_epoch(e, epochs, views, stages, span)
        assert stage == recipe.stage_of(min(slot, span - 1), span)
        knobs = recipe.at_slot(min(slot, span - 1), span)
        assert decode(3, slot, 1, 5, recipe, span).base == decode(3, slot, 1, 5, knobs, 1).base
    assert stage_for_epoch(epochs - 1, epochs, views, stages, span) == stages - 1


def test_stage_needs_a_slot_per_stage():
    with pytest.raises(ValueError, match="view slots"):
        stage_for_epoch(0, 8, 3, 4)
