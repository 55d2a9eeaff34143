"""The result record: one JSON file per cell, the contract between stages and the report.

A cell writes ``record.json`` into its Hydra run dir (atomically: temp file + rename), so a
killed job leaves either a whole record or none. The report and the sweep status helper
read records only. Bump ``RECORD_VERSION`` when a field changes meaning.

Metric names are flat strings, prefixed by what they describe:

* ``base/<m>``, ``ft/<m>``  -- a metric of the base / fine-tuned model, e.g. ``ft/ppl/ood_prose``,
  ``base/ood/embedded_prose_cloze/acc``, ``base/perturb/gamma=0.1/delta_loss_mean``,
  ``base/sharpness/kl``, ``ft/id/accuracy``;
* ``forget/<m>``            -- base minus fine-tuned, signed so that positive = forgot;
* ``drift/<m>``, ``sft/<m>`` -- representation drift (base vs fine-tuned); SFT facts.

Curves (lists of dicts) hold the SFT loss history and the trajectory probes.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from overtraining.files import atomic_write_text

RECORD_VERSION = 1
RECORD_NAME = "record.json"
STATUSES = ("completed", "target_reached", "diverged", "failed")
# Keys of the config that do not change what a cell computes (where results go, how a
# sweep runs, what it is called); ``pretrain`` counts through its recipe only.
NON_SCIENCE_KEYS = ("paths", "logger", "launch", "hydra", "sweep_name", "cache_dir", "experiment")
PRETRAIN_NON_RECIPE_KEYS = ("out_dir", "cache_dir", "state_every", "stop_after_steps", "sharpness_estimators")


@dataclass
class CellRecord:
    """Everything one cell measured, with the provenance to redo it."""

    cell_id: str
    status: str
    checkpoint: str
    tokens: int
    lr: float
    schedule: str
    sft_data: str
    seed: int
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"record status {self.status!r} is not one of {STATUSES}")

    def add(self, prefix: str, metrics: dict[str, Any]) -> None:
        """Adds ``metrics`` under ``prefix/`` (``""``: names already prefixed); lists are refused."""
        for name, value in metrics.items():
            if isinstance(value, (list, dict)):
                raise TypeError(f"metric {name!r} is a {type(value).__name__}: put curves in record.curves")
            self.metrics[f"{prefix}/{name}" if prefix else name] = value

    def add_sft(self, outcome: Any) -> None:
        """The SFT outcome's facts (``sft/...``), curves and notes."""
        self.curves |= {"sft": outcome.history, "probes": outcome.probes}
        self.add(
            "sft",
            {
                "steps": outcome.steps,
                "tokens": outcome.tokens,
                "target_reached_step": outcome.target_reached_step,
                "resumed_from": outcome.resumed_from,
                "final_loss": outcome.history[-1]["loss"] if outcome.history else None,
                **getattr(outcome, "metrics", {}),
            },
        )
        if outcome.resumed_from:
            self.notes.append(f"SFT resumed from step {outcome.resumed_from}")
        if outcome.diverged:
            self.status = "diverged"
            self.notes.append(f"SFT diverged at step {outcome.diverged_step}")
            self.metrics["sft/diverged_step"] = outcome.diverged_step


def cell_id(config: dict[str, Any]) -> str:
    """A stable id of a cell: a hash of what changes its numbers.

    The same cell in two sweeps (other ``sweep_name``, ``cache_dir``, logger or launcher)
    has the same id; any other key, the seed included, changes it.
    """
    science = {k: v for k, v in config.items() if k not in NON_SCIENCE_KEYS}
    if isinstance(science.get("pretrain"), dict):
        science["pretrain"] = {k: v for k, v in science["pretrain"].items() if k not in PRETRAIN_NON_RECIPE_KEYS}
    blob = json.dumps(science, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def provenance() -> dict[str, str]:
    """Git SHA, host, versions and time, saved with every record and checkpoint."""
    import torch

    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return {
        "git_sha": sha or "unknown",
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Writes JSON to ``path`` via a temp file and rename, so readers never see half a file."""
    atomic_write_text(path, json.dumps(payload, indent=1, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def write_record(record: CellRecord, run_dir: Path) -> Path:
    """Writes ``record.json`` into ``run_dir`` atomically and returns its path."""
    path = Path(run_dir) / RECORD_NAME
    write_json_atomic(path, asdict(record))
    return path


def read_record(path: Path) -> CellRecord:
    """Reads one record, refusing other versions with the fix."""
    data = json.loads(Path(path).read_text())
    if data.get("version") != RECORD_VERSION:
        raise ValueError(f"{path} is record version {data.get('version')}, this code reads {RECORD_VERSION}")
    return CellRecord(**data)


def find_records(*roots: str | os.PathLike) -> list[Path]:
    """Every ``record.json`` under the given sweep or run directories, sorted."""
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist: pass a sweep dir such as multirun/<date>/<time>")
        found += [root] if root.is_file() else sorted(root.rglob(RECORD_NAME))
    return found


def load_records(*roots: str | os.PathLike) -> list[CellRecord]:
    """All records under ``roots`` (sweep dirs, run dirs or record files)."""
    return [read_record(p) for p in find_records(*roots)]
