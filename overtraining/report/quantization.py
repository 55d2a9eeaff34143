"""Quantization sensitivity in the report: a figure beside Gaussian noise, and its findings.

The cells' base probes ``base/quant/bits=B/delta_loss`` (loss rise when every linear weight
is rounded to B bits, ``overtraining/geometry/quantization.py``) are a perturbation of a
fixed kind, read like Gaussian sensitivity ``base/perturb/gamma=G/delta_loss_mean``:

- **figure** ``quantization_vs_tokens.png``: left, the loss rise per bit width against
  pretraining tokens; right, the Gaussian loss rise per gamma; one line style per
  pretraining branch (e.g. ``constant``, ``constant+cooldown``, ``wsd``);
- **finding** "Quantization sensitivity grows with tokens (int B)", per branch and bit
  width: the trend test of ``effects.trend`` (Spearman's rho of the loss rise with tokens;
  with two or more distinct replicas per budget, rho over all replicas and its p-value;
  otherwise the single-seed heuristic |rho| >= ``RHO_MIN``). RTN is deterministic, so
  seeds that do not change the weights give identical values: those count once and the
  verdict says the seeds agree;
- **finding** "Quantization sensitivity jumps on cooldown (int B)", per schedule with
  cooldown branches: the loss rise of each ``tokens_X-cooldown`` against its parent
  ``tokens_X``, paired per budget; it appears when the branch is higher at every budget
  and an exact one-sided sign test over the budgets gives p < ``ALPHA``
  (``scipy.stats.binomtest``; 5 budgets all higher give p = 1/32), "reversed" when it is
  lower at every budget with the opposite one-sided p < ``ALPHA``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from overtraining.report import style
from overtraining.report.effects import ALPHA, MIN_BUDGETS, _agreeing_seeds, _rename, trend, trend_finding
from overtraining.report.figures import GAMMA, _base_line
from overtraining.report.findings import Finding
from overtraining.report.labels import format_tokens
from overtraining.report.seeds import base_replicas

QUANT = re.compile(r"^base/quant/bits=(\d+)/delta_loss$")
COOLDOWN = "+cooldown"


def bit_columns(df: pd.DataFrame) -> dict[int, str]:
    """``{bits: "base/quant/bits=B/delta_loss"}`` for the bit widths the cells measured, widest first."""
    cols = {int(m.group(1)): c for c in df.columns if (m := QUANT.match(c)) and df[c].notna().any()}
    return dict(sorted(cols.items(), reverse=True))


def quantization_vs_tokens(df: pd.DataFrame, out: Path) -> Path | None:
    """Loss rise under b-bit weight quantization (left) and under Gaussian noise (right) against tokens.

    Points: mean over distinct seed replicas, 95% t-interval where they exist (RTN is
    deterministic: usually one value per checkpoint).
    """
    bits = bit_columns(df)
    if df.empty or not bits:
        return None
    gammas = {float(m.group(1)): c for c in df.columns if (m := GAMMA.match(c)) and df[c].notna().any()}
    styles = style.branch_styles(df["branch"])
    fig, axes = style.new_figure(2 if gammas else 1, width=6.0)
    bit_colors = style.ramp([float(b) for b in bits], "viridis", log=False)
    gamma_colors = style.ramp(list(gammas), "magma") if gammas else {}
    for branch, g in df.groupby("branch"):
        ls, marker = styles[branch]
        suffix = f", {branch}" if len(styles) > 1 else ""
        for b, col in bits.items():
            kw = {"color": bit_colors[float(b)], "linestyle": ls, "marker": marker}
            _base_line(axes[0], g, col, label=f"int{b}{suffix}", **kw)
        for gamma, col in sorted(gammas.items()):
            kw = {"color": gamma_colors[gamma], "linestyle": ls, "marker": marker}
            _base_line(axes[1], g, col, fallback=col.replace("_mean", "_std"), label=f"gamma = {gamma:g}{suffix}", **kw)
    for ax in axes:
        style.tokens_axis(ax, df["tokens"])
    axes[0].set_ylabel("loss rise, weights quantized (nats/token)")
    style.auto_log_y(axes[0], df[list(bits.values())].to_numpy())
    style.legend(axes[0], title="round-to-nearest, bits")
    if gammas:
        axes[1].set_ylabel("loss rise under noise (nats/token)")
        style.auto_log_y(axes[1], df[list(gammas.values())].to_numpy())
        style.legend(axes[1], title="theta + gamma * std(theta) * eps")
    return style.save(fig, out, "quantization_vs_tokens.png", "Quantization and Gaussian sensitivity of the base model")


def growth_findings(cells: pd.DataFrame) -> list[Finding]:
    """The finding "quantization sensitivity grows with tokens", per bit width, of one branch's cells."""
    n_seeds = int(cells.groupby("checkpoint")["seed"].nunique().max()) if "seed" in cells.columns else 1
    out = []
    for b, col in bit_columns(cells).items():
        t = trend(*base_replicas(cells, col))
        effect = f"Quantization sensitivity grows with tokens (int{b})"
        found = trend_finding(effect, t, f"the base model's loss rise under int{b} weight quantization")
        out.append(_agreeing_seeds(found, n_seeds))
    return out


def _parent(checkpoint: str) -> str:
    return checkpoint.removesuffix("-cooldown")


def cooldown_pairs(df: pd.DataFrame, branch: str, col: str) -> pd.DataFrame:
    """Per parent budget of ``branch``: the main checkpoint's and its cooldown branch's mean of ``col``.

    Returns:
        Columns ``tokens`` (the parent's), ``main``, ``cooldown``; one row per budget with both.
    """
    main = df[df["branch"] == branch].groupby("checkpoint").agg(tokens=("tokens", "first"), main=(col, "mean"))
    cool = df[df["branch"] == branch + COOLDOWN].groupby("checkpoint")[col].mean()
    cool.index = [_parent(c) for c in cool.index]
    pairs = main.join(cool.rename("cooldown"), how="inner").dropna()
    return pairs.sort_values("tokens").reset_index(drop=True)


def jump_findings(df: pd.DataFrame) -> list[Finding]:
    """The finding "quantization sensitivity jumps on cooldown", per schedule with cooldown branches and bit width."""
    out = []
    branches = set(df["branch"])
    for branch in sorted(b for b in branches if not b.endswith(COOLDOWN) and b + COOLDOWN in branches):
        for b, col in bit_columns(df).items():
            pairs = cooldown_pairs(df, branch, col)
            if pairs.empty:
                continue
            effect = f"[{branch}] Quantization sensitivity jumps on cooldown (int{b})"
            diff = (pairs["cooldown"] - pairs["main"]).to_numpy(float)
            up, n = int((diff > 0).sum()), len(diff)
            p = float(binomtest(up, n, 0.5, alternative="greater").pvalue)
            p_down = float(binomtest(up, n, 0.5, alternative="less").pvalue)
            ratios = ", ".join(
                f"{format_tokens(t)}: {m:.3g} -> {c:.3g}"
                for t, m, c in zip(pairs["tokens"], pairs["main"], pairs["cooldown"], strict=True)
            )
            numbers = f"{ratios}; higher after cooldown at {up}/{n} budgets; sign test p = {p:.2g}"
            rel = float(np.median(diff / np.abs(pairs["main"].to_numpy(float))))
            if n < MIN_BUDGETS:
                verdict, word = "cannot be judged", f"cannot be judged ({MIN_BUDGETS} budgets needed)"
            elif up == n and p < ALPHA:
                verdict, word = "yes (single draw per checkpoint)", "appears"
            elif up == 0 and p_down < ALPHA:
                verdict, word = "reversed (single draw per checkpoint)", "is reversed (the cooldown lowers it)"
            elif up in (0, n):
                verdict, word = "not clear (too few budgets)", f"is not clear: {n} budgets cannot reach p < {ALPHA}"
            else:
                verdict, word = "no", "does not appear"
            sentence = (
                f"{effect} {word}: the int{b} loss rise of each cooldown branch against its parent checkpoint "
                f"({ratios}) is higher at {up} of {n} budgets (median relative change {rel:+.0%}; one-sided sign "
                f"test p = {p:.2g}); RTN is deterministic, so each value is one measurement of one checkpoint."
            )
            out.append(Finding(effect, verdict, numbers, f"median relative change {rel:+.0%}", str(n), sentence))
    return out


def quantization_findings(df: pd.DataFrame) -> list[Finding]:
    """Every quantization verdict: growth with tokens per branch (tagged when several), then cooldown jumps."""
    if df.empty or not bit_columns(df):
        return []
    branches = sorted(df["branch"].unique())
    out = []
    for branch in branches:
        tag = f"[{branch}] " if len(branches) > 1 else ""
        out += [_rename(f, tag) for f in growth_findings(df[df["branch"] == branch])]
    return out + jump_findings(df)
