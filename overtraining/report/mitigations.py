"""Mitigations of a sweep: learning-forgetting frontiers, forgetting at equal ID gain, and the U-shape.

Every cell is one point in the learning-forgetting plane:

    ID gain    = base/<id> - ft/<id>          (``id/loss``: nats per answer token; > 0 = learned)
    forgetting = forget/<ood>                 (e.g. ``forget/ppl/ood_prose/loss``; > 0 = forgot)

A mitigation (the ``mitigation`` column of the cell table: ``none``, ``replay 0.05``,
``l2 0.1``, ``ewc 0.1``, ``sam 0.05``, ``wise``, ``lora``, ...) gives one point per LR (and per
strength, which is part of its label); a ``wise`` cell gives one point per interpolation
alpha from its ``wise/alpha=<a>/`` metrics (alpha = 1 is its plain fine-tuned model). Points
are means over seeds with 95% t-intervals on both axes (``overtraining.report.seeds``).

Forgetting at equal ID gain: for each seed, the ``none`` points of that checkpoint and seed
(one per LR) are joined by straight lines in (ID gain, forgetting), and a mitigation's point
is compared with the baseline's forgetting at its own ID gain (linear interpolation, no
extrapolation):

    delta = forgetting_m - forgetting_none(ID gain_m)          (< 0: the mitigation forgets less)

The per-seed deltas give a mean and a 95% t-interval. The same comparison runs against plain
SFT's WiSE-FT curve (a ``wise`` cell at the same checkpoint, LR and seed is plain SFT followed
by interpolation back to the base: its alphas are a measured baseline frontier from the base
model to plain SFT), and at the same LR (Welch's intervals of the differences of forgetting
and of ID gain), which needs no LR grid.

The U-shape verdict per mitigation reuses ``effects.u_test`` on ``ft/<ood>`` against tokens,
per LR: a mitigation *removes* the U when the ``none`` cells at that LR show it and the
mitigation's cells do not.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from overtraining.report import style
from overtraining.report.effects import UShape, u_finding, u_test
from overtraining.report.findings import Finding
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.seeds import Interval, base_replicas, t_interval, welch

BASELINE = "none"
ID_METRIC = "id/loss"
WISE = re.compile(r"^wise/alpha=([^/]+)/ft/(.+)$")
POINT_KEYS = ["mitigation", "checkpoint", "tokens", "lr", "alpha"]
WISE_CURVE = "equal ID gain on plain SFT's WiSE curve"


def several(df: pd.DataFrame) -> bool:
    """Whether the sweep compares mitigations (two or more labels in its ``mitigation`` column)."""
    return "mitigation" in df.columns and df["mitigation"].nunique() > 1


def baseline_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The cells the sweep-wide figures and findings use when mitigations are mixed: ``none`` ones."""
    if not several(df) or not (df["mitigation"] == BASELINE).any():
        return df
    return df[df["mitigation"] == BASELINE]


def _gain(base: pd.Series, ft: pd.Series, id_metric: str) -> pd.Series:
    """ID gain: ``base - ft`` for lower-is-better metrics, ``ft - base`` otherwise."""
    return base - ft if lower_is_better(id_metric) else ft - base


def frontier_frame(df: pd.DataFrame, metric: str, id_metric: str = ID_METRIC) -> pd.DataFrame:
    """One row per cell (and per alpha for ``wise`` cells): the learning-forgetting plane.

    Args:
        df: the cell table (usable cells) with a ``mitigation`` column.
        metric: the OOD metric ``<m>`` (``forget/<m>`` is the forgetting).
        id_metric: the ID metric ``<id>`` (``base/<id>`` and ``ft/<id>``).

    Returns:
        Columns ``mitigation``, ``checkpoint``, ``tokens``, ``lr``, ``alpha`` (NaN except for
        wise), ``seed``, ``id_gain``, ``forgetting``, ``ft`` (the fine-tuned OOD metric);
        empty when the cells lack the metrics.
    """
    need = [f"base/{id_metric}", f"ft/{id_metric}", f"forget/{metric}"]
    if df.empty or "mitigation" not in df.columns or any(c not in df.columns for c in need):
        return pd.DataFrame()
    keys = ["mitigation", "checkpoint", "tokens", "lr", "seed"]
    plain = df[keys].copy()
    plain["alpha"] = np.nan
    plain["id_gain"] = _gain(df[need[0]], df[need[1]], id_metric)
    plain["forgetting"] = df[need[2]]
    plain["ft"] = df.get(f"ft/{metric}", np.nan)
    parts = [plain]
    wise = df[df["mitigation"] == "wise"]
    alphas = sorted({float(m.group(1)) for c in df.columns if (m := WISE.match(c)) and m.group(2) == id_metric})
    for a in alphas:
        tag = f"wise/alpha={a:g}"
        cols = [f"{tag}/ft/{id_metric}", f"{tag}/forget/{metric}", f"{tag}/ft/{metric}"]
        if wise.empty or any(c not in wise.columns for c in cols):
            continue
        rows = wise[keys].copy()
        rows["mitigation"], rows["alpha"] = "wise", a
        rows["id_gain"] = _gain(wise[need[0]], wise[cols[0]], id_metric)
        rows["forgetting"], rows["ft"] = wise[cols[1]], wise[cols[2]]
        parts.append(rows)
    if len(parts) > 1:  # a wise cell's own point is its alpha = 1 one
        parts[0] = plain[plain["mitigation"] != "wise"]
    out = pd.concat(parts, ignore_index=True).dropna(subset=["id_gain", "forgetting"])
    return out.reset_index(drop=True)


def frontier_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of ID gain and forgetting, per (mitigation, checkpoint, LR, alpha)."""
    rows = []
    for key, g in frame.groupby(POINT_KEYS, dropna=False, sort=True):
        gain, forget = t_interval(g["id_gain"].to_numpy(float)), t_interval(g["forgetting"].to_numpy(float))
        rows.append(dict(zip(POINT_KEYS, key, strict=True)) | _iv("id_gain", gain) | _iv("forgetting", forget))
    return pd.DataFrame(rows)


def _iv(name: str, iv: Interval) -> dict:
    return {name: iv.mean, f"{name}_lo": iv.lo, f"{name}_hi": iv.hi, "n_seeds": iv.n}


def _colors(labels: Sequence[str]) -> dict[str, tuple]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    ordered = sorted(labels, key=lambda s: (s != BASELINE, s))
    return {label: cmap(i % 10) for i, label in enumerate(ordered)}


def frontier_figure(points: pd.DataFrame, metric: str, id_metric: str, out: Path, max_panels: int = 6) -> Path | None:
    """The learning-forgetting frontier: one panel per checkpoint, one line per mitigation.

    x = forgetting, y = ID gain; each point a (LR) or, for wise, an (LR, alpha); error bars:
    95% t-intervals over seeds. Up and left is better.
    """
    if points.empty or points["mitigation"].nunique() < 1:
        return None
    ckpts = points[["checkpoint", "tokens"]].drop_duplicates().sort_values("tokens").head(max_panels)
    fig, axes = style.new_figure(len(ckpts), width=5.2, height=4.2)
    colors = _colors(points["mitigation"].unique().tolist())
    for ax, (_, ck) in zip(axes, ckpts.iterrows(), strict=False):
        panel = points[points["checkpoint"] == ck["checkpoint"]]
        for label, g in panel.groupby("mitigation", sort=False):
            lines = g.groupby("lr") if label == "wise" else [(None, g)]
            for i, (_, line) in enumerate(lines):
                line = line.sort_values("alpha" if label == "wise" else "lr")
                xerr = _err(line, "forgetting")
                yerr = _err(line, "id_gain")
                ax.errorbar(
                    line["forgetting"],
                    line["id_gain"],
                    xerr=xerr,
                    yerr=yerr,
                    color=colors[label],
                    marker="s" if label == BASELINE else "o",
                    linestyle="--" if label == "wise" else "-",
                    capsize=2,
                    markersize=8 if label == BASELINE else 4,
                    markeredgecolor="black" if label == BASELINE else None,
                    linewidth=1.4,
                    zorder=4 if label == BASELINE else 2,  # on top of wise's alpha = 1, the same model
                    label=label if i == 0 else None,
                )
        ax.set_title(f"{ck['checkpoint'].split('/')[-1]} ({format_tokens(ck['tokens'])} tokens)", fontsize=10)
        ax.set_xlabel(f"forgetting: {metric_label(metric)} rise")
        ax.set_ylabel(f"ID gain: {metric_label(id_metric)} drop")
    style.legend(axes[len(ckpts) - 1], "mitigation")
    return style.save(fig, out, "mitigation_frontier.png", "Learning-forgetting frontier per mitigation")


def _err(line: pd.DataFrame, col: str) -> np.ndarray | None:
    lo, hi, mean = (line[f"{col}_lo"].to_numpy(float), line[f"{col}_hi"].to_numpy(float), line[col].to_numpy(float))
    if not np.isfinite(lo).any():
        return None
    return np.vstack([np.nan_to_num(mean - lo), np.nan_to_num(hi - mean)])


def baseline_forgetting_at(gains: np.ndarray, forgets: np.ndarray, gain: float) -> float:
    """The baseline's forgetting at ``gain`` by linear interpolation along its points sorted by ID gain.

    NaN outside the baseline's range of ID gains (no extrapolation) or with fewer than 2 points.

    >>> baseline_forgetting_at(np.array([0.1, 0.3]), np.array([1.0, 2.0]), 0.2)
    1.5
    """
    gains, forgets = np.asarray(gains, float), np.asarray(forgets, float)
    if len(gains) < 2 or not (gains.min() <= gain <= gains.max()):
        return float("nan")
    order = np.argsort(gains, kind="stable")
    return float(np.interp(gain, gains[order], forgets[order]))


def matched_forgetting(frame: pd.DataFrame) -> pd.DataFrame:
    """Each mitigation's forgetting minus the baseline's, at equal ID gain (per seed) and at the same LR.

    Returns:
        Rows per (mitigation, checkpoint, tokens, LR, alpha) and comparison ``how``:
        ``equal ID gain`` (where the baseline's LR points bracket the mitigation's ID gain;
        per-seed deltas, t-interval) and ``same LR`` (Welch's interval of the difference of
        means); ``delta`` (< 0: forgets less), ``lo``/``hi`` (95%), ``n`` (seeds), and for
        ``same LR`` also ``gain_delta`` with ``gain_lo``/``gain_hi`` (the ID gain's
        difference: > 0 learned more). Empty without ``none`` cells.
    """
    base = frame[frame["mitigation"] == BASELINE]
    if base.empty:
        return pd.DataFrame()
    wise = frame[frame["mitigation"] == "wise"]
    ends = (frame["mitigation"] == "wise") & frame["alpha"].isin([0.0, 1.0])  # the base model and plain SFT
    rows = []
    for key, g in frame[(frame["mitigation"] != BASELINE) & ~ends].groupby(POINT_KEYS, dropna=False, sort=True):
        label, ckpt, _, lr, _ = key
        b = base[base["checkpoint"] == ckpt]
        row = dict(zip(POINT_KEYS, key, strict=True))
        lines = {"equal ID gain": lambda seed, b=b: b[b["seed"] == seed]}
        if label != "wise":
            w = wise[(wise["checkpoint"] == ckpt) & (wise["lr"] == lr)]
            lines[WISE_CURVE] = lambda seed, w=w: w[w["seed"] == seed]
        for how, line_of in lines.items():
            deltas = [_delta_on(line_of(cell["seed"]), cell) for _, cell in g.iterrows()]
            if np.isfinite(deltas).any():
                iv = t_interval(deltas)
                rows.append(row | {"how": how, "delta": iv.mean, "lo": iv.lo, "hi": iv.hi, "n": iv.n})
        same = b[b["lr"] == lr]
        if len(same):
            d = welch(g["forgetting"].to_numpy(float), same["forgetting"].to_numpy(float), "less")
            gain = welch(g["id_gain"].to_numpy(float), same["id_gain"].to_numpy(float), "less")
            rows.append(
                row
                | {"how": "same LR", "delta": d.diff, "lo": d.lo, "hi": d.hi, "n": min(d.n_a, d.n_b)}
                | {"gain_delta": gain.diff, "gain_lo": gain.lo, "gain_hi": gain.hi}
            )
    return pd.DataFrame(rows)


def _delta_on(line: pd.DataFrame, cell: pd.Series) -> float:
    """``cell``'s forgetting minus ``line``'s (points joined in ID-gain order) at the cell's ID gain."""
    ref = baseline_forgetting_at(line["id_gain"].to_numpy(), line["forgetting"].to_numpy(), cell["id_gain"])
    return float(cell["forgetting"] - ref)


def matched_table(matched: pd.DataFrame) -> pd.DataFrame:
    """``matched_forgetting`` as text: mitigation | tokens | LR | compared at | deltas of forgetting and ID gain."""
    if matched.empty:
        return matched
    point = [
        f"{format_lr(lr)}" + (f", alpha {a:g}" if np.isfinite(a) else "")
        for lr, a in zip(matched["lr"], matched["alpha"], strict=True)
    ]
    gain = matched.reindex(columns=["gain_delta", "gain_lo", "gain_hi"])
    return pd.DataFrame(
        {
            "mitigation": matched["mitigation"],
            "tokens": [format_tokens(t) for t in matched["tokens"]],
            "LR": point,
            "compared at": matched["how"],
            "forgetting - baseline's [95%]": [
                Interval(d, lo, hi, 0).text(".3g")
                for d, lo, hi in zip(matched["delta"], matched["lo"], matched["hi"], strict=True)
            ],
            "ID gain - baseline's [95%]": [
                Interval(d, lo, hi, 0).text(".3g")
                for d, lo, hi in zip(gain["gain_delta"], gain["gain_lo"], gain["gain_hi"], strict=True)
            ],
            "seeds": matched["n"],
        }
    )


def reduction_findings(matched: pd.DataFrame, metric: str) -> list[Finding]:
    """Per mitigation and comparison: does it forget less than plain SFT? (pooled over checkpoints and LRs).

    The pooled quantity is the mean of the per-point deltas (each point: a checkpoint and LR,
    already a mean over seeds) with a t-interval over points (with one point: that point's
    own 95% interval over seeds); at the same LR the ID gain's
    change is reported beside it (a mitigation that forgets less by learning less is not a
    free lunch).
    """
    out = []
    what = metric_label(metric).split(" (")[0]
    for (label, how), g in matched.groupby(["mitigation", "how"], sort=True):
        iv = t_interval(g["delta"].to_numpy(float))
        if iv.n == 0:
            continue
        if iv.n == 1:  # one point: its own interval over seeds
            iv = Interval(iv.mean, float(g["lo"].iloc[0]), float(g["hi"].iloc[0]), 1)
        effect = f"{label} forgets less than plain SFT ({how})"
        if np.isfinite(iv.hi) and iv.hi < 0:
            appears = "yes"
        elif np.isfinite(iv.lo) and iv.lo > 0:
            appears = "reversed: forgets more"
        else:
            appears = "not clearly" if np.isfinite(iv.lo) else "untested (one seed)"
        below = int((g["hi"] < 0).sum())
        numbers = (
            f"forgetting of {what} minus plain SFT's: {iv.mean:+.3g} (mean over {len(g)} point(s); "
            f"{below} of them below 0 at 95% over seeds)"
        )
        if how == "same LR" and "gain_delta" in g:
            gain = t_interval(g["gain_delta"].to_numpy(float))
            numbers += f"; ID gain minus plain SFT's: {gain.text('+.3g')}"
        interval = f"{iv.lo:+.3g} .. {iv.hi:+.3g}" if np.isfinite(iv.lo) else ""
        over = "over points" if len(g) > 1 else "over seeds"
        sentence = (
            f"With {label}, forgetting of {what} differs from plain SFT's at {how} by {iv.mean:+.3g}"
            + (f" (95% interval {over} {interval})" if interval else "")
            + f": {appears}."
        )
        seeds = f"{int(g['n'].min())}-{int(g['n'].max())}" if g["n"].nunique() > 1 else str(int(g["n"].iloc[0]))
        out.append(Finding(effect, appears, numbers, interval, seeds, sentence))
    return out


def removal(baseline: UShape | None, u: UShape) -> str:
    """Whether a mitigation removes plain SFT's U-shape, from the two ``u_test`` verdicts.

    ``yes`` needs plain SFT's U at that LR and, with the mitigation, either the best budget
    at the largest one or no rise beyond noise after the best budget. A curve that is best at
    the smallest budget and rises from there has no U, but more pretraining only hurts: that
    is ``no``, not a removal.
    """
    if baseline is None:
        return "no baseline (none) at this LR"
    if "too few budgets" in (baseline.verdict, u.verdict):
        return "cannot be judged"
    if baseline.verdict != "appears":
        return "no U to remove (plain SFT shows none)"
    if u.verdict == "appears":
        return "no"
    if u.verdict == "edge" and u.best == 0 and u.rises:
        return "no (worse with every budget from the smallest)"
    if u.verdict == "edge" and u.best > 0:
        return "yes (best at the largest budget)"
    if u.verdict == "base stopped":
        return "no U (the base model also stopped improving)"
    return "yes (no rise beyond noise after the best budget)"


def u_findings(df: pd.DataFrame, metric: str) -> list[Finding]:
    """Per mitigation and LR: the U-shape of ``ft/<metric>`` and whether the mitigation removes it.

    A ``wise`` cell is tested at each of its alphas (``wise/alpha=<a>/ft/<metric>``).
    """
    ft, base = f"ft/{metric}", f"base/{metric}"
    if ft not in df.columns or "mitigation" not in df.columns:
        return []
    lower = lower_is_better(ft)
    base_t, base_v = base_replicas(df, base)
    what = metric_label(metric).split(" (")[0]
    curves: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
    for (label, lr), g in df.groupby(["mitigation", "lr"], sort=True):
        curves[(label, lr)] = (g["tokens"].to_numpy(float), g[ft].to_numpy(float))
        if label == "wise":
            for col in sorted(c for c in g.columns if (m := WISE.match(c)) and m.group(2) == metric):
                a = float(WISE.match(col).group(1))
                if a not in (0.0, 1.0) and g[col].notna().any():  # 0: the base model; 1: the cell itself
                    curves[(f"wise alpha={a:g}", lr)] = (g["tokens"].to_numpy(float), g[col].to_numpy(float))
    tests = {k: u_test(t, v, lower, base_t, base_v) for k, (t, v) in curves.items()}
    out = []
    for (label, lr), u in tests.items():
        if label in (BASELINE, "wise"):  # a wise cell's own fine-tuned model is plain SFT: its alphas count
            continue
        f = u_finding(u, f"fine-tuned {what} with {label} (LR {format_lr(lr)})", f"base {what}")
        verdict = removal(tests.get((BASELINE, lr)), u)
        effect = f"{label} removes the U-shape of fine-tuned {what} (LR {format_lr(lr)})"
        sentence = f"{effect}: {verdict}. {f.sentence}"
        out.append(Finding(effect, verdict, f"{u.verdict}: {f.numbers}", f.interval, f.seeds, sentence))
    return out


def mitigation_report(df: pd.DataFrame, metric: str | None, out: Path, id_metric: str = ID_METRIC):
    """The mitigation section: (figures as (path, title, caption, table), findings); empty without mitigations.

    Returns:
        ``([(path, title, caption, table)], [Finding])``.
    """
    if not metric or not several(df):
        return [], []
    frame = frontier_frame(df, metric, id_metric)
    figs, findings = [], []
    if not frame.empty:
        matched = matched_forgetting(frame)
        path = frontier_figure(frontier_points(frame), metric, id_metric, out)
        if path is not None:
            caption = (
                f"ID gain (base - fine-tuned {metric_label(id_metric)}) against forgetting (fine-tuned - base "
                f"{metric_label(metric)}), one panel per checkpoint, one line per mitigation through its LRs "
                "(wise: dashed, through its alphas; alpha = 1 is plain SFT). Means over seeds, bars: 95% "
                "t-intervals. Up and left is better. Table: each mitigation's forgetting minus plain SFT's at "
                "the same ID gain (the baseline's LR points joined by lines, per seed), or at the same LR where "
                "the baseline has one LR."
            )
            figs.append((path, "Learning-forgetting frontier per mitigation", caption, matched_table(matched)))
        if not matched.empty:
            findings += reduction_findings(matched, metric)
    findings += u_findings(df, metric)
    return figs, findings
