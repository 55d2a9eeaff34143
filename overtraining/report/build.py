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

from overtraining.config import LoggerConfig
from overtraining.report import figures as F
from overtraining.report.effects import effect_sentences
from overtraining.report.html import Figure, write_html
from overtraining.report.inflection import N_BOOT, optima_sentences
from overtraining.report.labels import ID_PREFERENCE, OOD_PREFERENCE, lower_is_better, metric_label, pick_metric
from overtraining.report.table import curve_frame, records_to_frame, usable, write_table
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


def draw_figures(
    records: Sequence[CellRecord], df: pd.DataFrame, metric: str | None, id_col: str | None, out: Path
) -> list[Figure]:
    """Draws every figure whose metrics exist; returns them in reading order."""
    probes, landscape = curve_frame(records, "probes"), curve_frame(records, "landscape")
    what = metric_label(metric) if metric else ""
    specs = [
        (
            lambda: F.ood_vs_tokens(df, metric, out) if metric else None,
            f"Fine-tuned {what} vs pretraining tokens",
            "Base model (black, dashed) and after fine-tuning, one line per LR; stars mark each line's best "
            "budget. Catastrophic overtraining is the upturn at large budgets (mean +- std over seeds).",
        ),
        (
            lambda: F.forgetting_vs_tokens(df, metric, out) if metric else None,
            "Forgetting vs pretraining tokens",
            "How much fine-tuning worsened the OOD metric, per LR (positive = forgot).",
        ),
        (
            lambda: F.id_vs_tokens(df, id_col, out) if id_col else None,
            "ID metric vs pretraining tokens",
            "The SFT task's own metric after fine-tuning, per LR.",
        ),
        (
            lambda: F.pareto(df, id_col, metric, out) if id_col and metric else None,
            "ID-OOD trade-off and tuned LR",
            "Left: each checkpoint's (LR-mean) cells in the ID-OOD plane with its Pareto front. "
            "Right: the LR with the best ID metric per checkpoint.",
        ),
        (
            lambda: F.sensitivity_vs_tokens(df, out),
            "Sensitivity to Gaussian weight noise",
            "Loss rise of the base model when each tensor gets noise gamma * std(tensor) * N(0, 1); "
            "error bars: std over noise draws. Progressive sensitivity is growth with tokens.",
        ),
        (
            lambda: F.sharpness_vs_tokens(df, out),
            "Sharpness through pretraining",
            "KL(p_theta || p_theta+eps) proxy and Hessian estimates of the base model, per pretraining branch.",
        ),
        (
            lambda: F.ood_vs_sft_loss(probes, metric or "", out),
            "OOD metric at equal SFT loss",
            "Trajectory probes along SFT: OOD metric against the SFT training loss, one line per cell "
            "(colour = LR), one panel per checkpoint. Compare LRs at the same SFT loss.",
        ),
        (
            lambda: F.drift(df, out),
            "Representation drift",
            "Mean principal angle and linear CKA between base and fine-tuned hidden states, against LR.",
        ),
        (
            lambda: F.landscape(landscape, out),
            "Loss landscape",
            "Loss along the straight line from the base (alpha = 0) to the fine-tuned model (alpha = 1).",
        ),
    ]
    drawn = [(draw(), title, caption) for draw, title, caption in specs]
    return [Figure(path, title, caption) for path, title, caption in drawn if path is not None]


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

    Returns:
        The path of ``report.html`` (beside it: ``cells.csv``, ``cells.parquet``, the PNGs).

    Raises:
        ReportError: no records, unreadable records, or an unknown metric (one line, with the fix).
    """
    records = collect(dirs)
    first = Path(dirs[0])
    out = Path(out) if out else (first.parent if first.is_file() else first) / "report"
    df = records_to_frame(records)
    good = usable(df)
    # an ID metric with one value in every cell (a tiny model's exact match of 0) cannot rank LRs
    constant = [c[3:] for c in good.columns if c.startswith("ft/id/") and len(good) > 1 and good[c].nunique() <= 1]
    try:
        m = pick_metric(df.columns, metric, OOD_PREFERENCE)
        id_m = pick_metric(df.columns, id_metric, ID_PREFERENCE, skip=constant)
        for name in (m, id_m):
            if name:
                lower_is_better(name)  # fails now, in one line, if the name says no direction
    except ValueError as err:
        raise ReportError(str(err)) from err
    id_col = f"ft/{id_m}" if id_m else None
    write_table(df, out)
    figs = draw_figures(records, good, m, id_col, out)
    findings = effect_sentences(good, m) + (optima_sentences(good, f"ft/{m}", id_col, n_boot, seed) if m else [])
    status = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    meta = [
        f"Sources: {', '.join(str(d) for d in dirs)}",
        f"Cells: {len(df)} ({status}); figures use completed/target-reached cells only.",
        f"OOD metric: ft/{m}; ID metric: {id_col}."
        + "".join(f" Not used: ft/{c} (the same in every cell)." for c in constant if c != id_m),
        f"Generated {time.strftime('%Y-%m-%d %H:%M')}; tables: cells.csv, cells.parquet.",
    ]
    html = write_html(
        out / "report.html",
        title="Catastrophic overtraining report",
        meta=meta,
        findings=findings,
        figures=figs,
        cells=df,
    )
    if wandb is not None:
        run_dir = upload_report(
            wandb,
            df,
            {f.path.stem: f.path for f in figs},
            html,
            group or first.name,
            [str(Path(d).resolve()) for d in dirs],
        )
        if run_dir is not None:
            hint = f" (offline: upload with `wandb sync {run_dir}`)" if "offline-run" in run_dir.name else ""
            print(f"W&B report run: {run_dir}{hint}", file=sys.stderr)
    return html
