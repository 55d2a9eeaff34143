"""Dry run of a sweep; one cell on 2 CPU processes (torchrun + DeepSpeed ZeRO-2 over gloo), killed and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from overtraining.results import read_record
from tests.launch.conftest import TINY_CELL, cell_env, run_cell

TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")


@pytest.mark.integration
def test_dry_run_lists_cells_and_runs_none(tmp_path: Path) -> None:
    cache = tmp_path / "cache"  # empty: a real run would pretrain the trajectory into it
    out = run_cell(
        "-m",
        *TINY_CELL,
        "lr=1e-3,3e-3",
        "sweep_name=dry",
        "launch.dry_run=true",
        cwd=tmp_path,
        cache=cache,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    would = [line for line in out.stdout.splitlines() if line.startswith("would run cell")]
    assert len(would) == 2 and any("lr=0.001" in w for w in would) and any("lr=0.003" in w for w in would)
    sweep = tmp_path / "multirun" / "dry"
    assert not list(sweep.rglob("record.json")) and not list(sweep.rglob("sft"))
    assert not (cache / "trajectories").exists()


@pytest.mark.integration
def test_two_process_deepspeed_cell_rank0_writes_the_record(tmp_path: Path, tiny_cache: Path) -> None:
    run_dir = tmp_path / "ds"
    out = run_cell(
        *TINY_CELL,
        "trainer=deepspeed_zero2",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        cache=tiny_cache,
        prefix=TORCHRUN,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    record = read_record(run_dir / "record.json")
    assert record.status == "completed" and record.metrics["sft/steps"] == 10
    assert [p.relative_to(run_dir) for p in run_dir.rglob("record.json")] == [Path("record.json")]


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.integration
def test_killed_two_process_deepspeed_cell_resumes_from_its_sharded_state(tmp_path: Path, tiny_cache: Path) -> None:
    """kill -9 torchrun and its workers mid-SFT; the re-run resumes both ranks from sft/sft_state_ds.

    torchrun starts each worker in a session of its own, so killing torchrun's process group
    leaves the workers running (Slurm kills them all; a test must kill them by pid).
    """
    run_dir, steps, every = tmp_path / "ds", 60, 10
    args = [
        *TINY_CELL,
        "trainer=deepspeed_zero2",
        "trainer.device=cpu",
        f"trainer.max_steps={steps}",
        f"trainer.checkpoint_every={every}",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "overtraining.run",
        *args,
    ]
    first = subprocess.Popen(
        cmd, cwd=tmp_path, env=cell_env(tiny_cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    latest = run_dir / "sft" / "sft_state_ds" / "latest"
    deadline = time.time() + 240
    while not latest.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    workers = _children(first.pid)
    for pid in [*workers, first.pid]:
        os.kill(pid, signal.SIGKILL)
    first.wait()
    assert latest.exists() and len(workers) == 2 and not (run_dir / "record.json").exists()

    out = run_cell(*args, cwd=tmp_path, cache=tiny_cache, prefix=TORCHRUN, timeout=400)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    rec = read_record(run_dir / "record.json")
    assert rec.status == "completed" and rec.metrics["sft/steps"] == steps
    resumed = rec.metrics["sft/resumed_from"]
    assert resumed and resumed % every == 0 and f"SFT resumed from step {resumed}" in rec.notes
    assert [row["step"] for row in rec.curves["sft"]] == list(range(1, steps + 1))
