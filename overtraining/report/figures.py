"""The report's figures: each function draws one PNG and returns its path, or None when the
sweep lacks the metrics it needs (so a partial sweep gives a partial report, not an error).

Inputs are the cell table of ``overtraining.report.table`` (``df``, usable cells only) or a
long curve table (``curve_frame``); ``metric`` is the ``<m>`` of ``base/<m>``/``ft/<m>``.

Seeds are replicas: every point is the mean over a cell's seeds, and where two or more seeds
exist its error bar (or band) is the 95% t-interval of that mean (``overtraining.report.seeds``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

import overtraining.report.style as style
from overtraining.report.labels import format_lr, format_tokens, lower_is_better, metric_label
from overtraining.report.seeds import base_replicas, interval_table, t_interval
from overtraining.report.table import per_checkpoint
from overtraining.report.tradeoff import id_optimal_lr, pareto_front

GAMMA = re.compile(r"^base/perturb/gamma=([^/]+)/delta_loss_mean$")
SHARPNESS = {
    "base/sharpness/kl": "KL sharpness proxy (nats)",
    "base/sharpness/hessian_top": "top Hessian eigenvalue",
    "base/sharpness/hessian_trace": "Hessian trace (Hutchinson)",
}


def _has(df: pd.DataFrame, *cols: str) -> bool:
    return not df.empty and all(c in df.columns and df[c].notna().any() for c in cols)


def _short(checkpoint: str, tokens: float) -> str:
    """``embedded/tokens_4M-cooldown`` -> ``tokens_4M-cooldown (4M)``: the legend's checkpoint name."""
    name = checkpoint.split("/")[-1]
    return name if format_tokens(tokens) in name else f"{name} ({format_tokens(tokens)})"


def _best(metric: str) -> str:
    return "min" if lower_is_better(metric) else "max"


def _per_lr_vs_tokens(df: pd.DataFrame, col: str, ax, best: str | None = None) -> None:
    """One line per (LR, branch) of ``col`` against tokens; colour = LR, style = branch."""
    colors, styles = style.lr_colors(df["lr"]), style.branch_styles(df["branch"])
    multi = len(styles) > 1
    for (branch, lr), g in df.groupby(["branch", "lr"]):
        ls, marker = styles[branch]
        label = f"LR {format_lr(lr)}" + (f", {branch}" if multi else "")
        style.mean_line(ax, g, "tokens", col, best, color=colors[lr], linestyle=ls, marker=marker, label=label)
    style.tokens_axis(ax, df["tokens"])


def ood_vs_tokens(df: pd.DataFrame, metric: str, out: Path) -> Path | None:
    """Base vs fine-tuned OOD metric against pretraining tokens, one line per LR (the U-shape)."""
    ft, base = f"ft/{metric}", f"base/{metric}"
    if not _has(df, ft):
        return None
    fig, (ax,) = style.new_figure(width=7.5)
    if _has(df, base):
        for branch, g in df.groupby("branch"):
            ls, marker = style.branch_styles(df["branch"])[branch]
            tokens, values = base_replicas(g, base)
            style.mean_line(
                ax,
                pd.DataFrame({"tokens": tokens, base: values}),
                "tokens",
                base,
                color="black",
                linestyle="--",
                marker=marker,
                label="base model" + (f", {branch}" if df["branch"].nunique() > 1 else ""),
            )
    _per_lr_vs_tokens(df, ft, ax, best=_best(ft))
    ax.set_ylabel(metric_label(metric))
    style.auto_log_y(ax, df[[c for c in (ft, base) if c in df.columns]].to_numpy())
    style.legend(ax, title="fine-tuned at (star = best budget)")
    return style.save(fig, out, "ood_vs_tokens.png", f"{metric_label(metric)}: base vs fine-tuned")


def forgetting_vs_tokens(df: pd.DataFrame, metric: str, out: Path) -> Path | None:
    """Forgetting (base minus fine-tuned, positive = forgot) against tokens, per LR."""
    col = f"forget/{metric}"
    if not _has(df, col):
        return None
    fig, (ax,) = style.new_figure(width=7.5)
    _per_lr_vs_tokens(df, col, ax)
    ax.axhline(0.0, color="grey", linewidth=1)
    ax.set_ylabel(f"forgetting: change in {metric_label(metric)}\n(positive = forgot)")
    style.legend(ax, title="fine-tuned at")
    return style.save(fig, out, "forgetting_vs_tokens.png", "Forgetting against pretraining tokens")


def id_vs_tokens(df: pd.DataFrame, id_metric: str, out: Path) -> Path | None:
    """The fine-tuned ID metric against tokens, per LR."""
    if not _has(df, id_metric):
        return None
    fig, (ax,) = style.new_figure(width=7.5)
    _per_lr_vs_tokens(df, id_metric, ax, best=_best(id_metric))
    ax.set_ylabel(metric_label(id_metric))
    style.legend(ax, title="fine-tuned at")
    return style.save(fig, out, "id_vs_tokens.png", "In-distribution (SFT task) metric after fine-tuning")


def pareto(df: pd.DataFrame, id_metric: str, metric: str, out: Path) -> Path | None:
    """ID vs OOD per checkpoint with each checkpoint's Pareto front; the ID-optimal LR vs tokens."""
    ood = f"ft/{metric}"
    if not _has(df, id_metric, ood) or df["lr"].nunique() < 2:
        return None
    fig, (ax, ax_lr) = style.new_figure(2, width=6.4)
    keys = ["branch", "checkpoint", "tokens", "lr"]
    means = df.groupby(keys, as_index=False)[[id_metric, ood]].mean()
    errs = {c: _half_widths(df, keys, c) for c in (id_metric, ood)}
    colors = style.token_colors(means["tokens"])
    markers = dict(zip(sorted(means["lr"].unique()), "osD^vP*X" * 4, strict=False))
    hi_id, hi_ood = not lower_is_better(id_metric), not lower_is_better(ood)
    for (_, ckpt, tokens), g in sorted(means.groupby(["branch", "checkpoint", "tokens"]), key=lambda kv: kv[0][2]):
        front = g.iloc[pareto_front(g[id_metric].to_numpy(), g[ood].to_numpy(), hi_id, hi_ood)]
        ax.plot(front[id_metric], front[ood], color=colors[tokens], linewidth=1.4, label=_short(ckpt, tokens))
        for lr, row in g.set_index("lr").iterrows():
            key = (row["branch"], row["checkpoint"], tokens, lr)
            xerr, yerr = errs[id_metric].get(key), errs[ood].get(key)
            if xerr is not None or yerr is not None:
                ax.errorbar(row[id_metric], row[ood], xerr=xerr, yerr=yerr, color=colors[tokens], linewidth=0.8)
            ax.scatter(
                row[id_metric],
                row[ood],
                color=colors[tokens],
                marker=markers[lr],
                s=36,
                edgecolor="black",
                linewidth=0.4,
                zorder=3,
            )
    for lr, m in markers.items():
        ax.scatter([], [], marker=m, color="grey", label=f"LR {format_lr(lr)}")
    ax.set_xlabel(metric_label(id_metric))
    ax.set_ylabel(metric_label(metric))
    ax.set_title("ID vs OOD per checkpoint (lines: Pareto fronts)", fontsize=10)
    style.legend(ax)
    best = id_optimal_lr(df, id_metric)
    for branch, g in best.groupby("branch"):
        ls, marker = style.branch_styles(best["branch"])[branch]
        ax_lr.plot(g["tokens"], g["lr"], linestyle=ls, marker=marker, color="black", label=branch)
        edge = g[g["edge"] != ""]
        if len(edge):
            ax_lr.scatter(edge["tokens"], edge["lr"], s=160, facecolor="none", edgecolor="red", linewidth=1.5, zorder=4)
    if (best["edge"] != "").any():
        ax_lr.scatter([], [], s=160, facecolor="none", edgecolor="red", label="at the grid's edge")
    style.tokens_axis(ax_lr, best["tokens"])
    style.lr_axis(ax_lr, df["lr"], axis="y")
    ax_lr.set_ylim(df["lr"].min() / 2, df["lr"].max() * 2)
    ax_lr.set_ylabel("ID-optimal fine-tuning LR (log scale)")
    ax_lr.set_title(f"LR with the best {metric_label(id_metric)}", fontsize=10)
    if best["branch"].nunique() > 1 or (best["edge"] != "").any():
        style.legend(ax_lr, title="pretraining")
    return style.save(fig, out, "pareto.png", "Tuned-LR trade-off")


def _half_widths(df: pd.DataFrame, keys: list[str], col: str) -> dict[tuple, float]:
    """Half-width of the 95% t-interval of ``col`` over the seeds of each ``keys`` group (n >= 2 only)."""
    out = {}
    for key, g in df.dropna(subset=[col]).groupby(keys):
        iv = t_interval(g[col].to_numpy(float))
        if np.isfinite(iv.hi):
            out[tuple(key)] = iv.hi - iv.mean
    return out


def _base_line(ax, cells: pd.DataFrame, col: str, fallback: str | None = None, **kw) -> None:  # noqa: ANN001
    """A base-model metric of one branch against tokens: mean over seed replicas, 95% t-interval bars.

    Without replicas (one distinct value per checkpoint), ``fallback`` (a column of per-cell
    error, e.g. the std over noise draws) gives the bars, when present.
    """
    tokens, values = base_replicas(cells, col)
    if not len(tokens):
        return
    stats = interval_table(pd.DataFrame({"tokens": tokens, "v": values}), "tokens", "v")
    err = None
    if fallback and fallback in cells.columns:
        err = per_checkpoint(cells, [fallback]).set_index("tokens")[fallback].groupby(level=0).mean()
        err = err.reindex(stats.index).to_numpy(float)
    style.interval_line(ax, stats.index.to_numpy(float), stats, fallback=err, **kw)


def sensitivity_vs_tokens(df: pd.DataFrame, out: Path) -> Path | None:
    """Base loss under Gaussian weight noise against tokens, per gamma and branch.

    Left: the loss rise (progressive sensitivity). Right: the perturbed loss itself, with the
    clean loss as gamma = 0 (Springer et al.'s U-shape: clean loss falls, the rise grows).
    Error bars: 95% t-interval over seeds when the seeds give distinct values, else the std
    over noise draws.
    """
    gammas = {float(m.group(1)): c for c in df.columns if (m := GAMMA.match(c)) and df[c].notna().any()}
    if df.empty or not gammas:
        return None
    absolute = {g: c.replace("delta_loss_mean", "loss_mean") for g, c in gammas.items()}
    clean = "base/perturb/base_loss"
    colors, styles = style.ramp(list(gammas), "magma"), style.branch_styles(df["branch"])
    panels = 2 if all(c in df.columns for c in absolute.values()) else 1
    fig, axes = style.new_figure(panels, width=7.5 if panels == 1 else 6.0)
    for branch, g in df.groupby("branch"):
        ls, marker = styles[branch]
        suffix = f", {branch}" if len(styles) > 1 else ""
        for gamma, col in sorted(gammas.items()):
            kw = {"color": colors[gamma], "linestyle": ls, "marker": marker}
            std = col.replace("_mean", "_std")
            _base_line(axes[0], g, col, fallback=std, label=f"gamma = {gamma:g}{suffix}", **kw)
            if panels == 2:
                _base_line(axes[1], g, absolute[gamma], **kw)
        if panels == 2 and clean in g:
            _base_line(axes[1], g, clean, color="tab:blue", linestyle=ls, marker=marker, label=f"no noise{suffix}")
    for ax in axes:
        style.tokens_axis(ax, df["tokens"])
    axes[0].set_ylabel("loss rise under noise (nats/token)")
    style.auto_log_y(axes[0], df[list(gammas.values())].to_numpy())
    style.legend(axes[0], title="noise theta + gamma * std(theta) * eps")
    if panels == 2:
        axes[1].set_ylabel("loss under noise (nats/token)")
        style.legend(axes[1], title="same noise (colour = gamma)")
    return style.save(fig, out, "sensitivity_vs_tokens.png", "Progressive sensitivity of the base model")


def sharpness_vs_tokens(df: pd.DataFrame, out: Path) -> Path | None:
    """Sharpness (KL proxy, top Hessian eigenvalue, trace) of the base model against tokens (mean, 95% CI)."""
    cols = [c for c in SHARPNESS if _has(df, c)]
    if not cols:
        return None
    styles = style.branch_styles(df["branch"])
    fig, axes = style.new_figure(len(cols), width=5.2)
    for ax, col in zip(axes, cols, strict=True):
        for branch, g in df.groupby("branch"):
            ls, marker = styles[branch]
            _base_line(ax, g, col, linestyle=ls, marker=marker, color="black", label=branch)
        style.tokens_axis(ax, df["tokens"])
        ax.set_ylabel(SHARPNESS[col])
        style.auto_log_y(ax, df[col].to_numpy())
        if len(styles) > 1:
            style.legend(ax, title="pretraining")
    return style.save(fig, out, "sharpness_vs_tokens.png", "Sharpness of the base model through pretraining")


PROBE_FACTS = {"cell_id", "group", "checkpoint", "branch", "tokens", "lr", "seed", "step", "sft_loss", "x_loss", "beta"}


def probe_key(probes: pd.DataFrame, metric: str) -> str | None:
    """The probe column to plot: ``metric`` when probed, else the first other probed metric."""
    if probes.empty or "x_loss" not in probes.columns:
        return None
    if metric in probes.columns:
        return metric
    return next((c for c in probes.columns if c not in PROBE_FACTS and pd.api.types.is_numeric_dtype(probes[c])), None)


def ood_vs_sft_loss(
    probes: pd.DataFrame, metric: str, out: Path, x_label: str = "SFT loss (nats/token)", max_panels: int = 6
) -> Path | None:
    """OOD metric against SFT loss along each SFT run: one panel per checkpoint, colour = LR.

    Args:
        probes: ``overtraining.report.equal_loss.probe_frame`` (column ``x_loss`` is the x).
        metric: the probed metric to plot (else the first probed one).
        out: output dir.
        x_label: what ``x_loss`` is (smoothed training loss or held-out loss).
        max_panels: at most this many checkpoints, evenly spread over the budgets.

    Seeds of one (checkpoint, LR) are averaged probe by probe (same step): the line is the
    mean, the band the 95% t-interval of the metric; one seed gives a plain line.
    """
    key = probe_key(probes, metric)
    if key is None:
        return None
    ckpts = probes.drop_duplicates("checkpoint").sort_values("tokens")["checkpoint"].tolist()
    picks = np.linspace(0, len(ckpts) - 1, min(len(ckpts), max_panels)).round().astype(int)  # evenly spread
    ckpts = [ckpts[i] for i in np.unique(picks)]
    colors = style.lr_colors(probes["lr"])
    fig, axes = style.new_figure(len(ckpts), width=4.2, height=4.0)
    for ax, ckpt in zip(axes, ckpts, strict=True):
        for (lr, _group), g in probes[probes["checkpoint"] == ckpt].groupby(["lr", "group"]):
            stats = interval_table(g, "step", key)
            x = g.groupby("step")["x_loss"].mean().reindex(stats.index).to_numpy(float)
            n = g["seed"].nunique()
            label = f"LR {format_lr(lr)}" + (f" ({n} seeds)" if n > 1 else "")
            style.band(ax, x, stats, marker=".", color=colors[lr], label=label)
        ax.invert_xaxis()  # SFT loss falls as training goes on: time runs left to right
        first, _, rest = x_label.partition("\n")
        ax.set_xlabel(f"{first}, falling ->" + (f"\n{rest}" if rest else ""))
        ax.set_title(_short(ckpt, probes.loc[probes["checkpoint"] == ckpt, "tokens"].iloc[0]), fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    for ax in axes:
        ax.set_ylabel(metric_label(key))
    return style.save(fig, out, "ood_vs_sft_loss.png", "OOD metric at equal SFT loss, along SFT")


def drift(df: pd.DataFrame, out: Path) -> Path | None:
    """Representation drift (mean principal angle, CKA) against LR, one line per checkpoint."""
    cols = [c for c in ("drift/mpa_mean", "drift/cka_mean") if _has(df, c)]
    if not cols:
        return None
    labels = {
        "drift/mpa_mean": "mean principal angle, base vs FT (radians)",
        "drift/cka_mean": "linear CKA, base vs FT (1 = same)",
    }
    colors = style.token_colors(df["tokens"])
    fig, axes = style.new_figure(len(cols), width=5.6)
    for ax, col in zip(axes, cols, strict=True):
        for (ckpt, tokens), g in sorted(df.groupby(["checkpoint", "tokens"]), key=lambda kv: kv[0][1]):
            style.mean_line(ax, g, "lr", col, color=colors[tokens], marker="o", label=_short(ckpt, tokens))
        style.lr_axis(ax, df["lr"])
        ax.set_ylabel(labels[col])
        style.legend(ax, title="checkpoint")
    return style.save(fig, out, "drift.png", "Representation drift against LR and checkpoint")


def landscape(curve: pd.DataFrame, out: Path) -> Path | None:
    """Loss along the line base (alpha = 0) -> fine-tuned (alpha = 1): one panel per LR.

    One line per budget: the mean over seeds at each alpha, with its 95% t-interval as a band.
    """
    if curve.empty or not {"alpha", "loss"} <= set(curve.columns):
        return None
    lrs = sorted(curve["lr"].unique())
    colors = style.token_colors(curve["tokens"])
    fig, axes = style.new_figure(len(lrs), width=4.6, height=4.0)
    for ax, lr in zip(axes, lrs, strict=True):
        for (tokens, _branch), g in curve[curve["lr"] == lr].groupby(["tokens", "branch"]):
            stats = interval_table(g, "alpha", "loss")
            style.band(ax, stats.index.to_numpy(float), stats, color=colors[tokens], label=format_tokens(tokens))
        ax.set_xlabel("interpolation alpha (0 = base, 1 = fine-tuned)")
        ax.set_title(f"fine-tuned at LR {format_lr(lr)}", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), title="pretraining tokens", fontsize=7, title_fontsize=7)
    for ax in axes:
        ax.set_ylabel("loss (nats/token)")
    return style.save(fig, out, "landscape.png", "Loss landscape between base and fine-tuned models")


UPDATE_NORM = "update/rel_norm"
NOISE_NORM = re.compile(r"^(?:base/)?perturb/gamma=([^/]+)/noise_norm$")


def relative_noise(df: pd.DataFrame) -> dict[float, float]:
    """The norm of the perturbation noise at each gamma relative to ||theta_base||, averaged over cells.

    ``||theta_base||`` is ``update/norm / update/rel_norm``; the noise norm is
    ``perturb/gamma=G/noise_norm`` (``base/``-prefixed or not). Empty when either is missing.
    """
    if not _has(df, UPDATE_NORM, "update/norm"):
        return {}
    base_norm = df["update/norm"] / df[UPDATE_NORM]
    out = {}
    for col in df.columns:
        if (m := NOISE_NORM.match(col)) and df[col].notna().any():
            value = float((df[col] / base_norm).mean())
            if np.isfinite(value):
                out[float(m.group(1))] = value
    return dict(sorted(out.items()))


def forgetting_vs_update(df: pd.DataFrame, metric: str, out: Path) -> Path | None:
    """Forgetting against the relative size of the fine-tuning update, one point per cell.

    x: ``update/rel_norm`` = ||theta_ft - theta_base|| / ||theta_base||; y: ``forget/<metric>``;
    colour = pretraining tokens, marker = LR. If forgetting ~ sensitivity x update size, a
    later checkpoint forgets more for the same update. Dotted lines: the relative size of the
    perturbation-test noise at each gamma (``relative_noise``), when recorded.
    """
    col = f"forget/{metric}"
    if not _has(df, col, UPDATE_NORM):
        return None
    d = df.dropna(subset=[col, UPDATE_NORM])
    colors = style.token_colors(d["tokens"])
    markers = dict(zip(sorted(d["lr"].unique()), "osD^vP*X" * 4, strict=False))
    fig, (ax,) = style.new_figure(width=7.0)
    for (tokens, lr), g in d.groupby(["tokens", "lr"]):
        ax.scatter(
            g[UPDATE_NORM], g[col], color=colors[tokens], marker=markers[lr], s=40, edgecolor="black", linewidth=0.4
        )
    for tokens, c in colors.items():
        ax.scatter([], [], color=c, marker="o", label=format_tokens(tokens))
    for lr, m in markers.items():
        ax.scatter([], [], color="grey", marker=m, label=f"LR {format_lr(lr)}")
    ax.axhline(0.0, color="grey", linewidth=1)
    noise = relative_noise(d)
    for gamma, rel in noise.items():  # how large the perturbation-test noise is, for scale
        ax.axvline(rel, color="grey", linestyle=":", linewidth=1)
        kw = {"rotation": 90, "va": "top", "ha": "right", "fontsize": 7, "color": "grey"}
        ax.annotate(f"noise gamma = {gamma:g}", (rel, 0.98), xycoords=("data", "axes fraction"), **kw)
    xs = np.concatenate([d[UPDATE_NORM].to_numpy(float), list(noise.values())])
    if xs.min() > 0 and xs.max() / xs.min() > 20:
        ax.set_xscale("log")
    ax.set_xlabel("relative update size ||theta_ft - theta_base|| / ||theta_base||")
    ax.set_ylabel(f"forgetting: change in {metric_label(metric)}\n(positive = forgot)")
    style.legend(ax, title="tokens (colour), LR (marker)")
    return style.save(fig, out, "forgetting_vs_update.png", "Forgetting against the size of the fine-tuning update")


def landscape_2d(slices: list[tuple[str, dict]], out: Path, max_panels: int = 6) -> Path | None:
    """Contours of the loss on a 2D slice of weight space around each base model.

    Args:
        slices: ``(title, {"coords": [...], "losses": [[...]]})`` per cell; ``losses[i][j]`` is
            the loss at ``(coords[i], coords[j])`` along two random filter-normalised directions.
        out: output dir.
        max_panels: at most this many panels, evenly spread over ``slices``.
    """
    good = []
    for title, s in slices:
        coords, losses = np.asarray(s.get("coords", []), float), np.asarray(s.get("losses", []), float)
        if coords.ndim == 1 and len(coords) >= 2 and losses.shape == (len(coords), len(coords)):
            good.append((title, coords, losses))
    if not good:
        return None
    picks = np.unique(np.linspace(0, len(good) - 1, min(len(good), max_panels)).round().astype(int))
    good = [good[i] for i in picks]
    fig, axes = style.new_figure(len(good), width=4.4, height=4.0)
    for ax, (title, coords, losses) in zip(axes, good, strict=True):
        cs = ax.contourf(coords, coords, losses.T, levels=14, cmap="viridis")
        ax.contour(coords, coords, losses.T, levels=14, colors="black", linewidths=0.3)
        fig.colorbar(cs, ax=ax, label="loss (nats/token)")
        ax.plot([0], [0], marker="*", color="red", markersize=12, linestyle="none")
        ax.set_xlabel("direction 1 (filter-normalised)")
        ax.set_ylabel("direction 2 (filter-normalised)")
        ax.set_title(title, fontsize=10)
    return style.save(fig, out, "landscape_2d.png", "Loss on a 2D slice around the base model (star)")
