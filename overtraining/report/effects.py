"""Which effects of catastrophic overtraining a sweep shows: verdicts that are tests where seeds allow.

Each verdict is a ``Finding`` (one row of the report's findings table: effect | appears? |
numbers | interval | seeds) plus a plain sentence. The effects:

- **progressive sensitivity**: the base model's loss rise under Gaussian weight noise grows
  with pretraining tokens (Springer et al.), per noise level;
- **sharpening**: the KL sharpness proxy / Hessian estimates grow with tokens (Rofin et al.);
- **forgetting grows with pretraining**: ``forget/<metric>`` rises with tokens, per SFT LR;
- **the U-shape** (catastrophic overtraining proper), per SFT LR: the fine-tuned OOD metric
  is best at an interior budget, worse at the largest one, while the base model's own
  metric still improves between those budgets (more pretraining helps the base model but
  hurts the fine-tuned one); the same for the base model's loss under noise, per gamma,
  against the unperturbed loss.

How a verdict is reached depends on the seeds (replicas, ``overtraining.report.seeds``):

- **two or more seeds at every budget** -- a *trend* is Spearman's rank correlation of the
  quantity with tokens over all replicas (each cell one point), with its two-sided p-value
  from ``scipy.stats.spearmanr``; it "appears" when rho > 0 at p < ``ALPHA`` ("reversed" when
  rho < 0 at p < ``ALPHA``). A *U* needs (a) an interior best budget, (b) the last budget's
  replicas worse than the best budget's by a one-sided Welch t-test at p < ``ALPHA``
  (reported with the difference's two-sided 95% Welch interval), and (c) the base metric
  better at the last budget than at the best budget. (a)+(b) without (c) is reported as "the
  fine-tuned metric rises but the base model also stopped improving".
- **one seed per budget** -- the verdict is a heuristic, said to be single-seed and untested
  against noise: a trend when the rank correlation of the per-budget values reaches
  ``RHO_MIN``; a U when the last budget is at least ``U_MIN_RISE`` worse than the best.

Base-model metrics (noise sensitivity, sharpness) are shared by the cells of a checkpoint:
their replicas are the distinct values over the checkpoint's seeds (identical values, from
seeds that do not change the probe, count once). Everything here is a pure function of the
cell table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from overtraining.report.figures import GAMMA, SHARPNESS
from overtraining.report.findings import Finding
from overtraining.report.inflection import budget_means
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.seeds import Difference, base_replicas, replicas_per_budget, seeds_text, welch

RHO_MIN = 0.8  # single seed: rank correlation with tokens that counts as a trend
MIN_BUDGETS = 3  # fewer budgets cannot show a trend or a U
U_MIN_RISE = 0.02  # single seed: the largest budget must be >= 2% worse than the best for a U
ALPHA = 0.05  # seeds: the level of every test
CLEAN_LOSS = "base/perturb/base_loss"
SINGLE = "single seed per budget: untested against seed noise"
MIXED = "fewer than 2 seeds at some budget: untested against seed noise"


@dataclass(frozen=True)
class Trend:
    """A quantity against pretraining tokens.

    Attributes:
        budgets: distinct token budgets, ascending.
        means: the quantity's mean at each budget.
        rho: Spearman's rank correlation of ``means`` with ``budgets`` (NaN if constant).
        counts: replicas at each budget.
        rho_replicas: with >= 2 replicas at every budget, Spearman's rho over all replicas
            (NaN otherwise).
        p: its two-sided p-value (``scipy.stats.spearmanr``; NaN without a test).
        change: last budget minus first budget with Welch's 95% interval (None with one budget).
    """

    budgets: tuple[float, ...]
    means: tuple[float, ...]
    rho: float
    counts: tuple[int, ...] = ()
    rho_replicas: float = float("nan")
    p: float = float("nan")
    change: Difference | None = None

    @property
    def seeded(self) -> bool:
        """Whether every budget has two or more replicas (so the trend is tested)."""
        return bool(self.counts) and min(self.counts) >= 2

    @property
    def caveat(self) -> str:
        """Why an untested verdict is untested: a single seed, or too few seeds at some budget."""
        return SINGLE if not self.counts or max(self.counts) < 2 else MIXED

    @property
    def verdict(self) -> str:
        """``rises``, ``falls``, ``no clear trend`` or ``too few budgets``."""
        if len(self.budgets) < MIN_BUDGETS:
            return "too few budgets"
        if self.seeded:
            if not np.isfinite(self.p) or self.p >= ALPHA:
                return "no clear trend"
            return "rises" if self.rho_replicas > 0 else "falls"
        if not np.isfinite(self.rho):
            return "no clear trend"
        return "rises" if self.rho >= RHO_MIN else "falls" if self.rho <= -RHO_MIN else "no clear trend"


def trend(tokens: np.ndarray, values: np.ndarray) -> Trend:
    """The per-budget means of ``values``, their rank correlation with the budgets, and the replica test.

    With two or more replicas at every budget, Spearman's rho over all replicas and its
    two-sided p-value (``scipy.stats.spearmanr``) decide the verdict.
    """
    budgets, means = budget_means(tokens, values)
    reps = replicas_per_budget(tokens, values)
    counts = tuple(len(v) for v in reps.values())
    rho = float("nan") if len(budgets) < 2 or np.ptp(means) == 0 else float(spearmanr(budgets, means).statistic)
    rho_r, p = float("nan"), float("nan")
    if len(budgets) >= 2 and min(counts) >= 2:
        x = np.concatenate([np.full(len(v), b) for b, v in reps.items()])
        y = np.concatenate(list(reps.values()))
        if np.ptp(y) > 0:
            res = spearmanr(x, y)
            rho_r, p = float(res.statistic), float(res.pvalue)
    change = None
    if len(budgets) >= 2:
        first, last = reps[float(budgets[0])], reps[float(budgets[-1])]
        change = welch(last, first, "greater")
    return Trend(tuple(budgets.tolist()), tuple(means.tolist()), rho, counts, rho_r, p, change)


@dataclass(frozen=True)
class UShape:
    """The U-shape verdict of one curve.

    Attributes:
        trend: the curve (means per budget, replica counts).
        best: index of the best budget.
        rise: last-budget replicas minus best-budget replicas (Welch; p one-sided in the
            "worse" direction), or None with fewer than ``MIN_BUDGETS`` budgets.
        rel_rise: ``|mean(last) - mean(best)| / |mean(best)|``.
        base_best: the base metric's mean at the best budget (NaN if not measured).
        base_last: the base metric's mean at the last budget (NaN if not measured).
        lower: whether lower values are better.
        min_rise: the single-seed threshold on ``rel_rise``.
    """

    trend: Trend
    best: int
    rise: Difference | None
    rel_rise: float
    base_best: float
    base_last: float
    lower: bool
    min_rise: float = U_MIN_RISE

    @property
    def interior(self) -> bool:
        """(a): the best budget is neither the smallest nor the largest."""
        return 0 < self.best < len(self.trend.budgets) - 1

    @property
    def rises(self) -> bool:
        """(b): the last budget is worse than the best beyond noise (seeds) or by ``min_rise`` (one seed)."""
        if self.rise is None:
            return False
        if self.trend.seeded:
            return bool(np.isfinite(self.rise.p) and self.rise.p < ALPHA)
        return self.rel_rise >= self.min_rise

    @property
    def base_improves(self) -> bool | None:
        """(c): the base metric is better at the last budget than at the best one; None if unmeasured."""
        if not (np.isfinite(self.base_best) and np.isfinite(self.base_last)):
            return None
        return bool(self.base_last < self.base_best if self.lower else self.base_last > self.base_best)

    @property
    def verdict(self) -> str:
        """``too few budgets``, ``edge``, ``flat``, ``base stopped`` or ``appears``."""
        if len(self.trend.budgets) < MIN_BUDGETS:
            return "too few budgets"
        if not self.interior:
            return "edge"
        if not self.rises:
            return "flat"
        return "base stopped" if self.base_improves is False else "appears"


def u_test(
    tokens: np.ndarray,
    values: np.ndarray,
    lower: bool,
    base_tokens: np.ndarray | None = None,
    base_values: np.ndarray | None = None,
    min_rise: float = U_MIN_RISE,
) -> UShape:
    """Whether a curve is a U: interior best, a rise to the last budget beyond noise, and a still-improving base.

    Args:
        tokens: pretraining tokens of each cell (replicas share a budget).
        values: the metric of each cell.
        lower: whether lower values are better.
        base_tokens: tokens of the base metric's rows (e.g. one per checkpoint), or None.
        base_values: the base model's metric there (same direction as ``values``), or None.
        min_rise: single-seed threshold on the relative rise.

    Returns:
        The ``UShape``; the rise is Welch's test of last-budget vs best-budget replicas with
        ``alternative="greater"`` for lower-is-better metrics (``"less"`` otherwise).
    """
    t = trend(tokens, values)
    means = np.asarray(t.means)
    if len(means) < MIN_BUDGETS:
        nan = float("nan")
        best = int(means.argmin() if lower else means.argmax()) if len(means) else 0
        return UShape(t, best, None, 0.0, nan, nan, lower)
    best = int(means.argmin() if lower else means.argmax())
    reps = replicas_per_budget(tokens, values)
    b_best, b_last = t.budgets[best], t.budgets[-1]
    rise = welch(reps[b_last], reps[b_best], "greater" if lower else "less")
    rel = abs(means[-1] - means[best]) / abs(means[best]) if means[best] else float("inf")
    base_best = base_last = float("nan")
    if base_tokens is not None and base_values is not None:
        bb, bm = budget_means(base_tokens, base_values)
        at = dict(zip(bb.tolist(), bm.tolist(), strict=True))
        base_best, base_last = at.get(b_best, float("nan")), at.get(b_last, float("nan"))
    return UShape(t, best, rise, rel, base_best, base_last, lower, min_rise)


def u_shape(tokens: np.ndarray, values: np.ndarray, lower: bool, min_rise: float = U_MIN_RISE) -> tuple[bool, Trend]:
    """``(is_u, trend)`` by (a) and (b) of ``u_test`` alone (no base model given)."""
    u = u_test(tokens, values, lower, min_rise=min_rise)
    return u.verdict == "appears", u.trend


def _fmt_p(p: float) -> str:
    return "p = n/a" if not np.isfinite(p) else f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4"


def _interval(d: Difference | None, fmt: str = ".3g") -> str:
    if d is None or not np.isfinite(d.lo):
        return ""
    return f"{d.diff:+{fmt}} [{d.lo:{fmt}}, {d.hi:{fmt}}]"


def _span(t: Trend, fmt: str = ".3g") -> str:
    first, last = t.means[0], t.means[-1]
    if len(t.budgets) == 1:
        return f"{first:{fmt}} at {format_tokens(t.budgets[0])} tokens"
    ratio = f", x{last / first:.3g}" if first > 0 and last > 0 else ""
    return (
        f"{first:{fmt}} at {format_tokens(t.budgets[0])} -> {last:{fmt}} at {format_tokens(t.budgets[-1])} "
        f"tokens{ratio}; Spearman rho = {t.rho:.2f}"
    )


def _test_text(t: Trend) -> str:
    """How a trend was judged: the replica test, or the single-seed caveat."""
    if len(t.budgets) < MIN_BUDGETS:
        return ""
    if t.seeded:
        return f"; over {sum(t.counts)} seed replicas Spearman rho = {t.rho_replicas:.2f}, {_fmt_p(t.p)}"
    return f" ({t.caveat}; threshold |rho| >= {RHO_MIN})"


_VERB = {
    "rises": "appears",
    "falls": "reversed",
    "no clear trend": "does not appear",
    "too few budgets": f"cannot be judged ({MIN_BUDGETS} budgets needed)",
}
_APPEARS = {"rises": "yes", "falls": "reversed", "no clear trend": "no", "too few budgets": "cannot be judged"}


def _appears(verdict: str, t: Trend) -> str:
    word = _APPEARS.get(verdict, verdict)
    if t.seeded or word == "cannot be judged":
        return word
    return f"{word} ({'single seed' if t.caveat == SINGLE else 'too few seeds'}, untested)"


def trend_finding(effect: str, t: Trend, what: str, fmt: str = ".3g") -> Finding:
    """A trend with tokens as a finding: ``<effect> appears: <what> goes <a> at .. -> <b> at ..``."""
    sentence = f"{effect} {_VERB[t.verdict]}: {what} goes {_span(t, fmt)}{_test_text(t)}."
    numbers = f"{_span(t, fmt)}" + (f"; replicas: rho = {t.rho_replicas:.2f}, {_fmt_p(t.p)}" if t.seeded else "")
    interval = f"last - first: {_interval(t.change)}" if _interval(t.change) else ""
    return Finding(effect, _appears(t.verdict, t), numbers, interval, seeds_text(t.counts), sentence)


def u_finding(u: UShape, what: str, base_what: str = "the base model's own metric") -> Finding:
    """The U-shape verdict of ``what`` as a finding, with the three conditions in its numbers."""
    t, effect = u.trend, f"U-shape of {what}"
    seeds = seeds_text(t.counts)
    if u.verdict == "too few budgets":
        sentence = f"The U-shape of {what} cannot be judged: {len(t.budgets)} budget(s), {MIN_BUDGETS} needed."
        return Finding(effect, "cannot be judged", f"{len(t.budgets)} budget(s)", "", seeds, sentence)
    means = np.asarray(t.means)
    i = u.best
    at = f"{format_tokens(t.budgets[i])} ({means[i]:.4g})"
    last = f"{format_tokens(t.budgets[-1])} ({means[-1]:.4g})"
    test = (
        f"rise {u.rise.diff:+.3g}, one-sided Welch {_fmt_p(u.rise.p)}"
        if t.seeded and u.rise is not None
        else f"rise {u.rel_rise:.1%} of the best (single-seed threshold {u.min_rise:.0%})"
    )
    base = (
        f"{base_what} {u.base_best:.4g} -> {u.base_last:.4g}"
        if u.base_improves is not None
        else f"{base_what} not measured"
    )
    numbers = f"best {at} -> {last}; {test}; {base}"
    interval = f"last - best: {_interval(u.rise)}" if t.seeded and _interval(u.rise) else ""
    caveat = "" if t.seeded else f" ({t.caveat})"
    if u.verdict == "edge":
        edge = "largest" if i == len(means) - 1 else "smallest"
        sentence = f"The U-shape of {what} does not appear: best at the {edge} budget, {at}{caveat}."
        return Finding(effect, _appears("no", t), numbers, interval, seeds, sentence)
    if u.verdict == "flat":
        if t.seeded:
            sentence = (
                f"The U-shape of {what} does not clearly appear: best at {at}, and {last} is worse by "
                f"{u.rise.diff:+.3g} {_interval(u.rise).split(' ', 1)[-1]}, within seed noise "
                f"(one-sided Welch {_fmt_p(u.rise.p)}, needs p < {ALPHA})."
            )
        else:
            sentence = (
                f"The U-shape of {what} does not clearly appear: best at {at}, but the largest budget is only "
                f"{u.rel_rise:.1%} worse (a U needs {u.min_rise:.0%}): flat within noise{caveat}."
            )
        return Finding(effect, _appears("no", t), numbers, interval, seeds, sentence)
    rise = f" ({test})" if t.seeded else caveat
    if u.verdict == "base stopped":
        sentence = (
            f"For {what}, the fine-tuned metric rises from {at} to {last}{rise}, but the base model also "
            f"stopped improving ({base}): not catastrophic overtraining."
        )
        return Finding(effect, "no: base also stopped improving", numbers, interval, seeds, sentence)
    note = "" if u.base_improves else f"; {base_what} was not measured, so whether it still improves is unknown"
    sentence = f"The U-shape of {what} appears: best at {at}, worse again at {last}{rise}{note}."
    return Finding(effect, _appears("yes", t), numbers, interval, seeds, sentence)


def _agreeing_seeds(f: Finding, n_seeds: int) -> Finding:
    """A base-model finding whose seeds all measured the same values: one distinct value, not one seed."""
    if n_seeds < 2 or not f.seeds.endswith("(single seed)"):
        return f
    return replace(
        f,
        appears=f.appears.replace("single seed", "seeds agree"),
        seeds=f"1 distinct value ({n_seeds} seeds agree)",
        sentence=f.sentence.replace(SINGLE, f"the {n_seeds} seeds gave identical values: untested against noise"),
    )


def sensitivity_findings(cells: pd.DataFrame) -> list[Finding]:
    """Progressive sensitivity (and the noise U) per gamma, and sharpening, of one branch's cells.

    When a checkpoint's seeds all measured the same base values, the verdict says so instead of
    calling the sweep single-seed.
    """
    n_seeds = int(cells.groupby("checkpoint")["seed"].nunique().max()) if "seed" in cells.columns else 1
    return [_agreeing_seeds(f, n_seeds) for f in _sensitivity_findings(cells)]


def _sensitivity_findings(cells: pd.DataFrame) -> list[Finding]:
    out = []
    gammas = sorted((float(m.group(1)), c) for c in cells.columns if (m := GAMMA.match(c)) and cells[c].notna().any())
    for gamma, col in gammas:
        t = trend(*base_replicas(cells, col))
        effect = f"Progressive sensitivity (noise gamma = {gamma:g})"
        out.append(trend_finding(effect, t, "the base model's loss rise under noise"))
        noisy = col.replace("delta_loss_mean", "loss_mean")
        if noisy in cells.columns and cells[noisy].notna().any():
            u = u_test(*base_replicas(cells, noisy), True, *base_replicas(cells, CLEAN_LOSS))
            out.append(u_finding(u, f"the base model's loss under noise gamma = {gamma:g}", "the unperturbed loss"))
    for col, label in SHARPNESS.items():
        if col in cells.columns and cells[col].notna().any():
            t = trend(*base_replicas(cells, col))
            out.append(trend_finding(f"Sharpening by the {label}", t, "it"))
    return out


def finetuning_findings(cells: pd.DataFrame, metric: str) -> list[Finding]:
    """Forgetting trend and U-shape of ``ft/<metric>`` (against ``base/<metric>``), per SFT LR of one branch."""
    out = []
    ft, forget, base = f"ft/{metric}", f"forget/{metric}", f"base/{metric}"
    what = metric_label(metric).split(" (")[0]
    base_t, base_v = base_replicas(cells, base)
    for lr, g in cells.groupby("lr"):
        tokens = g["tokens"].to_numpy(float)
        if forget in g.columns and g[forget].notna().any():
            t = trend(tokens, g[forget].to_numpy(float))
            effect = f"Forgetting that grows with pretraining (LR {format_lr(lr)})"
            out.append(trend_finding(effect, t, f"forgetting of {what}", ".3f"))
        if ft in g.columns and g[ft].notna().any():
            u = u_test(tokens, g[ft].to_numpy(float), lower_is_better(ft), base_t, base_v)
            out.append(u_finding(u, f"fine-tuned {what} (LR {format_lr(lr)})", f"base {what}"))
    return out


def _rename(f: Finding, tag: str) -> Finding:
    return Finding(tag + f.effect, f.appears, f.numbers, f.interval, f.seeds, tag + f.sentence)


def effect_findings(df: pd.DataFrame, metric: str | None) -> list[Finding]:
    """Every effect verdict, per pretraining branch (branch tags only when there are several)."""
    if df.empty:
        return []
    out = []
    branches = sorted(df["branch"].unique())
    for branch in branches:
        cells = df[df["branch"] == branch]
        tag = f"[{branch}] " if len(branches) > 1 else ""
        found = sensitivity_findings(cells)
        if metric:
            found += finetuning_findings(cells, metric)
        out += [_rename(f, tag) for f in found]
    return out


def effect_sentences(df: pd.DataFrame, metric: str | None) -> list[str]:
    """Every verdict as a sentence (``effect_findings``' sentences)."""
    return [f.sentence for f in effect_findings(df, metric)]
