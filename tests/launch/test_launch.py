"""Dry run of a sweep, and one cell on 2 CPU processes (torchrun + DeepSpeed ZeRO-2 over gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overtraining.results import read_record
from tests.launch.conftest import TINY_CELL, run_cell


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
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")
    out = run_cell(
        *TINY_CELL,
        "trainer=deepspeed_zero2",
        "trainer.device=cpu",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        cache=tiny_cache,
        prefix=torchrun,
        timeout=400,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    record = read_record(run_dir / "record.json")
    assert record.status == "completed" and record.metrics["sft/steps"] == 10
    assert [p.relative_to(run_dir) for p in run_dir.rglob("record.json")] == [Path("record.json")]
