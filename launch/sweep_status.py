"""Status of a sweep, from its records and run dirs only (no Slurm, no torch).

Usage::

    python launch/sweep_status.py multirun/NAME            # counts + the cells that are not done
    python launch/sweep_status.py multirun/NAME --all      # every cell
    python launch/sweep_status.py multirun/NAME --json     # machine-readable

A cell is:

* ``done``      -- its ``record.json`` says completed or target_reached;
* ``failed`` / ``diverged`` -- its record says so (rerun with ``launch.rerun_failed=true``);
* ``running``   -- SFT state (``sft/sft_state.pt`` or DeepSpeed's ``sft/sft_state_ds/latest``)
  but no record: SFT in progress, or interrupted (the age of the last SFT checkpoint tells
  which); re-running the sweep command resumes it;
* ``started``   -- a run dir but neither state nor record (setting up, base evaluation);
* ``pending``   -- in the sweep (``multirun.yaml``'s overrides) but no run dir yet.

Exit status: 0 when every cell is done, 1 otherwise (so ``until python launch/sweep_status.py
multirun/x; do sleep 60; done`` waits for a sweep), 2 on a bad argument.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

DONE = ("completed", "target_reached")
ORDER = ("done", "running", "started", "pending", "failed", "diverged")
STATE_MARKERS = ("sft/sft_state.pt", "sft/sft_state_ds/latest")


@dataclass
class Cell:
    """One cell of a sweep as seen on disk."""

    status: str  # one of ORDER
    path: str  # run dir (or the overrides, for a pending cell)
    detail: str = ""  # checkpoint/lr, record status, state age, note


def is_run_dir(path: Path) -> bool:
    """A Hydra job dir (``.hydra/``) or anything holding a record or SFT state."""
    return (path / ".hydra").is_dir() or (path / "record.json").exists() or (path / "sft").is_dir()


def run_dirs(sweep: Path) -> list[Path]:
    """Cell run dirs under ``sweep``, skipping submitit logs and per-rank subdirs."""
    found = []
    for p in sorted(sweep.rglob("*")):
        rel = p.relative_to(sweep).parts
        if not p.is_dir() or any(x.startswith(".") or (x.startswith("rank") and x[4:].isdigit()) for x in rel):
            continue
        if is_run_dir(p) and not any(is_run_dir(a) for a in p.parents if sweep in a.parents):
            found.append(p)
    return found


def cell_status(run_dir: Path, now: float) -> Cell:
    """The status of one started cell from its record and SFT state."""
    record = run_dir / "record.json"
    if record.exists():
        try:
            rec = json.loads(record.read_text())
        except (OSError, json.JSONDecodeError) as err:  # records are atomic; this is someone else's file
            return Cell("failed", str(run_dir), f"unreadable record: {err}")
        what = f"{rec.get('checkpoint')} lr={rec.get('lr')}"
        status = rec.get("status")
        if status in DONE:
            return Cell("done", str(run_dir), f"{what} ({status})")
        note = "; ".join(rec.get("notes", [])[-1:])
        return Cell(status if status in ("failed", "diverged") else "failed", str(run_dir), f"{what}: {note}")
    for marker in STATE_MARKERS:
        state = run_dir / marker
        if state.exists():
            age = now - state.stat().st_mtime
            return Cell("running", str(run_dir), f"last SFT checkpoint {_ago(age)} ago")
    error = " (see error.txt)" if (run_dir / "error.txt").exists() else ""
    return Cell("started", str(run_dir), "no SFT state yet" + error)


def _normalized(overrides: list[str]) -> list[list[str]]:
    """Each override's values as ``key=value`` lines in Hydra's spelling (``1e-3`` -> ``0.001``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    axes = []
    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return axes


def expected_cells(sweep: Path) -> list[frozenset[str]] | None:
    """The override sets of every cell of the sweep, from ``multirun.yaml``; None if unknown."""
    path = sweep / "multirun.yaml"
    if not path.exists():
        return None
    try:
        task = yaml.safe_load(path.read_text())["hydra"]["overrides"]["task"]
        return [frozenset(c) for c in itertools.product(*_normalized(task))]
    except Exception:  # a glob or range sweep, an odd file: counts without pending
        return None


def sweep_status(sweep: Path, now: float | None = None) -> list[Cell]:
    """Every cell of ``sweep``: started ones from their run dirs, pending ones from ``multirun.yaml``."""
    now = time.time() if now is None else now
    cells, seen = [], set()
    for d in run_dirs(sweep):
        cells.append(cell_status(d, now))
        overrides = d / ".hydra" / "overrides.yaml"
        if overrides.exists():
            seen.add(
                frozenset(line for axis in _normalized(yaml.safe_load(overrides.read_text()) or []) for line in axis)
            )
    for expected in expected_cells(sweep) or []:
        if expected not in seen:
            cells.append(Cell("pending", " ".join(sorted(expected)), "not started"))
    return cells


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_status(sweep: Path, cells: list[Cell], show_all: bool) -> str:
    counts = Counter(c.status for c in cells)
    lines = [f"{sweep}: {len(cells)} cells: " + ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s])]
    for c in sorted(cells, key=lambda c: (ORDER.index(c.status), c.path)):
        if show_all or c.status != "done":
            lines.append(f"  {c.status:<9} {c.path}  {c.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a sweep dir, e.g. multirun/NAME")
    parser.add_argument("--all", action="store_true", help="list done cells too")
    parser.add_argument("--json", action="store_true", help="one JSON object: counts and cells")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        print(f"error: {args.sweep} is not a directory: pass a sweep dir such as multirun/NAME", file=sys.stderr)
        return 2
    cells = sweep_status(args.sweep)
    if args.json:
        counts = Counter(c.status for c in cells)
        print(
            json.dumps(
                {
                    "sweep": str(args.sweep),
                    "counts": {s: counts[s] for s in ORDER},
                    "cells": [asdict(c) for c in cells],
                },
                indent=1,
            )
        )
    else:
        print(format_status(args.sweep, cells, args.all))
    return 0 if cells and all(c.status == "done" for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
