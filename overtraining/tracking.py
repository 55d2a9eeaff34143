"""Weights & Biases for cells and for the report, behind a small ``MetricsSink`` protocol.

A cell asks ``make_sink`` once (on rank 0) and then only calls ``log``/``summary``/``finish``;
with ``logger=none`` (or ``mode=disabled``) it gets a ``NullSink`` and the loop never asks
whether W&B is on. Nothing fails without an API key::

    python -m overtraining.run                       # logger=wandb, mode=auto: offline without WANDB_API_KEY
    python -m overtraining.run logger=none           # no W&B at all
    python -m overtraining.run logger.mode=online logger.entity=my-team
    wandb sync multirun/<date>/<time>/*/wandb/offline-run-*   # upload offline runs later

``mode=auto`` is the environment's ``WANDB_MODE`` when set, else ``online`` when
``WANDB_API_KEY`` is set, else ``offline``. An ``online`` run that cannot start (no key, no
network) falls back to offline with a warning; a run that cannot start at all logs nothing
and warns, so W&B never kills a cell.

Runs are requeue-safe: the run id is the cell id (a hash of the cell's science config), and
``resume="allow"`` continues the same run when Slurm requeues the cell (W&B drops steps at or
below the last one it has, so a requeued cell that restarts SFT from step 0 logs its history
again only after its old last step; its summary is overwritten). The sweep is the W&B
group. Pass the checkpoint's facts as top-level config keys so runs can be grouped and
plotted, e.g. ``run_config = {**OmegaConf.to_container(cfg, resolve=True), "tokens": ckpt.tokens,
"checkpoint_name": ckpt.name}`` (``lr`` and ``seed`` are top-level in the cell config already).

The report's upload (``python -m overtraining.report <sweep> --wandb``) is a run of its own
(``job_type="report"``, same group as the sweep) holding the figures, the cell table as a
``wandb.Table``, the replica-group table (mean and 95% interval over seeds) and the findings
table as ``wandb.Table``s, and the HTML page.

The standard dashboard (forgetting vs tokens), built in the W&B UI -- the workspace API
(``wandb-workspaces``) is not a dependency, so it is documented here rather than coded:

1. Project page -> filter runs by ``group`` = the sweep (and ``job_type`` != report).
2. "Add panel" -> "Scatter plot" (or "Line plot" with x = a config key): x = ``config.tokens``
   (log scale), y = ``summary forget/ppl/ood_prose`` (or any ``forget/...``); colour/group by
   ``config.lr``. Group runs by ``lr`` (the run-table "Group" button) to get one line per LR
   with mean and min/max bands over seeds.
3. Repeat with y = ``ft/ppl/ood_prose`` (the U-shape), ``ft/id/accuracy`` and
   ``base/perturb/gamma=0.1/delta_loss_mean`` (progressive sensitivity); save the view.
The report's ``cells`` table gives the same plots offline (``cells.parquet``).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from overtraining.config import LoggerConfig


class MetricsSink(Protocol):
    """Where a cell sends its metrics: W&B, or nowhere."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None: ...

    def summary(self, metrics: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...


class NullSink:
    """A sink that drops everything (``logger=none``, ranks > 0, W&B unavailable)."""

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbSink:
    """A sink writing to one W&B run (history via ``log``, final numbers via ``summary``)."""

    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.run.log(dict(metrics), step=step)

    def summary(self, metrics: dict[str, Any]) -> None:
        self.run.summary.update(dict(metrics))

    def finish(self) -> None:
        self.run.finish()


def resolve_mode(mode: str, env: Mapping[str, str]) -> str:
    """The W&B mode to run in: ``auto`` becomes ``WANDB_MODE``, else online with a key, else offline."""
    if mode != "auto":
        return mode
    if env.get("WANDB_MODE") in ("offline", "online", "disabled"):
        return env["WANDB_MODE"]
    return "online" if env.get("WANDB_API_KEY") else "offline"


def run_id_for(key: str) -> str:
    """A valid W&B run id from a cell id (or any string): kept if safe, else hashed."""
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _init(cfg: LoggerConfig, mode: str, **kwargs: Any) -> Any | None:
    """``wandb.init`` that never raises: online falls back to offline, anything else to None."""
    try:
        import wandb
    except ImportError:
        warnings.warn("wandb is not installed: logging nothing (logger=none hides this)", stacklevel=3)
        return None
    kwargs = dict(
        project=cfg.project,
        entity=cfg.entity or None,
        resume="allow",
        reinit="finish_previous",
        settings=wandb.Settings(silent=True, console="off"),
        **kwargs,
    )
    for attempt in (mode, "offline") if mode == "online" else (mode,):
        try:
            return wandb.init(mode=attempt, **kwargs)
        except Exception as err:  # logging must never kill a cell
            then = "logging offline instead" if attempt == "online" else "logging nothing"
            warnings.warn(f"W&B {attempt} run failed to start ({err}); {then}", stacklevel=3)
    return None


def make_sink(
    cfg: LoggerConfig, run_config: dict[str, Any], group: str, run_id: str, name: str, run_dir: Path
) -> MetricsSink:
    """The sink of one cell: a ``WandbSink`` on a requeue-safe run, or a ``NullSink``.

    Call it on rank 0 only (other ranks use ``NullSink()``).

    Args:
        cfg: the ``logger`` group.
        run_config: the cell's resolved config (plain dict) plus ``tokens``/``checkpoint_name``.
        group: the sweep's name (W&B group), e.g. the multirun dir ``2026-01-31/12-00-00``.
        run_id: the cell id; the same id resumes the same run (Slurm requeue).
        name: the run's display name, e.g. ``pythia-70m/step1000 lr=1e-4``.
        run_dir: the cell's run dir; W&B writes ``run_dir/wandb/`` unless ``cfg.dir`` is set.

    Returns:
        A sink; never raises for a missing key or network.
    """
    mode = resolve_mode(cfg.mode, os.environ)
    if cfg.kind == "none" or mode == "disabled":
        return NullSink()
    wandb_dir = Path(cfg.dir or run_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    run = _init(
        cfg,
        mode,
        id=run_id_for(run_id),
        name=name,
        group=group[:128],
        config=run_config,
        dir=str(wandb_dir),
        job_type="cell",
    )
    return NullSink() if run is None else WandbSink(run)


def upload_report(
    cfg: LoggerConfig,
    cells: Any,
    figures: Mapping[str, Path],
    html: Path,
    group: str,
    sources: list[str],
    tables: Mapping[str, Any] | None = None,
) -> Path | None:
    """Uploads a report (figures, cell table, HTML page) to a W&B run of its own.

    Args:
        cfg: the ``logger`` group (``mode`` as for cells: offline without a key).
        cells: the cell table (pandas DataFrame) -> a ``wandb.Table`` named ``cells``.
        figures: figure name -> PNG path, each logged as ``figures/<name>``.
        html: the report page, logged as ``report``.
        group: the W&B group (the sweep's name).
        sources: the sweep dirs read; their hash is the run id, so a re-run resumes it.
        tables: more DataFrames to log as ``wandb.Table``s by name, e.g. ``groups`` (mean and
            95% interval over seeds per replica group) and ``findings`` (the verdicts).

    Returns:
        The local W&B run directory (``wandb sync`` it when offline), or None when
        disabled or W&B could not start.
    """
    mode = resolve_mode(cfg.mode, os.environ)
    if cfg.kind == "none" or mode == "disabled":
        return None
    run_id = "report-" + hashlib.sha256("\n".join(sorted(sources)).encode()).hexdigest()[:12]
    wandb_dir = Path(cfg.dir or html.parent)
    run = _init(
        cfg,
        mode,
        id=run_id,
        name=f"report {group}",
        group=group[:128],
        job_type="report",
        config={"sources": sources},
        dir=str(wandb_dir),
    )
    if run is None:
        return None
    import wandb

    payload: dict[str, Any] = {f"figures/{n}": wandb.Image(str(p)) for n, p in figures.items()}
    for name, frame in {"cells": cells, **(tables or {})}.items():
        if frame is not None and len(frame):
            payload[name] = wandb.Table(dataframe=frame.astype(object).where(frame.notna(), None))
    payload["report"] = wandb.Html(html.read_text(encoding="utf-8"), inject=False)
    run.log(payload)
    run_dir = Path(run.settings.sync_dir) if getattr(run.settings, "sync_dir", None) else wandb_dir
    run.finish()
    return run_dir
