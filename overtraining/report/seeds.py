"""Seeds are replicas: cells that differ only in their seeds, and statistics over them.

Two cells are *replicas* when they share checkpoint, LR, schedule and SFT data and their
resolved configs agree apart from the seed keys (``SEED_KEYS``) and the keys that do not
change what a cell computes (``NON_SCIENCE_KEYS``). Replicas share a ``group`` id in the
cell table; the report averages over them and puts a 95% interval around the mean.

The interval is Student's t-interval for the mean across seeds (``scipy.stats.t``):
``mean +- t_{0.975, n-1} * s / sqrt(n)``, with ``s`` the sample standard deviation. It
needs n >= 2 seeds; with one seed there is no interval (NaN). Differences between two
sets of replicas use Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from overtraining.results import CellRecord

CONFIDENCE = 0.95
SEED_KEYS = ("seed", "trainer.seed", "sharpness.seed")
NON_SCIENCE_KEYS = ("sweep_name", "cache_dir", "experiment", "logger", "launch", "paths", "hydra")
GROUP_FACTS = ("group", "branch", "checkpoint", "tokens", "lr", "schedule", "sft_data", "mitigation")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as one level of dotted keys: ``{"trainer": {"seed": 1}}`` -> ``{"trainer.seed": 1}``."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def science_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flat config without seed keys and non-science keys (top-level names, and everything under them)."""
    return {k: v for k, v in flatten(config).items() if k not in SEED_KEYS and k.split(".")[0] not in NON_SCIENCE_KEYS}


def replica_group(record: CellRecord) -> str:
    """The id shared by all seeds of one cell: a hash of its facts and its seed-free science config."""
    facts = [record.checkpoint, record.tokens, record.lr, record.schedule, record.sft_data]
    blob = json.dumps([facts, science_config(record.config)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Interval:
    """The mean of replicas with its 95% t-interval.

    Attributes:
        mean: the mean over replicas (NaN without data).
        lo: lower end of the t-interval (NaN when n < 2).
        hi: upper end (NaN when n < 2).
        n: the number of finite replicas.
    """

    mean: float
    lo: float
    hi: float
    n: int

    def text(self, fmt: str = ".4g") -> str:
        """``12.3 [11.8, 12.9]`` or ``12.3`` (one replica)."""
        if not np.isfinite(self.mean):
            return ""
        if not np.isfinite(self.lo):
            return f"{self.mean:{fmt}}"
        return f"{self.mean:{fmt}} [{self.lo:{fmt}}, {self.hi:{fmt}}]"


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` (NaN dropped) and its Student t-interval over them.

    Args:
        values: one value per replica.
        confidence: the interval's level (0.95: a 95% interval).

    Returns:
        ``Interval(mean, lo, hi, n)``; ``lo = hi = mean`` when the replicas agree exactly,
        NaN ends when there are fewer than two replicas.
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(v.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    sem = float(stats.sem(v))
    if sem == 0:
        return Interval(mean, mean, mean, n)
    lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(lo), float(hi), n)


@dataclass(frozen=True)
class Difference:
    """``a - b`` for two sets of replicas, with Welch's one-sided test and its two-sided 95% interval.

    Attributes:
        diff: mean(a) - mean(b).
        lo: lower end of the two-sided 95% Welch interval of the difference.
        hi: upper end.
        p: the one-sided p-value for the alternative given to ``welch`` (NaN if untestable).
        n_a: replicas in ``a``.
        n_b: replicas in ``b``.
    """

    diff: float
    lo: float
    hi: float
    p: float
    n_a: int
    n_b: int


def welch(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alternative: str) -> Difference:
    """Welch's t-test of replicas ``a`` against ``b`` (``scipy.stats.ttest_ind``, ``equal_var=False``).

    Args:
        a: replicas of one condition (NaN dropped).
        b: replicas of the other.
        alternative: ``"greater"`` (mean a > mean b) or ``"less"``.

    Returns:
        The difference of means with the two-sided 95% interval and the one-sided p-value;
        p and the interval are NaN when either side has fewer than two replicas or both
        have zero variance.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
    nan = float("nan")
    if len(a) < 2 or len(b) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return Difference(diff, nan, nan, nan, len(a), len(b))
    one_sided = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(CONFIDENCE)
    return Difference(diff, float(ci.low), float(ci.high), float(one_sided.pvalue), len(a), len(b))


def replicas_per_budget(tokens: np.ndarray, values: np.ndarray) -> dict[float, np.ndarray]:
    """The finite values at each distinct budget (ascending): the seed replicas of one curve."""
    tokens, values = np.asarray(tokens, float), np.asarray(values, float)
    keep = np.isfinite(values)
    return {float(b): values[keep & (tokens == b)] for b in np.unique(tokens[keep])}


def base_replicas(cells: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray]:
    """A base-model metric's replicas: one value per (checkpoint, seed), identical values counted once.

    Returns:
        ``(tokens, values)`` arrays, NaN dropped.
    """
    if col not in cells.columns:
        return np.array([]), np.array([])
    keys = [k for k in ("checkpoint", "tokens", "seed") if k in cells.columns]
    rows = cells.dropna(subset=[col]).groupby(keys, as_index=False)[col].mean()
    rows = rows.drop_duplicates(subset=[keys[0], col])
    return rows["tokens"].to_numpy(float), rows[col].to_numpy(float)


def interval_table(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Mean and 95% t-interval of ``y`` over the rows sharing each ``x`` (the points of one line).

    Returns:
        Index: sorted distinct ``x``; columns ``mean``, ``lo``, ``hi`` (NaN with one row) and ``n``.
    """
    rows = {key: t_interval(g[y].to_numpy(float)) for key, g in df.dropna(subset=[y]).groupby(x, sort=True)}
    return pd.DataFrame(
        {
            "mean": [iv.mean for iv in rows.values()],
            "lo": [iv.lo for iv in rows.values()],
            "hi": [iv.hi for iv in rows.values()],
            "n": [iv.n for iv in rows.values()],
        },
        index=pd.Index(list(rows), name=x),
    )


def aggregate(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per replica group: facts, ``n_seeds``, and per column its mean and 95% t-interval.

    Args:
        df: the cell table (usable cells), with a ``group`` column.
        columns: the metric columns to aggregate.

    Returns:
        Columns ``GROUP_FACTS``, ``n_seeds``, ``seeds`` (e.g. ``"0,1,2"``), then for each
        metric ``<m>`` the columns ``<m>`` (mean), ``<m> ci95_lo`` and ``<m> ci95_hi``
        (NaN with one seed); sorted by branch, tokens, LR.
    """
    if df.empty or "group" not in df.columns:
        return pd.DataFrame()
    facts = [c for c in GROUP_FACTS if c in df.columns]
    rows = []
    for _, g in df.groupby("group", sort=False):
        row: dict[str, Any] = {c: g[c].iloc[0] for c in facts}
        row["n_seeds"] = int(g["seed"].nunique())
        row["seeds"] = ",".join(str(s) for s in sorted(g["seed"].unique()))
        if "target_reached" in g.columns and g["target_reached"].notna().any():
            row["target_reached"] = f"{int(g['target_reached'].fillna(False).astype(bool).sum())}/{len(g)}"
        for col in columns:
            if col in g.columns:
                iv = t_interval(g[col].to_numpy(float))
                row[col], row[f"{col} ci95_lo"], row[f"{col} ci95_hi"] = iv.mean, iv.lo, iv.hi
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["branch", "tokens", "lr"], kind="stable").reset_index(drop=True)


def seeds_text(counts: Sequence[int]) -> str:
    """How many seeds per budget/condition: ``"2"``, ``"2-3"``, or ``"1 (single seed)"``."""
    counts = [int(c) for c in counts if c > 0]
    if not counts:
        return "0"
    lo, hi = min(counts), max(counts)
    span = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{span} (single seed)" if hi < 2 else span
