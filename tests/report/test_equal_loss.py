"""Equal-SFT-loss comparisons: cells that missed the target are left out; the x-axis is the EMA loss.

Also the ID-optimal LR at the edge of the LR grid.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from overtraining.report.equal_loss import ema, equal_loss_findings, probe_frame, x_label
from overtraining.report.table import records_to_frame, usable
from overtraining.report.tradeoff import edge_lr_findings, id_optimal_lr

from .conftest import make_record


def _target_cell(lr: float, seed: int, forget: float, reached: bool):  # noqa: ANN202
    r = make_record("tokens_4M", 4_000_000, lr, seed, status="target_reached" if reached else "completed")
    r.cell_id = f"{lr:g}-{seed}"
    r.config = {**r.config, "trainer": {"target_loss": 1.0, "loss_smoothing": 0.5}}
    r.metrics = {"forget/ppl/ood_prose": forget, "sft/target_reached_step": 3 if reached else None}
    r.curves = {
        "sft": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 3, "loss": 1.0}],
        "probes": [
            {"step": 2, "sft_loss": 1.7, "ppl/ood_prose": 30.0},
            {"step": 3, "sft_loss": 1.4, "ppl/ood_prose": 31.0},
        ],
    }
    return r


RECORDS = [
    _target_cell(1e-3, 0, 2.0, True),
    _target_cell(1e-3, 1, 2.2, True),
    _target_cell(1e-3, 2, 100.0, False),  # missed the target: would dominate the mean
    _target_cell(1e-4, 0, 1.0, True),
    _target_cell(1e-4, 1, 1.1, True),
]


def test_cells_that_missed_the_target_are_excluded_from_the_equal_loss_test() -> None:
    df = usable(records_to_frame(RECORDS))
    assert df["target_reached"].tolist().count(False) == 1
    (f,) = equal_loss_findings(df, "ppl/ood_prose")
    # Welch: diff 2.1 - 1.05; variances 0.02 and 0.005 over 2 seeds each
    se = math.sqrt(0.02 / 2 + 0.005 / 2)
    dof = se**4 / ((0.02 / 2) ** 2 + (0.005 / 2) ** 2)
    p = stats.t.sf(1.05 / se, dof)
    assert f.appears == "yes" and p < 0.05
    assert f"one-sided Welch p = {p:.2g}" in f.numbers
    assert "LR 1e-3: 2.1 [" in f.numbers and "1 cell(s) excluded: target not reached" in f.numbers
    lo, hi = stats.ttest_ind([2.0, 2.2], [1.0, 1.1], equal_var=False).confidence_interval(0.95)
    assert f.interval == f"+1.05 [{lo:.3g}, {hi:.3g}]"
    assert f.seeds == "2"


def test_a_difference_within_seed_noise_is_not_claimed() -> None:
    records = [
        _target_cell(1e-3, 0, 1.0, True),
        _target_cell(1e-3, 1, 3.0, True),
        _target_cell(1e-4, 0, 1.5, True),
        _target_cell(1e-4, 1, 2.0, True),
    ]
    (f,) = equal_loss_findings(usable(records_to_frame(records)), "ppl/ood_prose")
    assert f.appears == "no"
    assert "no difference beyond seed noise between LR 1e-3 and LR 1e-4" in f.sentence


def test_no_target_no_equal_loss_finding() -> None:
    records = [make_record("tokens_1M", 1_000_000, lr, 0) for lr in (1e-4, 1e-3)]
    assert equal_loss_findings(usable(records_to_frame(records)), "ppl/ood_prose") == []


def test_probe_x_is_the_ema_of_the_training_loss_or_the_heldout_loss() -> None:
    assert ema([2.0, 1.0, 1.0], 0.5).tolist() == [2.0, 1.5, 1.25]
    probes = probe_frame(RECORDS)
    assert set(probes["cell_id"]) == {"0.001-0", "0.001-1", "0.0001-0", "0.0001-1"}  # the missed cell is out
    one = probes[probes["cell_id"] == "0.001-0"].sort_values("step")
    assert one["x_loss"].tolist() == [1.5, 1.25]  # EMA (beta 0.5) at steps 2 and 3
    held = probe_frame(RECORDS, "heldout")
    assert held[held["cell_id"] == "0.001-0"]["x_loss"].tolist() == [1.7, 1.4]
    assert "EMA of the per-step loss, beta = 0.5" in x_label("train", probes["beta"].tolist())
    assert x_label("heldout").startswith("held-out SFT loss")
    with pytest.raises(ValueError, match="'train' or 'heldout'"):
        probe_frame(RECORDS, "val")


def test_id_optimal_lr_at_the_edge_of_the_grid_is_flagged() -> None:
    rows = []
    best = {1e6: 1e-3, 2e6: 3e-4, 4e6: 1e-4}  # largest, interior, smallest of the grid
    for tokens, top in best.items():
        for lr in (1e-4, 3e-4, 1e-3):
            for seed in (0, 1):
                acc = 0.8 - abs(np.log10(lr / top)) / 10 + 0.01 * seed
                rows.append(
                    {
                        "branch": "main",
                        "checkpoint": f"c{tokens}",
                        "tokens": tokens,
                        "lr": lr,
                        "seed": seed,
                        "ft/id/accuracy": acc,
                    }
                )
    df = pd.DataFrame(rows)
    table = id_optimal_lr(df, "ft/id/accuracy")
    assert table["edge"].tolist() == ["largest", "", "smallest"]
    (f,) = edge_lr_findings(df, "ft/id/accuracy")
    assert f.appears.startswith("no: at the largest LR of the grid: the optimum may lie outside it (1M)")
    assert "at the smallest LR of the grid: the optimum may lie outside it (4M)" in f.appears
    assert f.numbers == "1M: 1e-3; 2M: 3e-4; 4M: 1e-4"
    inside = df[df["tokens"] == 2e6]
    (g,) = edge_lr_findings(inside, "ft/id/accuracy")
    assert g.appears == "yes"


def test_single_seed_equal_loss_comparison_says_it_is_untested() -> None:
    records = [_target_cell(1e-3, 0, 2.0, True), _target_cell(1e-4, 0, 1.0, True)]
    (f,) = equal_loss_findings(usable(records_to_frame(records)), "ppl/ood_prose")
    assert f.appears == "yes (single seed, untested)" and f.seeds == "1 (single seed)"
    assert f.interval == "" and "single seed: untested against seed noise" in f.numbers
