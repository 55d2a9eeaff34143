"""Which effects of catastrophic overtraining a sweep shows, in plain sentences with numbers.

The report's figures show curves; these verdicts say what the curves amount to, so that a
reader (and the README) can state honestly which effects appear and which do not:

- **progressive sensitivity**: the base model's loss rise under Gaussian weight noise grows
  with pretraining tokens (Springer et al.), per noise level;
- **sharpening**: the KL sharpness proxy / Hessian estimates grow with tokens (Rofin et al.);
- **forgetting grows with pretraining**: ``forget/<metric>`` rises with tokens, per SFT LR;
- **the U-shape**: the fine-tuned OOD metric is best at an interior budget and worse at the
  largest one by at least ``U_MIN_RISE`` of its best value (catastrophic overtraining
  proper), per SFT LR; the same for the base model's loss under noise, per gamma.

A monotone trend is judged by Spearman's rank correlation with tokens (``scipy.stats``):
it "appears" when rho >= ``RHO_MIN`` (<= -RHO_MIN for a falling trend is "reversed").
Everything here is a pure function of the cell table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from overtraining.report.figures import GAMMA, SHARPNESS
from overtraining.report.inflection import budget_means
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.table import per_checkpoint

RHO_MIN = 0.8  # rank correlation with tokens that counts as a trend
MIN_BUDGETS = 3  # fewer budgets cannot show a trend or a U
U_MIN_RISE = 0.02  # the largest budget must be >= 2% worse than the best for a U


@dataclass(frozen=True)
class Trend:
    """A quantity against pretraining tokens.

    Attributes:
        budgets: distinct token budgets, ascending.
        means: the quantity's mean at each budget.
        rho: Spearman's rank correlation of ``means`` with ``budgets`` (NaN if constant).
    """

    budgets: tuple[float, ...]
    means: tuple[float, ...]
    rho: float

    @property
    def verdict(self) -> str:
        """``rises``, ``falls``, ``no clear trend`` or ``too few budgets``."""
        if len(self.budgets) < MIN_BUDGETS:
            return "too few budgets"
        if not np.isfinite(self.rho):
            return "no clear trend"
        return "rises" if self.rho >= RHO_MIN else "falls" if self.rho <= -RHO_MIN else "no clear trend"


def trend(tokens: np.ndarray, values: np.ndarray) -> Trend:
    """The per-budget means of ``values`` and their rank correlation with the budgets."""
    budgets, means = budget_means(tokens, values)
    if len(budgets) < 2 or np.ptp(means) == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(budgets, means).statistic)
    return Trend(tuple(budgets.tolist()), tuple(means.tolist()), rho)


def u_shape(tokens: np.ndarray, values: np.ndarray, lower: bool, min_rise: float = U_MIN_RISE) -> tuple[bool, Trend]:
    """Whether a metric is best at an interior budget and clearly worse at the largest one.

    Args:
        tokens: pretraining tokens of each cell.
        values: the metric of each cell.
        lower: whether lower values are better.
        min_rise: how much worse than the best the largest budget must be, relative to the
            best value (a flat curve with an interior argmin by noise is not a U).

    Returns:
        ``(is_u, trend)``: ``is_u`` is True when the best budget is neither the smallest nor the
        largest one tried, the largest is worse by at least ``min_rise``, and there are at
        least ``MIN_BUDGETS`` budgets.
    """
    t = trend(tokens, values)
    if len(t.budgets) < MIN_BUDGETS:
        return False, t
    means = np.asarray(t.means)
    best = int(means.argmin() if lower else means.argmax())
    return 0 < best < len(means) - 1 and _rise(means, best) >= min_rise, t


def _rise(means: np.ndarray, best: int) -> float:
    """How much worse the largest budget is than the best, relative to the best value."""
    return abs(means[-1] - means[best]) / abs(means[best]) if means[best] else float("inf")


def _span(t: Trend, fmt: str = ".3g") -> str:
    first, last = t.means[0], t.means[-1]
    if len(t.budgets) == 1:
        return f"{first:{fmt}} at {format_tokens(t.budgets[0])} tokens"
    ratio = f", x{last / first:.3g}" if first > 0 and last > 0 else ""
    return (
        f"{first:{fmt}} at {format_tokens(t.budgets[0])} -> {last:{fmt}} at {format_tokens(t.budgets[-1])} "
        f"tokens{ratio}; Spearman rho = {t.rho:.2f}"
    )


_VERB = {
    "rises": "appears",
    "falls": "reversed",
    "no clear trend": "does not appear",
    "too few budgets": f"cannot be judged ({MIN_BUDGETS} budgets needed)",
}


def sensitivity_sentences(base: pd.DataFrame) -> list[str]:
    """Progressive sensitivity and sharpening, from one row per checkpoint of one branch."""
    out = []
    gammas = sorted((float(m.group(1)), c) for c in base.columns if (m := GAMMA.match(c)) and base[c].notna().any())
    for gamma, col in gammas:
        t = trend(base["tokens"].to_numpy(), base[col].to_numpy())
        out.append(
            f"Progressive sensitivity (noise gamma = {gamma:g}) {_VERB[t.verdict]}: the base model's loss "
            f"rise under noise goes {_span(t)}."
        )
        noisy = col.replace("delta_loss_mean", "loss_mean")
        if noisy in base.columns and base[noisy].notna().any():
            what = f"the base model's loss under noise gamma = {gamma:g}"
            out.append(_u_sentence(base["tokens"].to_numpy(), base[noisy].to_numpy(), True, what))
    for col, label in SHARPNESS.items():
        if col in base.columns and base[col].notna().any():
            t = trend(base["tokens"].to_numpy(), base[col].to_numpy())
            out.append(f"Sharpening by the {label} {_VERB[t.verdict]}: {_span(t)}.")
    return out


def _u_sentence(tokens: np.ndarray, values: np.ndarray, lower: bool, what: str) -> str:
    """``The U-shape of <what> appears: best at ...`` or ``does not appear: best at the ... budget``."""
    is_u, t = u_shape(tokens, values, lower)
    if len(t.budgets) < MIN_BUDGETS:
        return f"The U-shape of {what} cannot be judged: {len(t.budgets)} budget(s), {MIN_BUDGETS} needed."
    means = np.asarray(t.means)
    i = int(means.argmin() if lower else means.argmax())
    if is_u:
        return (
            f"The U-shape of {what} appears: best at {format_tokens(t.budgets[i])} ({means[i]:.4g}), "
            f"worse again at {format_tokens(t.budgets[-1])} ({means[-1]:.4g})."
        )
    at = f"{format_tokens(t.budgets[i])} ({means[i]:.4g})"
    if 0 < i < len(means) - 1:
        return (
            f"The U-shape of {what} does not clearly appear: best at {at}, but the largest budget is only "
            f"{_rise(means, i):.1%} worse (a U needs {U_MIN_RISE:.0%}): flat within noise."
        )
    edge = "largest" if i == len(means) - 1 else "smallest"
    return f"The U-shape of {what} does not appear: best at the {edge} budget, {at}."


def finetuning_sentences(cells: pd.DataFrame, metric: str) -> list[str]:
    """Forgetting trend and U-shape of ``ft/<metric>``, per SFT LR of one branch."""
    out = []
    ft, forget = f"ft/{metric}", f"forget/{metric}"
    what = metric_label(metric).split(" (")[0]
    for lr, g in cells.groupby("lr"):
        tokens = g["tokens"].to_numpy()
        if forget in g.columns and g[forget].notna().any():
            t = trend(tokens, g[forget].to_numpy())
            out.append(
                f"Forgetting that grows with pretraining (LR {format_lr(lr)}) {_VERB[t.verdict]}: "
                f"forgetting of {what} goes {_span(t, '.3f')}."
            )
        if ft in g.columns and g[ft].notna().any():
            out.append(
                _u_sentence(tokens, g[ft].to_numpy(), lower_is_better(ft), f"fine-tuned {what} (LR {format_lr(lr)})")
            )
    return out


def effect_sentences(df: pd.DataFrame, metric: str | None) -> list[str]:
    """Every verdict, per pretraining branch (branch tags only when there are several)."""
    if df.empty:
        return []
    out = []
    branches = sorted(df["branch"].unique())
    cols = [c for c in df.columns if c.startswith("base/perturb/gamma=") or c in SHARPNESS]
    for branch in branches:
        cells = df[df["branch"] == branch]
        tag = f"[{branch}] " if len(branches) > 1 else ""
        found = sensitivity_sentences(per_checkpoint(cells, cols)) if cols else []
        if metric:
            found += finetuning_sentences(cells, metric)
        out += [tag + s for s in found]
    return out
