"""Effect verdicts: monotone trends by rank correlation, the U by an interior optimum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from overtraining.report.effects import effect_sentences, trend, u_shape

TOKENS = np.array([250e3, 500e3, 1e6, 2e6, 4e6])


def test_trend_of_a_rising_series_has_rho_one_and_means_per_budget() -> None:
    tokens = np.repeat(TOKENS, 2)
    values = np.array([1, 3, 2, 4, 5, 7, 8, 8, 9, 11], float)  # means 2, 3, 6, 8, 10
    t = trend(tokens, values)
    assert t.means == (2.0, 3.0, 6.0, 8.0, 10.0)
    assert t.rho == pytest.approx(1.0)
    assert t.verdict == "rises"


def test_trend_verdicts_for_falling_flat_and_mixed_series() -> None:
    assert trend(TOKENS, np.array([5.0, 4, 3, 2, 1])).verdict == "falls"
    flat = trend(TOKENS, np.ones(5))
    assert np.isnan(flat.rho) and flat.verdict == "no clear trend"
    mixed = trend(TOKENS, np.array([1.0, 3, 2, 3.5, 1.5]))  # rho = 0.3
    assert mixed.rho == pytest.approx(0.3) and mixed.verdict == "no clear trend"


def test_u_shape_is_an_interior_optimum() -> None:
    is_u, t = u_shape(TOKENS, np.array([5.0, 4.0, 3.0, 3.5, 4.5]), lower=True)
    assert is_u and t.means[2] == 3.0
    assert not u_shape(TOKENS, np.array([5.0, 4.0, 3.0, 2.0, 1.0]), lower=True)[0]
    # an accuracy (higher is better) peaking inside is an inverted U: the same finding
    assert u_shape(TOKENS, np.array([0.1, 0.3, 0.2, 0.15, 0.1]), lower=False)[0]
    assert not u_shape(TOKENS[:2], np.array([2.0, 1.0]), lower=True)[0]  # too few budgets
    assert trend(TOKENS[:2], np.array([1.0, 2.0])).verdict == "too few budgets"
    # an interior best with the largest budget only 1% worse is flat, not a U (threshold 2%)
    assert not u_shape(TOKENS, np.array([5.0, 4.0, 3.0, 3.02, 3.03]), lower=True)[0]
    assert u_shape(TOKENS, np.array([5.0, 4.0, 3.0, 3.02, 3.03]), lower=True, min_rise=0.005)[0]


def test_flat_curve_with_an_interior_best_is_called_flat() -> None:
    df = _frame(ft=[3.49, 3.43, 3.48, 3.416, 3.46], base=[3.0] * 5, delta=[0.1] * 5)
    text = "\n".join(effect_sentences(df, "ppl/ood_prose"))
    assert "does not clearly appear: best at 2M (3.416), but the largest budget is only 1.3% worse" in text


def _frame(ft: list[float], base: list[float], delta: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "checkpoint": [f"embedded/tokens_{i}" for i in range(5)],
            "branch": "constant",
            "tokens": TOKENS,
            "lr": 1e-3,
            "ft/ppl/ood_prose": ft,
            "forget/ppl/ood_prose": np.array(ft) - np.array(base),
            "base/perturb/gamma=0.2/delta_loss_mean": delta,
            "base/perturb/gamma=0.2/loss_mean": np.log(base) + np.array(delta),
            "base/sharpness/kl": [1e-9, 2e-9, 3e-9, 4e-9, 8e-9],
        }
    )


def test_sentences_state_what_appears_with_numbers() -> None:
    df = _frame(ft=[30.0, 25, 20, 22, 28], base=[20.0, 15, 10, 8, 7], delta=[0.01, 0.02, 0.04, 0.08, 0.16])
    text = "\n".join(effect_sentences(df, "ppl/ood_prose"))
    assert "Progressive sensitivity (noise gamma = 0.2) appears" in text
    assert "0.01 at 250K -> 0.16 at 4M tokens, x16" in text
    assert "Sharpening by the KL sharpness proxy (nats) appears" in text
    assert "Forgetting that grows with pretraining (LR 1e-3) appears: forgetting of OOD prose" in text
    assert "perplexity goes 10.000 at 250K -> 21.000 at 4M tokens" in text
    assert "U-shape of fine-tuned OOD prose perplexity (LR 1e-3) appears: best at 1M (20)" in text
    # log(base) + delta = 3.006, 2.728, 2.343, 2.159, 2.106: still falling at 4M tokens
    assert "U-shape of the base model's loss under noise gamma = 0.2 does not appear: best at the largest" in text


def test_perturbed_loss_u_shape() -> None:
    # the clean loss falls by less than the noise rise grows: 2.5+0.1, 2.2+0.2, 2.0+0.4, 1.9+0.8, 1.85+1.6
    df = _frame(ft=[1.0] * 5, base=[1.0] * 5, delta=[0.1, 0.2, 0.4, 0.8, 1.6])
    df["base/perturb/gamma=0.2/loss_mean"] = [2.6, 2.4, 2.4, 2.7, 3.45]
    text = "\n".join(effect_sentences(df, None))
    assert "U-shape of the base model's loss under noise gamma = 0.2 appears: best at 500K (2.4)" in text


def test_sentences_say_plainly_what_does_not_appear() -> None:
    df = _frame(ft=[30.0, 25, 20, 18, 17], base=[20.0, 15, 10, 8, 7], delta=[0.16, 0.08, 0.04, 0.02, 0.01])
    text = "\n".join(effect_sentences(df, "ppl/ood_prose"))
    assert "Progressive sensitivity (noise gamma = 0.2) reversed" in text
    assert "(LR 1e-3) does not appear: best at the largest budget, 4M" in text


def test_metric_labels_of_perplexity_records() -> None:
    from overtraining.report.labels import metric_label

    assert metric_label("ft/ppl/ood_prose/loss") == "OOD prose loss (nats/token)"
    assert metric_label("ppl/ood_prose/ppl") == "OOD prose perplexity"
    assert metric_label("ppl/ood_prose") == "OOD prose perplexity"


def test_one_budget_is_stated_not_judged() -> None:
    df = _frame(ft=[3.0] * 5, base=[2.0] * 5, delta=[0.01] * 5).iloc[:1]
    text = "\n".join(effect_sentences(df, "ppl/ood_prose"))
    assert "Progressive sensitivity (noise gamma = 0.2) cannot be judged (3 budgets needed): " in text
    assert "loss rise under noise goes 0.01 at 250K tokens." in text
