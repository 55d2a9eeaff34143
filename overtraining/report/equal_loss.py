"""Comparisons at equal SFT loss (Rofin et al.): LRs judged where they reached the same loss.

A cell run with ``trainer.target_loss`` stops when its smoothed training loss reaches the
target. Cells whose ``sft/target_reached_step`` is None did not reach it: the cell table
marks them (``target_reached`` False) and they are left out of every equal-loss comparison
here. At a common target, the forgetting of each LR is the mean over seeds with its 95%
t-interval; "larger LR forgets more at equal SFT loss" is claimed only when a one-sided
Welch t-test of the largest LR's replicas against the smallest LR's gives p < ``ALPHA``.

The trajectory figure's x-axis is the SFT loss at each probe: by default the smoothed
training loss, an EMA of the per-step training loss (``curves["sft"]`` rows' ``loss``) with
the cell's ``trainer.loss_smoothing`` (``beta``; 0.9 when absent), started at the first
loss without bias correction (the same smoothing the target is compared with); optionally
the held-out SFT loss measured at the probe (``sft_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from overtraining.report.findings import Finding
from overtraining.report.labels import format_lr, format_tokens, metric_label
from overtraining.report.seeds import replica_group, seeds_text, t_interval, welch
from overtraining.report.table import GOOD_STATUSES, pretrain_branch, target_reached
from overtraining.results import CellRecord

ALPHA = 0.05
DEFAULT_BETA = 0.9
X_TRAIN, X_HELDOUT = "train", "heldout"


def ema(values: Sequence[float], beta: float) -> np.ndarray:
    """EMA ``s_t = beta * s_{t-1} + (1 - beta) * x_t`` started at ``s_0 = x_0`` (no bias correction)."""
    return pd.Series(np.asarray(values, float)).ewm(alpha=1 - beta, adjust=False).mean().to_numpy()


def loss_smoothing(record: CellRecord) -> float:
    """The cell's ``trainer.loss_smoothing`` (its EMA's beta), 0.9 when the config lacks it."""
    trainer = record.config.get("trainer")
    beta = trainer.get("loss_smoothing") if isinstance(trainer, dict) else None
    return DEFAULT_BETA if beta is None else float(beta)


def x_label(x: str, betas: Sequence[float] = (DEFAULT_BETA,)) -> str:
    """The axis label of the SFT loss used as x (two lines): what it is and how it was smoothed."""
    if x == X_HELDOUT:
        return "held-out SFT loss (nats/token)\nmeasured at each probe"
    b = ", ".join(f"{v:g}" for v in sorted(set(betas)) or [DEFAULT_BETA])
    return f"SFT training loss (nats/token)\nEMA of the per-step loss, beta = {b}"


def probe_frame(records: Sequence[CellRecord], x: str = X_TRAIN) -> pd.DataFrame:
    """The trajectory probes of every usable cell that did not miss its target, with the x loss.

    Args:
        records: the sweep's records.
        x: ``"train"`` (smoothed training loss at the probe's step; probes before the first
            logged step are dropped) or ``"heldout"`` (the probe's held-out ``sft_loss``).

    Returns:
        One row per probe: the probe's fields, ``x_loss``, ``beta`` and the cell's facts
        (``cell_id``, ``group``, ``checkpoint``, ``branch``, ``tokens``, ``lr``, ``seed``);
        empty when no cell has probes.
    """
    if x not in (X_TRAIN, X_HELDOUT):
        raise ValueError(f"x={x!r}: the SFT loss axis is {X_TRAIN!r} or {X_HELDOUT!r}")
    frames = []
    for r in records:
        probes = pd.DataFrame(r.curves.get("probes") or [])
        if r.status not in GOOD_STATUSES or target_reached(r) is False or probes.empty or "step" not in probes:
            continue
        beta = loss_smoothing(r)
        if x == X_TRAIN:
            sft = pd.DataFrame(r.curves.get("sft") or [])
            if sft.empty or not {"step", "loss"} <= set(sft.columns):
                continue
            sft = sft.sort_values("step")
            smooth = pd.DataFrame({"step": sft["step"].to_numpy(), "x_loss": ema(sft["loss"], beta)})
            probes = pd.merge_asof(probes.sort_values("step"), smooth, on="step", direction="backward")
        elif "sft_loss" in probes:
            probes["x_loss"] = probes["sft_loss"]
        else:
            continue
        facts = {
            "cell_id": r.cell_id,
            "group": replica_group(r),
            "checkpoint": r.checkpoint,
            "branch": pretrain_branch(r.checkpoint, r.config),
            "tokens": r.tokens,
            "lr": r.lr,
            "seed": r.seed,
            "beta": beta,
        }
        frames.append(probes.dropna(subset=["x_loss"]).assign(**facts))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def equal_loss_findings(df: pd.DataFrame, metric: str) -> list[Finding]:
    """Does a larger LR forget more at equal SFT loss? One finding per (branch, checkpoint, target).

    Args:
        df: the usable cells of the cell table (``target_loss``, ``target_reached`` columns).
        metric: the OOD metric ``<m>``; forgetting is ``forget/<m>`` (positive = forgot).

    Returns:
        Findings for every checkpoint with a target and two or more LRs that reached it: the
        forgetting per LR (mean [95% t-interval] over seeds), the largest-minus-smallest LR
        difference with its Welch interval and one-sided p; empty without targets.
    """
    col = f"forget/{metric}"
    if df.empty or col not in df.columns or "target_loss" not in df.columns or df["target_loss"].isna().all():
        return []
    what = metric_label(metric).split(" (")[0]
    targeted = df[df["target_loss"].notna()]
    out = []
    multi = df["branch"].nunique() > 1
    for (branch, _ckpt, tokens, target), g in targeted.groupby(["branch", "checkpoint", "tokens", "target_loss"]):
        hit = g["target_reached"].fillna(False).astype(bool)
        missed = int((~hit).sum())
        reached = g[hit].dropna(subset=[col])
        lrs = sorted(reached["lr"].unique())
        tag = f"[{branch}] " if multi else ""
        effect = f"{tag}Larger LR forgets more at equal SFT loss ({format_tokens(tokens)}, target {target:g})"
        skipped = f"; {missed} cell(s) excluded: target not reached" if missed else ""
        if len(lrs) < 2:
            numbers = f"{len(lrs)} LR(s) reached the target{skipped}"
            out.append(Finding(effect, "cannot be judged", numbers, "", "", f"{effect}: cannot be judged, {numbers}."))
            continue
        per_lr = {lr: reached.loc[reached["lr"] == lr, col].to_numpy(float) for lr in lrs}
        ivs = {lr: t_interval(v) for lr, v in per_lr.items()}
        lo_lr, hi_lr = lrs[0], lrs[-1]
        d = welch(per_lr[hi_lr], per_lr[lo_lr], "greater")
        listed = "; ".join(f"LR {format_lr(lr)}: {ivs[lr].text('.3g')}" for lr in lrs)
        seeded = min(iv.n for iv in ivs.values()) >= 2
        if seeded:
            p = f"one-sided Welch p = {d.p:.2g}" if np.isfinite(d.p) else "Welch test n/a (no variance)"
            yes = bool(np.isfinite(d.p) and d.p < ALPHA)
            appears = "yes" if yes else "no"
            verdict = (
                f"LR {format_lr(hi_lr)} forgets more than LR {format_lr(lo_lr)}"
                if yes
                else f"no difference beyond seed noise between LR {format_lr(hi_lr)} and LR {format_lr(lo_lr)}"
            )
        else:
            p = "single seed: untested against seed noise"
            appears = f"{'yes' if d.diff > 0 else 'no'} (single seed, untested)"
            verdict = f"LR {format_lr(hi_lr)} forgets {'more' if d.diff > 0 else 'less'} than LR {format_lr(lo_lr)}"
        numbers = f"forgetting of {what} at SFT loss {target:g}: {listed}; {p}{skipped}"
        interval = "" if not np.isfinite(d.lo) else f"{d.diff:+.3g} [{d.lo:.3g}, {d.hi:.3g}]"
        sentence = (
            f"{tag}At equal SFT loss ({target:g}, {format_tokens(tokens)} tokens), {verdict}: forgetting of {what} "
            f"{listed} ({p}{skipped})."
        )
        seeds = seeds_text([iv.n for iv in ivs.values()])
        out.append(Finding(effect, appears, numbers, interval, seeds, sentence))
    return out
