"""The report's plot style: colours per LR / budget, line styles per branch, axes, saving.

One place so every figure reads the same way: LRs are a plasma ramp (dark = small LR),
token budgets a viridis ramp (dark = few tokens), pretraining branches line styles, the
base model black and dashed. Token axes are log-scaled with ``250K``/``4M`` tick labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: the report runs on clusters and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from overtraining.report.labels import format_lr, format_tokens  # noqa: E402
from overtraining.report.seeds import interval_table  # noqa: E402

DPI = 110
BRANCH_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
TOKENS_LABEL = "pretraining tokens (log scale)"


def ramp(values: Sequence[float], cmap: str, log: bool = True) -> dict[float, tuple]:
    """Colours for sorted distinct ``values`` along a colormap (log-spaced when ``log``)."""
    vals = sorted(set(float(v) for v in values))
    pos = np.log(vals) if log and min(vals) > 0 else np.asarray(vals, float)
    span = pos.max() - pos.min() if len(vals) > 1 else 1.0
    cm = plt.get_cmap(cmap)
    return {v: cm(0.05 + 0.8 * (p - pos.min()) / span) for v, p in zip(vals, pos, strict=True)}


def lr_colors(lrs: Sequence[float]) -> dict[float, tuple]:
    return ramp(lrs, "plasma")


def token_colors(tokens: Sequence[float]) -> dict[float, tuple]:
    return ramp(tokens, "viridis")


def branch_styles(branches: Sequence[str]) -> dict[str, tuple[str, str]]:
    """(linestyle, marker) per branch; the first (sorted) branch is solid with circles."""
    return {b: BRANCH_STYLES[i % len(BRANCH_STYLES)] for i, b in enumerate(sorted(set(branches)))}


def new_figure(n: int = 1, width: float = 6.4, height: float = 4.2, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels, at most ``max_cols`` per row (unused grid cells hidden)."""
    ncols = min(n, max_cols)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def spaced_ticks(values: Sequence[float], min_ratio: float = 1.3, max_ticks: int = 10) -> list[float] | None:
    """Distinct values at least ``min_ratio`` apart (greedy from the smallest); None if too many."""
    ticks: list[float] = []
    for v in sorted(set(float(v) for v in values if v > 0)):
        if not ticks or v >= ticks[-1] * min_ratio:
            ticks.append(v)
    return ticks if 0 < len(ticks) <= max_ticks else None


def tokens_axis(ax: Axes, tokens: Sequence[float] = ()) -> None:
    """Log-scaled x axis of pretraining tokens, ticked at the budgets when there are few."""
    ax.set_xscale("log")
    ticks = spaced_ticks(tokens)
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_tokens(x)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel(TOKENS_LABEL)


def lr_axis(ax: Axes, lrs: Sequence[float] = (), axis: str = "x") -> None:
    """Log-scaled axis of fine-tuning learning rates, ticked at the LR grid when it is small."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    ticks = spaced_ticks(lrs, min_ratio=1.5)
    if ticks:
        target.set_major_locator(FixedLocator(ticks))
        target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: format_lr(v)))
    (ax.set_xlabel if axis == "x" else ax.set_ylabel)("fine-tuning learning rate (log scale)")


def auto_log_y(ax: Axes, values: np.ndarray) -> None:
    """Log-scales y when the positive values span more than a factor of 20."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 20:
        ax.set_yscale("log")
        ax.set_ylabel(f"{ax.get_ylabel()} (log scale)")


def mean_line(ax: Axes, g: pd.DataFrame, x: str, y: str, best: str | None = None, **style) -> None:
    """Mean of ``y`` over rows sharing ``x`` (seed replicas), with 95% t-interval error bars where n >= 2.

    Args:
        ax: the axes.
        g: rows of one line.
        x: x column (e.g. ``tokens``).
        y: y column.
        best: ``"min"``/``"max"`` to ring the best point with a star, or None.
        **style: passed to ``Axes.errorbar`` (color, label, linestyle, marker...).
    """
    stats = interval_table(g, x, y)
    if stats.empty:
        return
    interval_line(ax, stats.index.to_numpy(float), stats, **style)
    if best and len(stats) > 2:
        i = stats["mean"].idxmin() if best == "min" else stats["mean"].idxmax()
        ax.plot(
            [i],
            [stats["mean"][i]],
            marker="*",
            markersize=15,
            color=style.get("color"),
            markeredgecolor="black",
            linestyle="none",
            zorder=5,
        )


def interval_line(ax: Axes, x: np.ndarray, stats: pd.DataFrame, fallback: np.ndarray | None = None, **style) -> None:
    """Means (``stats["mean"]``) against ``x`` with their 95% intervals (``lo``/``hi``) as error bars.

    Points with one replica get no bar, or ``fallback`` (e.g. a std over noise draws) when given
    and no point has an interval.
    """
    lo, hi, mean = stats["lo"].to_numpy(float), stats["hi"].to_numpy(float), stats["mean"].to_numpy(float)
    if np.isfinite(lo).any():
        err = np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])
    else:
        err = fallback
    style = {"capsize": 3, "markersize": 5, "linewidth": 1.6, **style}
    ax.errorbar(x, mean, yerr=err, **style)


def band(ax: Axes, x: np.ndarray, stats: pd.DataFrame, **style) -> None:
    """Means against ``x`` as a line with the 95% interval as a shaded band (where n >= 2)."""
    ax.plot(x, stats["mean"], **style)
    if np.isfinite(stats["lo"].to_numpy(float)).any():
        ax.fill_between(x, stats["lo"], stats["hi"], color=style.get("color"), alpha=0.2, linewidth=0)


def legend(ax: Axes, title: str | None = None) -> None:
    """A legend outside the axes, on the right: inside, it can hide a curve's last points."""
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(title=title, fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def save(fig: Figure, out: Path, name: str, title: str | None = None) -> Path:
    """Saves ``fig`` as ``out/name`` (PNG), closes it and returns the path."""
    if title:
        fig.suptitle(title, fontsize=12)
    for ax in fig.axes:
        ax.grid(True, which="major", alpha=0.3)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path
