"""The ID-vs-OOD trade-off: Pareto fronts and the ID-optimal ("tuned") LR per checkpoint.

Springer et al.'s tuned-LR experiment asks whether degradation survives tuning: for each
checkpoint pick the LR with the best ID score, then look at the OOD score of those cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from overtraining.report.findings import Finding
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.seeds import seeds_text

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
        Columns ``branch``, ``checkpoint``, ``tokens``, ``lr``, ``id_metric`` (the mean
        at that LR), ``n_lrs`` (LRs tried at the checkpoint) and ``edge``: ``"largest"`` /
        ``"smallest"`` when the best LR is the largest / smallest of the checkpoint's LR grid
        (the optimum may lie outside the grid), ``""`` inside it or with one LR; one row per
        checkpoint, sorted by tokens.
    """
    means = df.dropna(subset=[id_metric]).groupby([*CHECKPOINT_KEYS, "lr"], as_index=False)[id_metric].mean()
    if means.empty:
        return means
    pick = means.groupby(CHECKPOINT_KEYS)[id_metric]
    best = pick.idxmin() if lower_is_better(id_metric) else pick.idxmax()
    grid = means.groupby(CHECKPOINT_KEYS)["lr"].agg(["min", "max", "count"]).reset_index()
    out = means.loc[best.to_numpy()].merge(grid, on=CHECKPOINT_KEYS)
    out["n_lrs"] = out["count"]
    out["edge"] = np.where(
        out["count"] < 2,
        "",
        np.where(out["lr"] == out["max"], "largest", np.where(out["lr"] == out["min"], "smallest", "")),
    )
    out = out.drop(columns=["min", "max", "count"])
    return out.sort_values("tokens").reset_index(drop=True)


def edge_lr_findings(df: pd.DataFrame, id_metric: str) -> list[Finding]:
    """Whether the ID-optimal LR lies inside the LR grid, per branch (a flag at the grid's edge).

    An optimum at the largest (smallest) LR tried says only that the best LR is at least
    (at most) that large: the optimum may lie outside the grid.
    """
    best = id_optimal_lr(df, id_metric)
    if best.empty or best["n_lrs"].max() < 2:
        return []
    out = []
    branches = sorted(best["branch"].unique())
    what = metric_label(id_metric).split(" (")[0]
    for branch, g in best.groupby("branch"):
        tag = f"[{branch}] " if len(branches) > 1 else ""
        effect = f"{tag}ID-optimal LR (best {what}) inside the LR grid"
        numbers = "; ".join(f"{format_tokens(t)}: {format_lr(lr)}" for t, lr in zip(g["tokens"], g["lr"], strict=True))
        parts = []
        for edge in ("largest", "smallest"):
            at = g.loc[g["edge"] == edge, "tokens"]
            if len(at):
                budgets = ", ".join(format_tokens(t) for t in at)
                parts.append(f"at the {edge} LR of the grid: the optimum may lie outside it ({budgets})")
        appears = "no: " + "; ".join(parts) if parts else "yes"
        sentence = (
            f"{tag}The ID-optimal LR per budget ({numbers}) is "
            + ("; ".join(parts) if parts else "inside the LR grid at every budget")
            + "."
        )
        n = df[df["branch"] == branch].groupby(["checkpoint", "lr"])["seed"].nunique()
        out.append(Finding(effect, appears, numbers, "", seeds_text(n.tolist()), sentence))
    return out


def tuned_cells(df: pd.DataFrame, id_metric: str) -> pd.DataFrame:
    """The cells fine-tuned at their checkpoint's ID-optimal LR (all their seeds)."""
    best = id_optimal_lr(df, id_metric)
    if best.empty:
        return df.iloc[0:0]
    return df.merge(best[[*CHECKPOINT_KEYS, "lr"]], on=[*CHECKPOINT_KEYS, "lr"], how="inner")
