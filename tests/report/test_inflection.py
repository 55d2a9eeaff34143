"""The optimal pretraining budget, its bootstrap interval and its sentence, on planted curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from overtraining.report.inflection import bootstrap_interval, describe, find_optimum, optima_sentences
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, pick_metric
from overtraining.report.tradeoff import id_optimal_lr, pareto_front

M = 1_000_000
BUDGETS = np.array([1, 2, 4, 8, 16, 32]) * M


def planted_u(tokens: np.ndarray) -> np.ndarray:
    """A U in log-tokens with its minimum 3.0 at 8M; 7.0 at 32M."""
    return (np.log2(tokens / (8 * M))) ** 2 + 3.0


def test_planted_u_minimum_is_found_exactly() -> None:
    opt = find_optimum(BUDGETS, planted_u(BUDGETS), lower=True)
    assert opt.best_tokens == 8 * M
    assert opt.best_value == 3.0
    assert opt.worse_by == 4.0
    assert opt.edge is None
    assert opt.ci is None  # one cell per budget: nothing to resample
    text = describe(opt, "After fine-tuning at LR 1e-4", "OOD loss")
    assert text.startswith("After fine-tuning at LR 1e-4, OOD loss is best at 8M pretraining tokens")
    assert "worse by 4 (+133%) at 32M" in text


def test_seeds_give_a_tight_interval_around_a_clear_minimum() -> None:
    tokens = np.repeat(BUDGETS, 3)
    values = planted_u(tokens) + np.tile([-0.1, 0.0, 0.1], len(BUDGETS))
    opt = find_optimum(tokens, values, lower=True, n_boot=500)
    assert opt.best_tokens == 8 * M
    assert opt.ci == (8 * M, 8 * M)
    assert "[95% CI 8M, 8M]" in describe(opt, "S", "OOD loss")


def test_interval_spans_two_budgets_that_seeds_cannot_separate() -> None:
    tokens = np.array([2, 2, 4, 4, 8, 8, 16, 16]) * M
    values = np.array([3.0, 3.0, 1.0, 1.4, 1.1, 1.2, 3.0, 3.0])  # means 1.2 at 4M, 1.15 at 8M
    assert bootstrap_interval(tokens, values, lower=True, n_boot=2000, seed=0) == (4 * M, 8 * M)
    assert find_optimum(tokens, values, lower=True).best_tokens == 8 * M


def test_monotone_improvement_puts_the_optimum_at_the_largest_budget() -> None:
    opt = find_optimum(BUDGETS, 10.0 - np.log2(BUDGETS / M), lower=True)
    assert (opt.best_tokens, opt.edge, opt.worse_by) == (32 * M, "last", 0.0)
    text = describe(opt, "After fine-tuning at LR 1e-3", "OOD perplexity")
    assert "best at the largest budget tried, 32M" in text
    assert "no optimum inside the sweep" in text


def test_monotone_degradation_puts_the_optimum_at_the_smallest_budget() -> None:
    opt = find_optimum(BUDGETS, 1.0 + np.log2(BUDGETS / M), lower=True)
    assert (opt.best_tokens, opt.edge, opt.worse_by) == (1 * M, "first", 5.0)
    text = describe(opt, "S", "OOD loss")
    assert "best at the smallest budget tried, 1M" in text and "worse by 5" in text


def test_accuracy_is_maximised() -> None:
    acc = 0.9 - 0.01 * (np.log2(BUDGETS / (4 * M))) ** 2  # peak at 4M
    assert find_optimum(BUDGETS, acc, lower=lower_is_better("ft/ood/cloze/acc")).best_tokens == 4 * M


def test_nan_cells_are_ignored_and_empty_curves_give_none() -> None:
    values = planted_u(BUDGETS)
    values[3] = np.nan  # the 8M cell failed
    assert find_optimum(BUDGETS, values, lower=True).best_tokens in (4 * M, 16 * M)
    assert find_optimum(BUDGETS, np.full(len(BUDGETS), np.nan), lower=True) is None


@pytest.mark.parametrize(
    ("name", "lower"),
    [
        ("ft/ppl/ood_prose", True),
        ("ft/id/loss", True),
        ("base/perturb/gamma=0.1/delta_loss_mean", True),
        ("base/sharpness/kl", True),
        ("forget/mean_acc", True),
        ("drift/mpa_mean", True),
        ("ft/id/accuracy", False),
        ("base/ood/embedded_prose_cloze/acc", False),
        ("drift/cka_mean", False),
    ],
)
def test_direction_is_read_from_the_name(name: str, lower: bool) -> None:
    assert lower_is_better(name) is lower


def test_unknown_direction_names_the_fix() -> None:
    with pytest.raises(ValueError, match="loss/ppl or acc"):
        lower_is_better("ft/widget")


def test_formatting() -> None:
    assert [format_tokens(t) for t in (250_000, 1_000_000, 1_500_000, 84e9, 2.3e12)] == [
        "250K",
        "1M",
        "1.5M",
        "84B",
        "2.3T",
    ]
    assert [format_lr(x) for x in (1e-4, 3e-5, 2.5e-4)] == ["1e-4", "3e-5", "2.5e-4"]


def test_pick_metric() -> None:
    cols = ["ft/ood/cloze/acc", "ft/ppl/ood_prose", "ft/id/accuracy", "base/ppl/ood_prose"]
    assert pick_metric(cols, None, ("ppl/ood_prose", "ood/")) == "ppl/ood_prose"
    assert pick_metric(cols, "base/ood/cloze/acc", ()) == "ood/cloze/acc"
    with pytest.raises(ValueError, match="ppl/ood_prose"):
        pick_metric(cols, "ppl/wikitext", ())


def test_pareto_front_of_known_points() -> None:
    # (ID acc, OOD ppl): higher ID better, lower OOD better. Point 2 is dominated by 1; 4 by 3.
    x = np.array([0.5, 0.7, 0.6, 0.9, 0.8])
    y = np.array([10.0, 12.0, 13.0, 20.0, 25.0])
    assert pareto_front(x, y, x_higher=True, y_higher=False).tolist() == [0, 1, 3]


def _two_lr_table() -> pd.DataFrame:
    """LR 1e-3 wins ID below 4M, LR 1e-4 from 4M; OOD: U at 2M for 1e-3, monotone for 1e-4."""
    rows = []
    for t in BUDGETS:
        for lr in (1e-4, 1e-3):
            for seed in (0, 1):
                big = lr == 1e-3
                acc = 0.8 if (big and t < 4 * M) or (not big and t >= 4 * M) else 0.6
                ood = (math.log2(t / (2 * M))) ** 2 + 5 if big else 20 - math.log2(t / M)
                rows.append(
                    {
                        "branch": "main",
                        "checkpoint": f"c{t}",
                        "tokens": t,
                        "lr": lr,
                        "seed": seed,
                        "ft/id/accuracy": acc + 0.01 * seed,
                        "ft/ppl/ood_prose": ood + 0.01 * seed,
                    }
                )
    return pd.DataFrame(rows)


def test_id_optimal_lr_switches_where_planted() -> None:
    best = id_optimal_lr(_two_lr_table(), "ft/id/accuracy")
    assert best["lr"].tolist() == [1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4]


def test_sentences_per_lr_and_for_the_tuned_lr() -> None:
    lines = optima_sentences(_two_lr_table(), "ft/ppl/ood_prose", "ft/id/accuracy", n_boot=200)
    assert len(lines) == 3
    assert lines[0].startswith("After fine-tuning at LR 1e-4") and "largest budget tried, 32M" in lines[0]
    assert (
        lines[1].startswith("After fine-tuning at LR 1e-3")
        and "best at 2M pretraining tokens [95% CI 2M, 2M]" in lines[1]
    )
    # Tuned: 1e-3 cells at 1M, 2M (OOD 6, 5), then 1e-4 cells (OOD 18 ... 15): best at 2M.
    assert lines[2].startswith("With the LR tuned per checkpoint for the best ID accuracy")
    assert "best at 2M" in lines[2]


def test_one_budget_is_said_plainly() -> None:
    opt = find_optimum(np.array([4 * M, 4 * M]), np.array([1.0, 1.2]), lower=True)
    assert (
        describe(opt, "S", "OOD loss")
        == "S, OOD loss was measured at one budget only (4M tokens): no optimum over tokens."
    )
