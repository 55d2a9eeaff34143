"""The fault test: kill -9 a sweep in the middle of a cell's SFT, re-run it, get every cell once.

What must hold after the re-run (README "Sweeps are idempotent"): every cell has exactly one
complete record; the cell that was killed resumed from its SFT state (its record says so and
its SFT still took the configured number of steps, each once); the cell finished before the
kill was skipped, not re-run; no temporary or partial record is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from overtraining.results import read_record
from tests.launch.conftest import TINY_CELL, cell_env, run_cell

STEPS, EVERY = 40, 5
LRS = ["1e-3", "2e-3", "3e-3", "4e-3"]
SWEEP = [
    "-m",
    *TINY_CELL,
    f"trainer.max_steps={STEPS}",
    f"trainer.checkpoint_every={EVERY}",
    f"lr={','.join(LRS)}",
    "sweep_name=fault",
]


def _interrupted(sweep: Path) -> Path | None:
    """A cell dir with SFT state and no record, once at least one other cell has its record."""
    if not list(sweep.rglob("record.json")):
        return None
    for state in sweep.rglob("sft/sft_state.pt"):
        if not (state.parent.parent / "record.json").exists():
            return state.parent.parent
    return None


def _kill_mid_sft(cwd: Path, cache: Path, sweep: Path, timeout: float = 150) -> Path:
    """Starts the sweep in its own process group and kill -9s the group mid-SFT of its 2nd cell."""
    cmd = [sys.executable, "-m", "overtraining.run", *SWEEP]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=cell_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            victim = _interrupted(sweep)
            if victim is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return victim
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pytest.fail(f"no cell was caught mid-SFT (sweep exit {proc.returncode}); the cells may be too fast")


@pytest.mark.integration
def test_killed_sweep_resumes_and_completes_each_cell_once(tmp_path: Path, tiny_cache: Path) -> None:
    sweep = tmp_path / "multirun" / "fault"
    victim = _kill_mid_sft(tmp_path, tiny_cache, sweep)
    assert not (victim / "record.json").exists()
    saved = torch.load(victim / "sft" / "sft_state.pt", map_location="cpu", weights_only=False)
    killed_at = saved["progress"]["step"]
    assert 0 < killed_at < STEPS and killed_at % EVERY == 0
    (done_before,) = list(sweep.rglob("record.json"))
    before = done_before.read_bytes()

    out = run_cell(*SWEEP, cwd=tmp_path, cache=tiny_cache)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    records = sorted(sweep.rglob("record.json"))
    assert len(records) == len(LRS)
    assert len({p.parent for p in records}) == len(LRS)  # one record per cell dir
    assert not [p for p in sweep.rglob("*.tmp*")]  # no partial record or state left
    assert done_before.read_bytes() == before  # the finished cell was skipped
    assert "skip: cell" in out.stdout
    for path in records:
        rec = read_record(path)
        assert rec.status == "completed", (path, rec.notes)
        assert rec.metrics["sft/steps"] == STEPS
        assert [row["step"] for row in rec.curves["sft"]] == list(range(1, STEPS + 1))
        if path.parent == victim:
            assert rec.metrics["sft/resumed_from"] == killed_at
            assert f"SFT resumed from step {killed_at}" in rec.notes
        else:
            assert not rec.metrics["sft/resumed_from"]

    again = run_cell(*SWEEP, "launch.dry_run=true", cwd=tmp_path, cache=tiny_cache)
    assert again.returncode == 0 and "would run cell" not in again.stdout  # nothing left to do
