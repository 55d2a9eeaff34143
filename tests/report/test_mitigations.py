"""The mitigation section of the report on synthetic cell tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from overtraining.report.mitigations import (
    baseline_cells,
    baseline_forgetting_at,
    frontier_frame,
    frontier_points,
    matched_forgetting,
    mitigation_report,
    u_findings,
)
from overtraining.report.table import mitigation_label

M = "ppl/ood_prose/loss"


def _cell(mitigation, tokens, lr, seed, base_id, ft_id, forget, ft_ood, **extra):
    return {
        "mitigation": mitigation,
        "checkpoint": f"embedded/tokens_{tokens}",
        "tokens": tokens,
        "lr": lr,
        "seed": seed,
        "base/id/loss": base_id,
        "ft/id/loss": ft_id,
        f"forget/{M}": forget,
        f"ft/{M}": ft_ood,
        f"base/{M}": 3.0 - tokens / 1e7,  # the base model keeps improving
        **extra,
    }


def test_labels_name_the_mitigation_and_its_strength():
    assert mitigation_label({}) == "none"
    assert mitigation_label({"mitigation": {"name": "replay", "strength": 0.05}}) == "replay 0.05"
    assert mitigation_label({"mitigation": {"name": "wise", "strength": 0.0}}) == "wise"
    assert mitigation_label({"trainer": {"method": "lora"}, "mitigation": {"name": "none"}}) == "lora"
    lora_sam = {"trainer": {"method": "lora"}, "mitigation": {"name": "sam", "strength": 0.05}}
    assert mitigation_label(lora_sam) == "lora + sam 0.05"


def test_frontier_frame_computes_id_gain_and_expands_wise_alphas():
    wise = {
        "wise/alpha=0/ft/id/loss": 2.0,
        "wise/alpha=0/forget/" + M: 0.0,
        "wise/alpha=0/ft/" + M: 3.0,
        "wise/alpha=0.5/ft/id/loss": 1.6,
        "wise/alpha=0.5/forget/" + M: 0.2,
        "wise/alpha=0.5/ft/" + M: 3.2,
    }
    df = pd.DataFrame(
        [
            _cell("none", 1_000_000, 1e-3, 0, 2.0, 1.5, 0.4, 3.4),
            _cell("wise", 1_000_000, 1e-3, 0, 2.0, 1.5, 0.4, 3.4, **wise),
        ]
    )
    frame = frontier_frame(df, M)
    none = frame[frame["mitigation"] == "none"].iloc[0]
    assert none["id_gain"] == pytest.approx(0.5) and none["forgetting"] == pytest.approx(0.4)
    w = frame[frame["mitigation"] == "wise"].set_index("alpha")
    assert sorted(w.index) == [0.0, 0.5]  # a wise cell is its alphas (alpha = 1 only if listed)
    assert w.loc[0.5, "id_gain"] == pytest.approx(0.4) and w.loc[0.0, "id_gain"] == 0.0


def test_baseline_is_interpolated_not_extrapolated():
    gains, forgets = np.array([0.3, 0.1, 0.5]), np.array([2.0, 1.0, 4.0])
    assert baseline_forgetting_at(gains, forgets, 0.2) == pytest.approx(1.5)
    assert baseline_forgetting_at(gains, forgets, 0.4) == pytest.approx(3.0)
    assert np.isnan(baseline_forgetting_at(gains, forgets, 0.6))
    assert np.isnan(baseline_forgetting_at(gains[:1], forgets[:1], 0.3))


def test_forgetting_at_equal_id_gain_per_seed():
    rows = []
    for seed, shift in enumerate((0.0, 0.02, -0.02)):
        rows += [
            _cell("none", 1_000_000, 1e-3, seed, 2.0, 1.9, 1.0 + shift, 3.5),  # gain 0.1
            _cell("none", 1_000_000, 1e-2, seed, 2.0, 1.7, 2.0 + shift, 4.5),  # gain 0.3
            _cell("l2 0.1", 1_000_000, 1e-2, seed, 2.0, 1.8, 1.2 + shift + 0.01 * seed, 3.6),  # gain 0.2
        ]
    frame = frontier_frame(pd.DataFrame(rows), M)
    matched = matched_forgetting(frame).set_index("how")
    row = matched.loc["equal ID gain"]
    assert row["n"] == 3
    # baseline at gain 0.2 is 1.5 + shift; the mitigation 1.2 + shift + 0.01 seed -> -0.3, -0.29, -0.28
    assert row["delta"] == pytest.approx(-0.29) and row["lo"] < -0.29 < row["hi"] < 0
    same = matched.loc["same LR"]  # against the LR 1e-2 cells: forgetting 2.0 + shift, gain 0.3
    assert same["delta"] == pytest.approx(1.21 - 2.0) and same["gain_delta"] == pytest.approx(0.2 - 0.3)
    points = frontier_points(frame)
    assert set(points["n_seeds"]) == {3}


def test_u_shape_removed_by_a_mitigation():
    rows = []
    for seed in range(3):
        for tokens, plain, mitigated in ((250_000, 4.0, 4.0), (1_000_000, 3.5, 3.4), (8_000_000, 4.5, 3.3)):
            noise = 0.01 * seed
            rows.append(_cell("none", tokens, 1e-2, seed, 2.0, 1.5, 1.0, plain + noise))
            rows.append(_cell("sam 0.05", tokens, 1e-2, seed, 2.0, 1.5, 0.5, mitigated + noise))
    df = pd.DataFrame(rows)
    (finding,) = u_findings(df, M)
    assert finding.effect.startswith("sam 0.05 removes the U-shape")
    assert finding.appears == "yes (best at the largest budget)"
    worse = df.copy()  # with the mitigation, worse with every budget: no U, but not a removal
    worse.loc[worse["mitigation"] == "sam 0.05", f"ft/{M}"] += worse["tokens"] / 1e6
    assert u_findings(worse, M)[0].appears == "no (worse with every budget from the smallest)"
    flipped = df.assign(mitigation=df["mitigation"].map({"none": "sam 0.05", "sam 0.05": "none"}))
    assert u_findings(flipped, M)[0].appears == "no U to remove (plain SFT shows none)"
    assert set(baseline_cells(df)["mitigation"]) == {"none"}


def test_report_section_draws_the_frontier(tmp_path):
    rows = [
        _cell(m, t, lr, s, 2.0, 1.8 - 0.1 * (lr > 1e-3), f + 0.01 * s, 3.5)
        for m, f in (("none", 1.0), ("replay 0.05", 0.7))
        for t in (250_000, 1_000_000)
        for lr in (1e-3, 1e-2)
        for s in range(2)
    ]
    figs, findings = mitigation_report(pd.DataFrame(rows), M, tmp_path)
    (path, title, _caption, table) = figs[0]
    assert path.exists() and title.startswith("Learning-forgetting frontier")
    assert len(table) == 4 + 4 and set(table["compared at"]) == {"equal ID gain", "same LR"}
    reduction = {f.effect: f for f in findings if "forgets less" in f.effect}
    equal = reduction["replay 0.05 forgets less than plain SFT (equal ID gain)"]
    assert equal.appears == "yes" and "-0.3" in equal.numbers
    assert "ID gain minus plain SFT's: +0" in reduction["replay 0.05 forgets less than plain SFT (same LR)"].numbers
