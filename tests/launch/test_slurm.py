"""A real sweep through Slurm: launch/slurm-local.sh, then a 2-cell array job via hydra/launcher=slurm_local."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from overtraining.results import read_record
from tests.conftest import ROOT
from tests.launch.conftest import TINY_CELL, run_cell

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
