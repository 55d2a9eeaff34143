import pytest

from overtraining.config import SCHEDULES, LRScheduleConfig
from overtraining.training.schedules import lr_at


def test_constant_with_warmup():
    cfg = LRScheduleConfig(name="constant", warmup_steps=10)
    assert lr_at([0, 5, 10, 99], cfg, 100, 2.0) == pytest.approx([0.0, 1.0, 2.0, 2.0])


def test_cosine_reaches_floor():
    cfg = LRScheduleConfig(name="cosine", warmup_steps=0, min_lr_ratio=0.1)
    lrs = lr_at([0, 50, 100], cfg, 100, 1.0)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[1] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the cosine
    assert lrs[2] == pytest.approx(0.1)


def test_linear_decays_to_zero():
    cfg = LRScheduleConfig(name="linear", warmup_steps=0)
    assert lr_at([0, 25, 100], cfg, 100, 1.0) == pytest.approx([1.0, 0.75, 0.0])


def test_wsd_flat_then_decays_to_floor():
    cfg = LRScheduleConfig(name="wsd", warmup_steps=10, decay_ratio=0.2, min_lr_ratio=0.1, decay_type="linear")
    lrs = lr_at(list(range(100)), cfg, 100, 1.0)
    assert all(lr == pytest.approx(1.0) for lr in lrs[10:80])  # stable phase
    assert lrs[90] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way down the decay
    assert lr_at([100], cfg, 100, 1.0)[0] == pytest.approx(0.1)  # the floor
    assert all(a >= b for a, b in zip(lrs[80:], lrs[81:], strict=False))


def test_unknown_schedule_names_the_options():
    with pytest.raises(ValueError, match="constant, cosine, linear, wsd"):
        LRScheduleConfig(name="cosin")
    assert set(SCHEDULES) == {"constant", "cosine", "linear", "wsd"}
