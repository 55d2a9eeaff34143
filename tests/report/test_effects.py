"""Effect verdicts: single-seed heuristics, and tests over seed replicas (Spearman, Welch, base model)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from overtraining.report.effects import effect_findings, effect_sentences, trend, trend_finding, u_shape, u_test
from overtraining.report.findings import findings_frame

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


# --- seed-aware verdicts -------------------------------------------------------------------

B4 = np.array([1e6, 2e6, 4e6, 8e6])


def _seeded(ft: list[list[float]], base: list[float], lr: float = 1e-3) -> pd.DataFrame:
    """One row per (budget, seed): ``ft[i]`` are budget i's replicas; the base metric is per budget."""
    rows = [
        {
            "checkpoint": f"c{i}",
            "branch": "wsd",
            "tokens": B4[i],
            "lr": lr,
            "seed": s,
            "ft/ppl/ood_prose": v,
            "base/ppl/ood_prose": base[i],
            "forget/ppl/ood_prose": v - base[i],
        }
        for i, reps in enumerate(ft)
        for s, v in enumerate(reps)
    ]
    return pd.DataFrame(rows)


BASE_IMPROVING = [40.0, 30.0, 25.0, 21.0]


def test_a_rise_within_seed_noise_is_not_claimed() -> None:
    # best at 2M (mean 3.0), last 3.4: 13% worse, a U for the single-seed heuristic, but seeds spread +-1
    ft = [[5.0, 6.0, 7.0], [2.0, 3.0, 4.0], [2.2, 3.2, 4.2], [2.4, 3.4, 4.4]]
    u = u_test(np.repeat(B4, 3), np.concatenate(ft), lower=True)
    assert u.interior and u.rel_rise == pytest.approx(0.4 / 3.0) and u.rel_rise >= 0.02
    t = 0.4 / math.sqrt(1 / 3 + 1 / 3)  # both sample variances 1; Welch df = 4
    assert u.rise.diff == pytest.approx(0.4) and u.rise.p == pytest.approx(stats.t.sf(t, 4))
    assert u.rise.p > 0.3 and u.verdict == "flat"
    (f,) = [f for f in effect_findings(_seeded(ft, BASE_IMPROVING), "ppl/ood_prose") if f.effect.startswith("U-")]
    assert f.appears == "no" and f.seeds == "3"
    # 0.4 +- t_{0.975,4} * sqrt(2/3) = 0.4 +- 2.27
    assert "8M (3.4) is worse by +0.4 [-1.87, 2.67], within seed noise (one-sided Welch p = 0.32, needs p < 0.05)" in (
        f.sentence
    )


def test_a_clear_rise_is_claimed_with_its_p_value_and_interval() -> None:
    ft = [[6.9, 7.0, 7.1], [2.9, 3.0, 3.1], [3.9, 4.0, 4.1], [4.9, 5.0, 5.1]]
    u = u_test(np.repeat(B4, 3), np.concatenate(ft), True, B4, np.array(BASE_IMPROVING))
    se = math.sqrt(0.01 / 3 + 0.01 / 3)
    assert u.rise.p == pytest.approx(stats.t.sf(2.0 / se, 4)) and u.rise.p < 1e-4
    assert u.rise.lo == pytest.approx(2.0 - 2.7764451051977987 * se)
    assert (u.base_best, u.base_last, u.base_improves, u.verdict) == (30.0, 21.0, True, "appears")
    (f,) = [f for f in effect_findings(_seeded(ft, BASE_IMPROVING), "ppl/ood_prose") if f.effect.startswith("U-")]
    assert f.appears == "yes"
    assert f.interval == f"last - best: +2 [{u.rise.lo:.3g}, {u.rise.hi:.3g}]"
    assert "best 2M (3) -> 8M (5); rise +2, one-sided Welch p < 1e-4; base OOD prose perplexity 30 -> 21" in f.numbers
    # an accuracy that peaks inside and drops at the end: the test runs in the other direction
    acc = -np.concatenate(ft)
    ua = u_test(np.repeat(B4, 3), acc, False, B4, -np.array(BASE_IMPROVING))
    assert ua.verdict == "appears" and ua.rise.p == pytest.approx(u.rise.p) and ua.rise.diff == pytest.approx(-2.0)


def test_a_base_model_that_stops_improving_is_not_catastrophic_overtraining() -> None:
    ft = [[6.9, 7.0, 7.1], [2.9, 3.0, 3.1], [3.9, 4.0, 4.1], [4.9, 5.0, 5.1]]
    base = [40.0, 30.0, 30.5, 31.0]  # the base model is worse at 8M than at 2M too
    (f,) = [f for f in effect_findings(_seeded(ft, base), "ppl/ood_prose") if f.effect.startswith("U-")]
    assert f.appears == "no: base also stopped improving"
    assert "but the base model also stopped improving (base OOD prose perplexity 30 -> 31)" in f.sentence
    assert f.sentence.endswith("not catastrophic overtraining.")


def test_seeded_trend_is_spearman_over_replicas() -> None:
    # means 3, 4, 5 (rank correlation 1) but replicas [1, 5], [2, 6], [3, 7]: rho = 8 / sqrt(16 * 17.5)
    t = trend(np.repeat(B4[:3], 2), np.array([1.0, 5, 2, 6, 3, 7]))
    rho = 8 / math.sqrt(16 * 17.5)
    assert t.rho == pytest.approx(1.0) and t.seeded
    assert t.rho_replicas == pytest.approx(rho)
    assert t.p == pytest.approx(2 * stats.t.sf(rho * math.sqrt(4 / (1 - rho**2)), 4))
    assert t.verdict == "no clear trend"  # the single-seed heuristic on the means would say "rises"
    clear = trend(np.repeat(B4, 2), np.array([1.0, 1.1, 2, 2.1, 3, 3.1, 4, 4.1]))
    assert clear.verdict == "rises" and clear.p < 0.05
    f = trend_finding("Forgetting", clear, "forgetting")
    assert f.appears == "yes" and f.seeds == "2" and "replicas: rho = 0.98" in f.numbers


def test_single_seed_verdicts_say_so() -> None:
    df = _frame(ft=[30.0, 25, 20, 22, 28], base=[20.0, 15, 10, 8, 7], delta=[0.01, 0.02, 0.04, 0.08, 0.16])
    found = effect_findings(df, "ppl/ood_prose")
    assert found and all(f.seeds == "1 (single seed)" for f in found)
    assert all("single seed, untested" in f.appears for f in found)
    u = next(f for f in found if f.effect.startswith("U-shape of fine-tuned"))
    assert u.appears == "yes (single seed, untested)"
    assert "single seed per budget: untested against seed noise" in u.sentence
    table = findings_frame(found)
    assert list(table.columns) == ["effect", "appears?", "numbers", "interval", "seeds (n)"]
    assert len(table) == len(found)


def test_a_budget_with_one_seed_makes_the_verdict_untested() -> None:
    t = trend(np.array([1e6, 1e6, 2e6, 2e6, 4e6]), np.array([1.0, 1.1, 2.0, 2.1, 3.0]))
    assert not t.seeded and t.counts == (2, 2, 1) and t.verdict == "rises"  # by the single-seed heuristic
    f = trend_finding("Forgetting", t, "forgetting")
    assert f.appears == "yes (too few seeds, untested)" and f.seeds == "1-2"
    assert "fewer than 2 seeds at some budget: untested against seed noise" in f.sentence
