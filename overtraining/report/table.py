"""Records -> pandas: one row per cell (facts + metric columns), and long tables of curves.

The cell table's columns: the record's facts (``cell_id``, ``status``, ``checkpoint``,
``tokens``, ``lr``, ``schedule``, ``sft_data``, ``seed``), the fine-tuning LR schedule's name
(``lr_schedule``), the pretraining ``branch`` (the schedule the checkpoint was pretrained
with, ``+ cooldown`` for annealed branches), the replica ``group`` (cells that differ only in
their seeds share it, see ``overtraining.report.seeds``), the SFT ``target_loss`` (NaN when
unset), ``target_reached`` (True/False; empty when no target was set) and ``mitigation``
(``mitigation_label``: ``none``, ``replay 0.05``, ``wise``, ``lora``, ...), then every metric
name as its own column (NaN where a cell lacks it). ``cells.csv`` and ``cells.parquet`` hold
the same table; ``groups.csv`` holds one row per replica group (mean and 95% interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from overtraining.report.labels import format_lr, format_tokens
from overtraining.report.seeds import Interval, replica_group, t_interval
from overtraining.results import CellRecord

FACTS = ("cell_id", "status", "checkpoint", "tokens", "lr", "schedule", "sft_data", "seed")
EXTRA_FACTS = ("lr_schedule", "branch", "group", "target_loss", "target_reached", "mitigation")
METRIC_PREFIXES = ("base/", "ft/", "forget/", "drift/", "sft/", "update/", "perturb/", "sharpness/", "wise/")
# Cells whose metrics are meaningful; diverged/failed ones stay in the table, not in plots.
GOOD_STATUSES = ("completed", "target_reached")


def pretrain_branch(checkpoint: str, config: dict[str, Any]) -> str:
    """The pretraining branch of a checkpoint: its pretraining schedule, ``+ cooldown`` if annealed.

    Args:
        checkpoint: the checkpoint name; names ending in ``-cooldown`` are annealed branches.
        config: the cell's resolved config; ``pretrain_schedule`` may be a name or a dict
            with ``name`` (absent for Hub checkpoints, whose schedule the report cannot know).

    Returns:
        e.g. ``"wsd"``, ``"wsd + cooldown"``, ``"main"`` (schedule unknown).
    """
    sched = config.get("pretrain_schedule")
    if isinstance(sched, dict):
        sched = sched.get("name") or sched.get("schedule")
    label = str(sched) if sched else "main"
    if checkpoint.endswith("-cooldown") and "cooldown" not in label:
        label = f"{label} + cooldown"
    return label


def record_row(record: CellRecord) -> dict[str, Any]:
    """One cell's row: its facts, schedule names and flat metrics."""
    row: dict[str, Any] = {k: getattr(record, k) for k in FACTS}
    lr_schedule = record.config.get("lr_schedule")
    row["lr_schedule"] = lr_schedule.get("name", "") if isinstance(lr_schedule, dict) else str(lr_schedule or "")
    row["branch"] = pretrain_branch(record.checkpoint, record.config)
    row["group"] = replica_group(record)
    row["target_loss"] = target_loss(record)
    row["target_reached"] = target_reached(record)
    row["mitigation"] = mitigation_label(record.config)
    row.update({k: _number(v) for k, v in record.metrics.items()})
    return row


def mitigation_label(config: dict[str, Any]) -> str:
    """Which mitigation a cell ran: ``none``, ``wise``, ``<name> <strength>`` (``l2 0.1``); LoRA counts as one.

    ``trainer.method=lora`` alone is ``lora``; with another mitigation, ``lora + <label>``.
    Records older than the ``mitigation`` group are ``none`` (or ``lora``).
    """
    m = config.get("mitigation") if isinstance(config.get("mitigation"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    name = str(m.get("name") or "none")
    label = name if name in ("none", "wise") else f"{name} {float(m.get('strength') or 0):g}"
    if trainer.get("method") == "lora":
        return "lora" if name == "none" else f"lora + {label}"
    return label


def target_loss(record: CellRecord) -> float:
    """The SFT target loss the cell trained to (``trainer.target_loss``), NaN when unset."""
    trainer = record.config.get("trainer")
    value = trainer.get("target_loss") if isinstance(trainer, dict) else None
    return float("nan") if value is None else float(value)


def target_reached(record: CellRecord) -> bool | None:
    """Whether a cell with a target loss reached it (``sft/target_reached_step`` set); None without a target."""
    if np.isnan(target_loss(record)):
        return None
    return record.metrics.get("sft/target_reached_step") is not None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def records_to_frame(records: Sequence[CellRecord]) -> pd.DataFrame:
    """The cell table, sorted by branch, tokens, LR and seed.

    Args:
        records: the sweep's records.

    Returns:
        One row per cell; metric columns are float, in sorted order after the facts.
    """
    df = pd.DataFrame([record_row(r) for r in records])
    if df.empty:
        return df
    facts = [*FACTS, *EXTRA_FACTS]
    metrics = sorted(c for c in df.columns if c not in facts)
    types = {"tokens": "int64", "lr": "float64", "seed": "int64", "target_loss": "float64", "target_reached": "boolean"}
    df = df[facts + metrics].astype(types)
    return df.sort_values(["branch", "tokens", "lr", "seed"], kind="stable").reset_index(drop=True)


def metric_columns(df: pd.DataFrame, prefix: str = "") -> list[str]:
    """The metric columns of ``df`` that start with ``prefix`` (all metrics when empty)."""
    return [c for c in df.columns if c.startswith(METRIC_PREFIXES) and c.startswith(prefix)]


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """The cells whose metrics the figures may use (completed or target reached)."""
    return df[df["status"].isin(GOOD_STATUSES)] if not df.empty else df


def per_checkpoint(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Base-model metrics, one row per checkpoint (cells of a checkpoint share its base probes).

    Returns:
        Columns ``checkpoint``, ``branch``, ``tokens`` and the mean of each of ``columns``.
    """
    cols = [c for c in columns if c in df.columns]
    return df.groupby(["checkpoint", "branch", "tokens"], as_index=False)[cols].mean().sort_values("tokens")


def curve_frame(records: Sequence[CellRecord], name: str) -> pd.DataFrame:
    """One curve of every usable cell as a long table (one row per curve point).

    Args:
        records: the sweep's records.
        name: the curve's key in ``record.curves``: ``sft``, ``probes`` or ``landscape``.

    Returns:
        The curve's fields plus ``cell_id``, ``checkpoint``, ``branch``, ``tokens``, ``lr``,
        ``seed``; empty when no cell has the curve.
    """
    rows = []
    for r in records:
        if r.status not in GOOD_STATUSES:
            continue
        facts = {
            "cell_id": r.cell_id,
            "checkpoint": r.checkpoint,
            "tokens": r.tokens,
            "lr": r.lr,
            "seed": r.seed,
            "branch": pretrain_branch(r.checkpoint, r.config),
        }
        rows += [{**facts, **point} for point in r.curves.get(name, [])]
    return pd.DataFrame(rows)


def write_table(df: pd.DataFrame, out: Path) -> tuple[Path, Path]:
    """Writes ``cells.csv`` and ``cells.parquet`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    csv, parquet = out / "cells.csv", out / "cells.parquet"
    df.to_csv(csv, index=False)
    df.to_parquet(parquet, index=False)
    return csv, parquet


def update_size_table(df: pd.DataFrame) -> pd.DataFrame:
    """The size of the fine-tuning update per (branch, LR, budget): mean [95% t-interval] over seeds.

    Returns:
        Columns ``branch``, ``LR``, ``tokens``, ``n_seeds``, ``relative update size`` and
        ``update norm`` (``update/rel_norm``, ``update/norm`` as ``mean [lo, hi]`` text);
        empty when the cells lack ``update/rel_norm`` (records older than the metric).
    """
    if df.empty or "update/rel_norm" not in df.columns or df["update/rel_norm"].isna().all():
        return pd.DataFrame()
    rows = []
    for (branch, lr, tokens), g in df.dropna(subset=["update/rel_norm"]).groupby(["branch", "lr", "tokens"]):
        row = {"branch": branch, "LR": format_lr(lr), "tokens": format_tokens(tokens), "n_seeds": g["seed"].nunique()}
        row["relative update size"] = t_interval(g["update/rel_norm"].to_numpy(float)).text(".3g")
        if "update/norm" in g.columns:
            row["update norm"] = t_interval(g["update/norm"].to_numpy(float)).text(".3g")
        rows.append(row)
    return pd.DataFrame(rows)


def groups_display(groups: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The replica-group table for the page: facts, ``n_seeds`` and ``mean [lo, hi]`` text per metric.

    Args:
        groups: ``overtraining.report.seeds.aggregate`` output.
        columns: the metrics to show (those absent are skipped).
    """
    if groups.empty:
        return groups
    keep = [
        c
        for c in ("branch", "checkpoint", "tokens", "lr", "mitigation", "n_seeds", "seeds", "target_reached")
        if c in groups
    ]
    out = groups[keep].copy()
    for col in columns:
        if col in groups.columns and groups[col].notna().any():
            out[col] = [
                Interval(m, lo, hi, 0).text()
                for m, lo, hi in zip(groups[col], groups[f"{col} ci95_lo"], groups[f"{col} ci95_hi"], strict=True)
            ]
    return out
