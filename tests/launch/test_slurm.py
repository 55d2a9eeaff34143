"""Real sweeps through Slurm (launch/slurm-local.sh): a 2-cell array job, and a preempted cell that requeues."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overtraining.results import read_record
from tests.conftest import ROOT
from tests.launch.conftest import TINY_CELL, cell_env, run_cell

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    """The one-node cluster of launch/slurm-local.sh (skips only where it cannot be set up here)."""
    have_slurm = shutil.which("sbatch") and shutil.which("slurmctld")
    if not have_slurm and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip("no Slurm here, and installing it needs root and apt-get (launch/slurm-local.sh)")
    if os.geteuid() != 0 and subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        pytest.skip("Slurm is installed but not running, and starting it needs root (sudo launch/slurm-local.sh)")
    if os.geteuid() == 0:
        out = subprocess.run([str(ROOT / "launch" / "slurm-local.sh")], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr


def test_two_cell_array_sweep(slurm_cluster, tmp_path: Path, tiny_cache: Path) -> None:
    out = run_cell(
        "-m",
        *TINY_CELL,
        "lr=1e-3,3e-3",
        "sweep_name=slurm",
        "hydra/launcher=slurm_local",
        "hydra.launcher.timeout_min=10",
        cwd=tmp_path,
        cache=tiny_cache,
        timeout=240,
    )
    sweep = tmp_path / "multirun" / "slurm"
    logs = "\n".join(p.read_text()[-2000:] for p in sweep.glob(".submitit/*/*log.out"))
    assert out.returncode == 0, out.stderr[-3000:] + logs
    (script,) = list(sweep.glob(".submitit/*/*_submission.sh"))  # ONE sbatch for the sweep
    assert "#SBATCH --array=0-1%2" in script.read_text() and "#SBATCH --partition=local" in script.read_text()
    records = sorted(sweep.rglob("record.json"))
    assert len(records) == 2, logs
    lrs = []
    for path in records:
        rec = read_record(path)
        assert rec.status == "completed" and rec.metrics["sft/steps"] == 10, rec.notes
        assert f"lr={rec.lr}" in str(path.parent)  # each record in its own cell's dir
        lrs.append(rec.lr)
    assert sorted(lrs) == [1e-3, 3e-3]


def _squeue(name: str) -> list[tuple[str, str]]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %t"], capture_output=True, text=True).stdout
    return [tuple(line.split()) for line in out.splitlines() if line.strip()]


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_preempted_cell_is_requeued_and_resumes_its_sft(slurm_cluster, tmp_path: Path, tiny_cache: Path) -> None:
    """USR2 (what Slurm sends before a timeout or preemption) -> checkpoint() -> requeue -> SFT resumes."""
    name, steps, every = f"ot-requeue-{os.getpid()}", 600, 20  # still running at the signal
    cmd = [
        sys.executable,
        "-m",
        "overtraining.run",
        "-m",
        *TINY_CELL,
        f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every={every}",
        "sweep_name=requeue",
        "hydra/launcher=slurm_local",
        f"hydra.launcher.name={name}",
    ]
    launcher = subprocess.Popen(
        cmd, cwd=tmp_path, env=cell_env(tiny_cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sweep = tmp_path / "multirun" / "requeue"
    try:
        state = _wait_for(lambda: next(sweep.rglob("sft/sft_state.pt"), None), 120, "the first SFT state")
        ((job, _),) = _squeue(name)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _wait_for(lambda: [s for _, s in _squeue(name) if s == "PD"], 60, "the requeued job to be pending")
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip Slurm's ~2 min hold
        assert launcher.wait(timeout=150) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for job, _ in _squeue(name):
            subprocess.run(["scancel", job])
    rec = read_record(state.parent.parent / "record.json")
    logs = "\n".join(p.read_text() for p in sweep.glob(".submitit/*/*log.out"))
    assert "Requeued job" in logs
    assert rec.status == "completed" and rec.metrics["sft/steps"] == steps
    resumed = rec.metrics["sft/resumed_from"]
    assert resumed and resumed % every == 0 and f"SFT resumed from step {resumed}" in rec.notes
    assert [row["step"] for row in rec.curves["sft"]] == list(range(1, steps + 1))
