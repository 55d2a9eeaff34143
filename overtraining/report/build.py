"""Records of a sweep -> cell table, figures, findings, one HTML page (and optionally W&B).

``build_report`` is the whole report as one function, used by ``python -m
overtraining.report`` and by tests on real sweeps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

import overtraining.report.figures as F
from overtraining.config import LoggerConfig
from overtraining.report.effects import ALPHA, RHO_MIN, U_MIN_RISE, effect_findings
from overtraining.report.equal_loss import X_HELDOUT, X_TRAIN, equal_loss_findings, probe_frame, x_label
from overtraining.report.findings import Finding, findings_frame
from overtraining.report.html import Figure, write_html
from overtraining.report.inflection import N_BOOT, optima_findings
from overtraining.report.labels import (
    ID_PREFERENCE,
    OOD_PREFERENCE,
    format_tokens,
    lower_is_better,
    metric_label,
    pick_metric,
)
from overtraining.report.mitigations import baseline_cells, mitigation_report, several
from overtraining.report.quantization import quantization_findings, quantization_vs_tokens
from overtraining.report.seeds import aggregate, seeds_text
from overtraining.report.table import (
    curve_frame,
    groups_display,
    metric_columns,
    records_to_frame,
    update_size_table,
    usable,
    write_table,
)
from overtraining.report.tradeoff import edge_lr_findings
from overtraining.results import RECORD_NAME, CellRecord, load_records
from overtraining.tracking import upload_report


class ReportError(Exception):
    """A problem with the report's inputs, stated in one line with its fix."""


def collect(dirs: Sequence[str | Path]) -> list[CellRecord]:
    """Every record under ``dirs``.

    Raises:
        ReportError: when a dir is missing, a record unreadable, or there is no record.
    """
    try:
        records = load_records(*dirs)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise ReportError(str(err)) from err
    if not records:
        where = ", ".join(str(d) for d in dirs)
        raise ReportError(
            f"no {RECORD_NAME} under {where}: pass a sweep dir (multirun/<date>/<time>) "
            "whose cells have finished, or run one first (python -m overtraining.run -m ...)"
        )
    return records


METHOD = (
    "How to read the findings. Cells that differ only in their seeds are replicas; every mean is over seeds and "
    "every interval is 95%: for a mean, Student's t-interval across seeds (scipy.stats.t); for a difference "
    f"of means, Welch's interval. With two or more seeds at every budget a verdict is a test at p < {ALPHA}: "
    "a trend is Spearman's rho of the quantity with tokens over all seed replicas (two-sided p, "
    "scipy.stats.spearmanr); a U-shape needs an interior best budget, the last budget worse than the best by a "
    "one-sided Welch t-test (scipy.stats.ttest_ind, equal_var=False), and the base model's own metric still "
    "better at the last budget than at the best one (otherwise it is not catastrophic overtraining); "
    "'larger LR forgets more at equal SFT loss' is a one-sided Welch test of the largest LR's forgetting against "
    "the smallest LR's, over cells that reached the common target loss. With one seed per budget a verdict is "
    f"marked 'single seed, untested': a trend when |rho| of the per-budget values >= {RHO_MIN}, a U when the last "
    f"budget is >= {U_MIN_RISE:.0%} worse than the best. Optimal-budget intervals are bootstraps that resample seeds "
    "within each budget."
)


def landscape_slices(records: Sequence[CellRecord]) -> list[tuple[str, dict]]:
    """The 2D loss slices of the usable cells, one per checkpoint (its first cell), ordered by tokens."""
    seen, out = set(), []
    for r in sorted(records, key=lambda r: (r.tokens, r.checkpoint, r.lr, r.seed)):
        s = r.curves.get("landscape2d")
        if r.status in ("completed", "target_reached") and isinstance(s, dict) and r.checkpoint not in seen:
            seen.add(r.checkpoint)
            out.append((f"{r.checkpoint.split('/')[-1]} ({format_tokens(r.tokens)})", s))
    return out


def draw_figures(
    records: Sequence[CellRecord],
    df: pd.DataFrame,
    metric: str | None,
    id_col: str | None,
    out: Path,
    sft_loss: str = X_TRAIN,
) -> list[Figure]:
    """Draws every figure whose metrics exist; returns them in reading order."""
    probes, landscape = probe_frame(records, sft_loss), curve_frame(records, "landscape")
    xl = x_label(sft_loss, probes["beta"].tolist() if "beta" in probes else ())
    xl_text = xl.replace("\n", ", ")
    what = metric_label(metric) if metric else ""
    mean_ci = "mean over seeds, error bars: 95% t-interval where there are two or more seeds"
    specs = [
        (
            lambda: F.ood_vs_tokens(df, metric, out) if metric else None,
            f"Fine-tuned {what} vs pretraining tokens",
            "Base model (black, dashed) and after fine-tuning, one line per LR; stars mark each line's best "
            "budget. Catastrophic overtraining is the upturn at large budgets (" + mean_ci + ").",
        ),
        (
            lambda: F.forgetting_vs_tokens(df, metric, out) if metric else None,
            "Forgetting vs pretraining tokens",
            f"How much fine-tuning worsened the OOD metric, per LR (positive = forgot; {mean_ci}).",
        ),
        (
            lambda: F.id_vs_tokens(df, id_col, out) if id_col else None,
            "ID metric vs pretraining tokens",
            f"The SFT task's own metric after fine-tuning, per LR ({mean_ci}).",
        ),
        (
            lambda: F.pareto(df, id_col, metric, out) if id_col and metric else None,
            "ID-OOD trade-off and tuned LR",
            "Left: each checkpoint's cells (mean over seeds, bars: 95% t-interval) in the ID-OOD plane with its "
            "Pareto front. Right: the LR with the best ID metric per checkpoint; red rings mark an optimum at the "
            "edge of the LR grid (the optimum may lie outside it).",
        ),
        (
            lambda: F.sensitivity_vs_tokens(df, out),
            "Sensitivity to Gaussian weight noise",
            "Loss rise of the base model when each tensor gets noise gamma * std(tensor) * N(0, 1); "
            "error bars: 95% t-interval over seeds where seeds give distinct values, else the std over noise draws. "
            "Progressive sensitivity is growth with tokens.",
        ),
        (
            lambda: quantization_vs_tokens(df, out),
            "Sensitivity to weight quantization",
            "Loss rise of the base model when every linear weight is rounded to b bits (symmetric round-to-nearest, "
            "one scale max|w| / (2^(b-1) - 1) per group; left) beside the loss rise under Gaussian noise (right), "
            "per pretraining branch. Quantization is deterministic: one value per checkpoint unless seeds change "
            "the weights (Kumar et al. 2024: the rise grows with tokens; Catalan-Tatjer et al. 2025: it jumps "
            "when the LR decays).",
        ),
        (
            lambda: F.sharpness_vs_tokens(df, out),
            "Sharpness through pretraining",
            "KL(p_theta || p_theta+eps) proxy and Hessian estimates of the base model, per pretraining branch "
            "(mean over seeds; 95% t-interval where seeds give distinct values).",
        ),
        (
            lambda: F.ood_vs_sft_loss(probes, metric or "", out, xl),
            "OOD metric at equal SFT loss",
            f"Trajectory probes along SFT: OOD metric against the {xl_text}, one line per LR (mean over seeds at each "
            "probe, band: 95% t-interval), one panel per checkpoint. Compare LRs at the same SFT loss. Cells that "
            "did not reach their target loss are left out.",
        ),
        (
            lambda: F.forgetting_vs_update(df, metric, out) if metric else None,
            "Forgetting against the size of the update",
            "One point per cell: forgetting against ||theta_ft - theta_base|| / ||theta_base|| (colour = "
            "pretraining tokens, marker = LR). If forgetting ~ sensitivity x update size, later checkpoints "
            "forget more for the same update. Table: update size per LR and budget, mean [95% t-interval].",
            update_size_table(df),
        ),
        (
            lambda: F.drift(df, out),
            "Representation drift",
            f"Mean principal angle and linear CKA between base and fine-tuned hidden states, against LR ({mean_ci}).",
        ),
        (
            lambda: F.landscape(landscape, out),
            "Loss landscape",
            "Loss along the straight line from the base (alpha = 0) to the fine-tuned model (alpha = 1); "
            "mean over seeds, band: 95% t-interval.",
        ),
        (
            lambda: F.landscape_2d(landscape_slices(records), out),
            "2D loss landscape",
            "Loss on a plane through the base model (star) spanned by two random filter-normalised directions, "
            "one panel per checkpoint.",
        ),
    ]
    figs = []
    for draw, title, caption, *table in specs:
        path = draw()
        if path is not None:
            figs.append(Figure(path, title, caption, table[0] if table else None))
    return figs


def cannot_rank_lrs(df: pd.DataFrame, col: str) -> bool:
    """True when ``col`` (mean over seeds) ties across the LRs at half of the budgets or more."""
    if len(df) < 2 or df[col].nunique() <= 1:
        return len(df) > 1
    means = df.groupby(["tokens", "lr"])[col].mean().reset_index()
    per_budget = means.groupby("tokens")
    ties = sum(g[col].nunique() <= 1 for _, g in per_budget if len(g) > 1)
    ranked = sum(len(g) > 1 for _, g in per_budget)
    return ranked > 0 and ties * 2 >= ranked


def all_findings(
    df: pd.DataFrame, metric: str | None, id_col: str | None, n_boot: int = N_BOOT, seed: int = 0
) -> list[Finding]:
    """Every finding in reading order: effects, quantization, equal-loss comparisons, the ID-optimal LR's
    edge, optima."""
    out = effect_findings(df, metric) + quantization_findings(df)
    if metric:
        out += equal_loss_findings(df, metric)
    if id_col and id_col in df.columns:
        out += edge_lr_findings(df, id_col)
    if metric:
        out += optima_findings(df, f"ft/{metric}", id_col, n_boot, seed)
    return out


def build_report(
    dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    metric: str | None = None,
    id_metric: str | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    wandb: LoggerConfig | None = None,
    group: str | None = None,
    sft_loss: str = X_TRAIN,
) -> Path:
    """Builds the report of one or more sweeps.

    Args:
        dirs: sweep dirs, run dirs or record files.
        out: output dir; default ``<first dir>/report``.
        metric: the OOD metric ``<m>`` (``ft/<m>`` must exist); default: the first OOD one.
        id_metric: the ID metric that picks the tuned LR; default ``id/accuracy`` or similar.
        n_boot: bootstrap resamples for the optimal-budget intervals.
        seed: bootstrap seed.
        wandb: when given, also upload figures and table to a W&B run of their own.
        group: the W&B group; default: the first dir's name.
        sft_loss: the x-axis of the OOD-vs-SFT-loss figure: ``"train"`` (smoothed training
            loss, the default) or ``"heldout"`` (held-out SFT loss at each probe).

    Returns:
        The path of ``report.html`` (beside it: ``cells.csv``, ``cells.parquet``,
        ``groups.csv`` (one row per replica group: mean and 95% interval), ``findings.csv``
        and the PNGs).

    Raises:
        ReportError: no records, unreadable records, or an unknown metric (one line, with the fix).
    """
    records = collect(dirs)
    first = Path(dirs[0])
    out = Path(out) if out else (first.parent if first.is_file() else first) / "report"
    df = records_to_frame(records)
    good = usable(df)
    # an ID metric that ties across LRs at most budgets (a tiny model's exact match of 0, with
    # the odd lucky 1/16) cannot rank LRs: the next ID metric (the ID loss) does
    constant = [c[3:] for c in good.columns if c.startswith("ft/id/") and cannot_rank_lrs(good, c)]
    try:
        m = pick_metric(df.columns, metric, OOD_PREFERENCE)
        id_m = pick_metric(df.columns, id_metric, ID_PREFERENCE, skip=constant)
        for name in (m, id_m):
            if name:
                lower_is_better(name)  # fails now, in one line, if the name says no direction
    except ValueError as err:
        raise ReportError(str(err)) from err
    if sft_loss not in (X_TRAIN, X_HELDOUT):
        raise ReportError(f"sft_loss={sft_loss!r}: use {X_TRAIN!r} (smoothed training loss) or {X_HELDOUT!r}")
    id_col = f"ft/{id_m}" if id_m else None
    write_table(df, out)
    groups = aggregate(good, metric_columns(good))
    groups.to_csv(out / "groups.csv", index=False)
    plain = baseline_cells(good)  # with mitigations mixed, the sweep-wide figures use plain SFT's cells
    plain_records = [r for r in records if r.cell_id in set(plain["cell_id"])] if several(good) else records
    figs = draw_figures(plain_records, plain, m, id_col, out, sft_loss)
    findings = all_findings(plain, m, id_col, n_boot, seed)
    mit_figs, mit_findings = mitigation_report(good, m, out)
    figs += [Figure(*spec) for spec in mit_figs]
    findings += mit_findings
    table = findings_frame(findings)
    table.to_csv(out / "findings.csv", index=False)
    shown = [c for c in (f"ft/{m}", f"base/{m}", f"forget/{m}", id_col, "update/rel_norm") if c and m]
    status = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    missed = int((~df["target_reached"].fillna(True).astype(bool)).sum())
    meta = [
        f"Sources: {', '.join(str(d) for d in dirs)}",
        f"Cells: {len(df)} ({status}); figures use completed/target-reached cells only"
        + (
            f"; {missed} cell(s) did not reach their target SFT loss and are left out of equal-loss comparisons."
            if missed
            else "."
        ),
        f"Replica groups: {len(groups)} (cells that differ only in their seeds); seeds per group: "
        + (f"{seeds_text(groups['n_seeds'].tolist())}." if len(groups) else "none."),
        f"OOD metric: ft/{m}; ID metric: {id_col}."
        + "".join(f" Not used: ft/{c} (the same in every cell)." for c in constant if c != id_m),
        *(
            [
                f"Mitigations: {', '.join(sorted(df['mitigation'].unique()))}; the figures and findings before "
                "the frontier use the plain-SFT (none) cells only (see docs/mitigations.md)."
            ]
            if several(good)
            else []
        ),
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}; tables: cells.csv, cells.parquet, groups.csv, findings.csv.",
    ]
    html = write_html(
        out / "report.html",
        title="Catastrophic overtraining report",
        meta=meta,
        findings=[f.sentence for f in findings],
        figures=figs,
        cells=df,
        findings_table=table,
        method=METHOD,
        groups=groups_display(groups, shown),
    )
    if wandb is not None:
        run_dir = upload_report(
            wandb,
            df,
            {f.path.stem: f.path for f in figs},
            html,
            group or first.name,
            [str(Path(d).resolve()) for d in dirs],
            {"groups": groups, "findings": table},
        )
        if run_dir is not None:
            hint = f" (offline: upload with `wandb sync {run_dir}`)" if "offline-run" in run_dir.name else ""
            print(f"W&B report run: {run_dir}{hint}", file=sys.stderr)
    return html
