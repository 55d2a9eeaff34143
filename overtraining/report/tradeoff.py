"""The ID-vs-OOD trade-off: Pareto fronts and the ID-optimal ("tuned") LR per checkpoint.

Springer et al.'s tuned-LR experiment asks whether degradation survives tuning: for each
checkpoint pick the LR with the best ID score, then look at the OOD score of those cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overtraining.report.labels import lower_is_better

CHECKPOINT_KEYS = ["branch", "checkpoint", "tokens"]


def pareto_front(x: np.ndarray, y: np.ndarray, x_higher: bool = True, y_higher: bool = True) -> np.ndarray:
    """Indices of the non-dominated points, ordered by ``x``.

    A point is dominated when another is at least as good in both coordinates and strictly
    better in one.

    Args:
        x: first objective, shape (N,).
        y: second objective, shape (N,).
        x_higher: whether larger ``x`` is better.
        y_higher: whether larger ``y`` is better.

    Returns:
        Integer indices into ``x``/``y`` of the front, sorted by ``x``.
    """
    gx = np.asarray(x, float) * (1 if x_higher else -1)  # (N,) larger = better
    gy = np.asarray(y, float) * (1 if y_higher else -1)
    ge = (gx[None, :] >= gx[:, None]) & (gy[None, :] >= gy[:, None])  # (N, N): j at least as good as i
    gt = (gx[None, :] > gx[:, None]) | (gy[None, :] > gy[:, None])
    dominated = (ge & gt).any(axis=1)
    front = np.flatnonzero(~dominated)
    return front[np.argsort(np.asarray(x, float)[front], kind="stable")]


def id_optimal_lr(df: pd.DataFrame, id_metric: str) -> pd.DataFrame:
    """The LR with the best mean ID metric (over seeds) for each checkpoint.

    Args:
        df: the cell table.
        id_metric: an ID column, e.g. ``ft/id/accuracy`` (direction read from its name).

    Returns:
        Columns ``branch``, ``checkpoint``, ``tokens``, ``lr`` and ``id_metric`` (the mean
        at that LR), one row per checkpoint, sorted by tokens.
    """
    means = df.dropna(subset=[id_metric]).groupby([*CHECKPOINT_KEYS, "lr"], as_index=False)[id_metric].mean()
    if means.empty:
        return means
    pick = means.groupby(CHECKPOINT_KEYS)[id_metric]
    best = pick.idxmin() if lower_is_better(id_metric) else pick.idxmax()
    return means.loc[best.to_numpy()].sort_values("tokens").reset_index(drop=True)


def tuned_cells(df: pd.DataFrame, id_metric: str) -> pd.DataFrame:
    """The cells fine-tuned at their checkpoint's ID-optimal LR (all their seeds)."""
    best = id_optimal_lr(df, id_metric)
    if best.empty:
        return df.iloc[0:0]
    return df.merge(best[[*CHECKPOINT_KEYS, "lr"]], on=[*CHECKPOINT_KEYS, "lr"], how="inner")
