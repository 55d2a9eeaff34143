"""Where does more pretraining stop helping? The budget that optimises a fine-tuned metric.

For one LR (or the tuned LR) the cells give a metric at several pretraining token budgets,
with one value per seed: the cells of one budget are its seed replicas. The optimal budget
is the argmin (loss, perplexity) or argmax (accuracy) of the per-budget mean over seeds.
Its uncertainty is a bootstrap over seeds: resample the replicas within each budget with
replacement, recompute the argopt budget, and report the [2.5, 97.5] percentile interval
of those budgets (only where some budget has two or more seeds; with one seed per budget a
resample is the data itself, and the page says there is no interval).

Everything here is a pure function of arrays or of the cell table; ``describe`` turns an
``Optimum`` into one plain sentence for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from overtraining.report.findings import Finding
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.seeds import replicas_per_budget, seeds_text
from overtraining.report.tradeoff import tuned_cells

N_BOOT = 1000


@dataclass(frozen=True)
class Optimum:
    """The best pretraining budget of one fine-tuned metric curve.

    Attributes:
        budgets: the token budgets, ascending.
        means: the metric's mean over seeds at each budget.
        best_tokens: the budget with the best mean.
        best_value: the mean there.
        ci: the bootstrap [2.5, 97.5] percentile interval of the best budget, or None.
        lower: whether lower values are better.
        counts: seed replicas at each budget.
    """

    budgets: tuple[float, ...]
    means: tuple[float, ...]
    best_tokens: float
    best_value: float
    ci: tuple[float, float] | None
    lower: bool
    counts: tuple[int, ...] = ()

    @property
    def worse_by(self) -> float:
        """How much worse the largest budget is than the best (>= 0; 0 when it is the best)."""
        return abs(self.means[-1] - self.best_value)

    @property
    def edge(self) -> str | None:
        """``"first"``/``"last"`` when the best budget is the smallest/largest tried, else None."""
        if self.best_tokens == self.budgets[-1]:
            return "last"
        return "first" if self.best_tokens == self.budgets[0] else None


def budget_means(tokens: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct budgets (ascending) and the mean value at each; NaN values are dropped."""
    tokens, values = np.asarray(tokens, float), np.asarray(values, float)
    keep = np.isfinite(values)
    budgets = np.unique(tokens[keep])
    return budgets, np.array([values[keep & (tokens == b)].mean() for b in budgets])


def bootstrap_interval(
    tokens: np.ndarray, values: np.ndarray, lower: bool, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float] | None:
    """The [2.5, 97.5] percentile interval of the best budget under resampling within budgets.

    Args:
        tokens: pretraining tokens of each cell, shape (N,).
        values: the metric of each cell, shape (N,).
        lower: whether lower values are better.
        n_boot: bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        ``(lo, hi)`` budgets, or None when no budget has more than one cell.
    """
    tokens, values = np.asarray(tokens, float), np.asarray(values, float)
    keep = np.isfinite(values)
    budgets = np.unique(tokens[keep])
    groups = [values[keep & (tokens == b)] for b in budgets]
    if len(budgets) == 0 or max(len(g) for g in groups) < 2:
        return None
    rng = np.random.default_rng(seed)
    # (n_boot, B): the mean of a resample of each budget's cells.
    boot = np.stack([g[rng.integers(0, len(g), size=(n_boot, len(g)))].mean(axis=1) for g in groups], axis=1)
    best = budgets[boot.argmin(axis=1) if lower else boot.argmax(axis=1)]  # (n_boot,)
    return (
        float(np.quantile(best, 0.025, method="inverted_cdf")),
        float(np.quantile(best, 0.975, method="inverted_cdf")),
    )


def find_optimum(
    tokens: np.ndarray, values: np.ndarray, lower: bool, n_boot: int = N_BOOT, seed: int = 0
) -> Optimum | None:
    """The best budget of one curve with its bootstrap interval; None when there is no data."""
    budgets, means = budget_means(tokens, values)
    if len(budgets) == 0:
        return None
    i = int(means.argmin() if lower else means.argmax())
    return Optimum(
        tuple(budgets.tolist()),
        tuple(means.tolist()),
        float(budgets[i]),
        float(means[i]),
        bootstrap_interval(tokens, values, lower, n_boot, seed),
        lower,
        tuple(len(v) for v in replicas_per_budget(tokens, values).values()),
    )


def describe(opt: Optimum, subject: str, what: str) -> str:
    """One plain sentence about an optimum.

    Args:
        opt: the optimum.
        subject: who was fine-tuned how, e.g. ``"After fine-tuning at LR 1e-4"``.
        what: the metric's readable name, e.g. ``"OOD prose perplexity"``.

    Returns:
        e.g. "After fine-tuning at LR 1e-4, OOD prose perplexity is best at 8M pretraining
        tokens [95% CI 4M, 16M] (21.3) and worse by 4 (+19%) at 32M, the largest budget."
    """
    t = format_tokens
    if len(opt.budgets) < 2:
        only = t(opt.budgets[0])
        return f"{subject}, {what} was measured at one budget only ({only} tokens): no optimum over tokens."
    ci = f" [95% CI {t(opt.ci[0])}, {t(opt.ci[1])}]" if opt.ci else ""
    note = "" if opt.ci else "; one seed per budget, so no interval"
    at = f"{t(opt.best_tokens)} pretraining tokens{ci} ({opt.best_value:.4g}{note})"
    rel = f" ({opt.worse_by / abs(opt.best_value):+.0%})" if opt.best_value else ""
    worse = f"worse by {opt.worse_by:.3g}{rel} at {t(opt.budgets[-1])}"
    if opt.edge == "last":
        gain = abs(opt.means[0] - opt.best_value)
        return (
            f"{subject}, {what} is best at the largest budget tried, {at}, {gain:.3g} better than at "
            f"{t(opt.budgets[0])}: no optimum inside the sweep, more pretraining kept helping."
        )
    if opt.edge == "first":
        return (
            f"{subject}, {what} is best at the smallest budget tried, {at}, and {worse}: "
            f"no optimum inside the sweep, more pretraining only hurt (the best may lie below it)."
        )
    return f"{subject}, {what} is best at {at} and {worse}, the largest budget."


def _plain(metric: str) -> str:
    """A metric's label without its units, for sentences: ``OOD prose perplexity``."""
    return metric_label(metric).split(" (")[0]


def optimum_finding(opt: Optimum, subject: str, what: str, label: str) -> Finding:
    """An optimum as a finding: where the best budget is, its value and its bootstrap interval.

    Args:
        opt: the optimum.
        subject: the sentence's subject (``describe``).
        what: the metric's readable name.
        label: the effect's name in the table, e.g. ``[wsd] Optimal pretraining budget (LR 1e-3)``.
    """
    t = format_tokens
    effect = label
    seeds = seeds_text(opt.counts)
    sentence = describe(opt, subject, what)
    if len(opt.budgets) < 2:
        return Finding(effect, "cannot be judged", f"one budget ({t(opt.budgets[0])})", "", seeds, sentence)
    appears = {"last": "no: best at the largest budget", "first": "no: best at the smallest budget"}.get(
        opt.edge or "", "yes: interior optimum"
    )
    rel = f" ({opt.worse_by / abs(opt.best_value):+.0%})" if opt.best_value else ""
    numbers = f"best {t(opt.best_tokens)} ({opt.best_value:.4g}); {t(opt.budgets[-1])} worse by {opt.worse_by:.3g}{rel}"
    interval = f"[{t(opt.ci[0])}, {t(opt.ci[1])}] (bootstrap over seeds)" if opt.ci else ""
    return Finding(effect, appears, numbers, interval, seeds, sentence)


def optima_findings(
    df: pd.DataFrame, metric: str, id_metric: str | None = None, n_boot: int = N_BOOT, seed: int = 0
) -> list[Finding]:
    """Findings on the best budget of ``metric`` per LR and for the tuned LR, per branch.

    Args:
        df: the usable cells of the cell table.
        metric: a fine-tuned metric column, e.g. ``ft/ppl/ood_prose``.
        id_metric: the ID column that picks the tuned LR per checkpoint, or None to skip it.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        One finding per (branch, LR), then one per branch for the tuned LR.
    """
    if metric not in df.columns:
        return []
    lower, what = lower_is_better(metric), _plain(metric)
    branches = sorted(df["branch"].unique())
    out = []
    for branch in branches:
        cells = df[df["branch"] == branch]
        tag = f"[{branch}] " if len(branches) > 1 else ""
        label = f"{tag}Optimal pretraining budget of {what}"
        groups = [
            (f"{tag}After fine-tuning at LR {format_lr(lr)}", f"{label} (LR {format_lr(lr)})", g)
            for lr, g in cells.groupby("lr")
        ]
        if id_metric and id_metric in cells.columns and cells["lr"].nunique() > 1:
            subject = f"{tag}With the LR tuned per checkpoint for the best {_plain(id_metric)}"
            groups.append((subject, f"{label} (tuned LR)", tuned_cells(cells, id_metric)))
        for subject, name, g in groups:
            opt = find_optimum(g["tokens"].to_numpy(), g[metric].to_numpy(), lower, n_boot, seed)
            if opt is not None:
                out.append(optimum_finding(opt, subject, what, name))
    return out


def optima_sentences(
    df: pd.DataFrame, metric: str, id_metric: str | None = None, n_boot: int = N_BOOT, seed: int = 0
) -> list[str]:
    """The sentences of ``optima_findings`` (one per (branch, LR), then one per branch for the tuned LR)."""
    return [f.sentence for f in optima_findings(df, metric, id_metric, n_boot, seed)]
