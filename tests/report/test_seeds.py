"""Seeds as replicas: grouping by config, t-intervals and Welch tests against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from overtraining.report.seeds import aggregate, seeds_text, t_interval, welch
from overtraining.report.table import groups_display, records_to_frame, update_size_table

from .conftest import make_record

T975_DF1 = 12.706204736174707  # t_{0.975} with 1 degree of freedom (tables)
T975_DF3 = 3.182446305284263
T975_DF4 = 2.7764451051977987


def test_t_interval_is_the_student_interval() -> None:
    # mean 3, s = sqrt(14/3), sem = s / 2, half-width t_{0.975,3} * sem
    iv = t_interval([1.0, 2.0, 3.0, 6.0])
    half = T975_DF3 * math.sqrt(14 / 3) / 2
    assert (iv.mean, iv.n) == (3.0, 4)
    assert iv.lo == pytest.approx(3.0 - half) and iv.hi == pytest.approx(3.0 + half)
    assert iv.text(".3g") == f"3 [{3 - half:.3g}, {3 + half:.3g}]"
    one = t_interval([5.0, float("nan")])
    assert one.n == 1 and one.mean == 5.0 and math.isnan(one.lo) and one.text() == "5"
    assert t_interval([2.0, 2.0]).lo == 2.0  # replicas that agree: a zero-width interval


def test_welch_is_one_sided_with_a_two_sided_interval() -> None:
    a, b = [4.9, 5.0, 5.1], [2.9, 3.0, 3.1]
    d = welch(a, b, "greater")
    se = math.sqrt(0.01 / 3 + 0.01 / 3)  # both sample variances 0.01
    t = 2.0 / se  # 24.49; Welch df = 4 for equal variances and sizes
    assert d.diff == pytest.approx(2.0)
    assert d.p == pytest.approx(stats.t.sf(t, 4))
    assert d.lo == pytest.approx(2.0 - T975_DF4 * se) and d.hi == pytest.approx(2.0 + T975_DF4 * se)
    assert welch(a, b, "less").p == pytest.approx(1 - d.p)  # the other direction: no evidence
    assert math.isnan(welch([1.0], b, "greater").p)  # one replica: untestable


def _cell(seed: int, value: float, **config: object):  # noqa: ANN202
    r = make_record("tokens_1M", 1_000_000, 1e-3, seed)
    r.cell_id = f"c{seed}-{len(config)}-{value}"
    r.config = {**r.config, **config}
    r.metrics = {"ft/ppl/ood_prose": value, "update/rel_norm": value / 100, "update/norm": value}
    return r


def test_cells_differing_only_in_seeds_are_one_group_with_hand_computed_aggregates() -> None:
    records = [
        _cell(0, 10.0, trainer={"seed": 0, "max_steps": 40}, sharpness={"seed": 0}, sweep_name="a"),
        _cell(1, 12.0, trainer={"seed": 1, "max_steps": 40}, sharpness={"seed": 5}, sweep_name="b", logger={"x": 1}),
        _cell(0, 30.0, trainer={"seed": 0, "max_steps": 80}, sharpness={"seed": 0}),  # other science: own group
    ]
    df = records_to_frame(records)
    assert df["group"].nunique() == 2
    groups = aggregate(df, ["ft/ppl/ood_prose"]).sort_values("n_seeds", ascending=False)
    pair, single = groups.iloc[0], groups.iloc[1]
    assert (pair["n_seeds"], pair["seeds"], pair["ft/ppl/ood_prose"]) == (2, "0,1", 11.0)
    # s = sqrt(2), sem = 1: half-width = t_{0.975,1}
    assert pair["ft/ppl/ood_prose ci95_lo"] == pytest.approx(11.0 - T975_DF1)
    assert pair["ft/ppl/ood_prose ci95_hi"] == pytest.approx(11.0 + T975_DF1)
    assert single["n_seeds"] == 1 and single["ft/ppl/ood_prose"] == 30.0
    assert math.isnan(single["ft/ppl/ood_prose ci95_lo"])
    shown = groups_display(groups, ["ft/ppl/ood_prose"])
    assert shown["ft/ppl/ood_prose"].tolist() == [f"11 [{11 - T975_DF1:.4g}, {11 + T975_DF1:.4g}]", "30"]


def test_update_size_table_per_lr_and_budget() -> None:
    df = records_to_frame([_cell(0, 10.0), _cell(1, 12.0)])
    table = update_size_table(df)
    assert table[["LR", "tokens", "n_seeds"]].values.tolist() == [["1e-3", "1M", 2]]
    assert table["relative update size"].iloc[0] == f"0.11 [{0.11 - T975_DF1 / 100:.3g}, {0.11 + T975_DF1 / 100:.3g}]"
    assert update_size_table(df.drop(columns=["update/rel_norm"])).empty  # old records: no table


def test_seeds_text() -> None:
    assert seeds_text([2, 2, 2]) == "2"
    assert seeds_text([2, 3]) == "2-3"
    assert seeds_text([1, 1]) == "1 (single seed)"


def test_target_reached_column() -> None:
    reached = _cell(0, 1.0, trainer={"target_loss": 0.9})
    reached.metrics["sft/target_reached_step"] = 30
    missed = _cell(1, 1.0, trainer={"target_loss": 0.9})
    missed.metrics["sft/target_reached_step"] = None
    free = _cell(2, 1.0, trainer={"target_loss": None})
    df = records_to_frame([reached, missed, free]).set_index("seed")
    assert str(df["target_reached"].dtype) == "boolean"
    assert bool(df.loc[0, "target_reached"]) is True and bool(df.loc[1, "target_reached"]) is False
    assert pd.isna(df.loc[2, "target_reached"]) and pd.isna(df.loc[2, "target_loss"])
    assert df.loc[0, "target_loss"] == 0.9
