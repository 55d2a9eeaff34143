"""launch/sweep_status.py on fake sweep dirs (records written by ``overtraining.results``)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from overtraining.results import CellRecord, write_record

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "launch" / "sweep_status.py"


def _load():
    spec = importlib.util.spec_from_file_location("sweep_status", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


status = _load()


def _cell(sweep: Path, overrides: list[str]) -> Path:
    run_dir = sweep / ",".join(sorted(overrides))
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return run_dir


def _record(run_dir: Path, state: str, note: str = "") -> None:
    write_record(
        CellRecord(
            cell_id="abc",
            status=state,
            checkpoint="embedded/tokens_250K",
            tokens=250_000,
            lr=1e-3,
            schedule="constant",
            sft_data="embedded_math",
            seed=0,
            notes=[note] if note else [],
        ),
        run_dir,
    )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 3 x 2 sweep: 2 done, 1 failed, 1 diverged, 1 running, 1 started; plus 1 pending cell."""
    sweep = tmp_path / "multirun" / "demo"
    lrs, ckpts = ["1e-3", "3e-3"], ["embedded/tokens_250K", "embedded/tokens_500K", "embedded/tokens_1M"]
    multirun = {
        "hydra": {"overrides": {"task": [f"checkpoint={','.join(ckpts)}", f"lr={','.join(lrs)}", "sweep_name=demo"]}}
    }
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    # job overrides as Hydra writes them (sweep values re-spelled: 1e-3 -> 0.001)
    cells = [[f"checkpoint={c}", f"lr={float(lr)}", "sweep_name=demo"] for c in ckpts for lr in lrs]
    dirs = [_cell(sweep, o) for o in cells[:5]]
    _record(dirs[0], "completed")
    _record(dirs[1], "target_reached")
    _record(dirs[2], "failed", "RuntimeError: boom")
    _record(dirs[3], "diverged", "SFT diverged at step 7")
    (dirs[4] / "sft").mkdir()
    (dirs[4] / "sft" / "sft_state.pt").write_bytes(b"state")
    (dirs[4] / "rank1" / "sft").mkdir(parents=True)  # a non-zero rank's dir is not a cell
    (sweep / ".submitit" / "12_0").mkdir(parents=True)
    return sweep


def test_counts_every_status(sweep: Path) -> None:
    cells = status.sweep_status(sweep)
    by = {s: [c for c in cells if c.status == s] for s in status.ORDER}
    assert {s: len(v) for s, v in by.items()} == {
        "done": 2,
        "running": 1,
        "started": 0,
        "pending": 1,
        "failed": 1,
        "diverged": 1,
    }
    assert "RuntimeError: boom" in by["failed"][0].detail
    assert "last SFT checkpoint" in by["running"][0].detail
    assert "checkpoint=embedded/tokens_1M" in by["pending"][0].path and "lr=0.003" in by["pending"][0].path


def test_started_cell_and_deepspeed_state(tmp_path: Path) -> None:
    started = _cell(tmp_path, ["lr=1e-3"])
    ds = _cell(tmp_path, ["lr=3e-3"])
    (ds / "sft" / "sft_state_ds").mkdir(parents=True)
    (ds / "sft" / "sft_state_ds" / "latest").write_text("step5")
    got = {Path(c.path).name: c.status for c in status.sweep_status(tmp_path)}
    assert got == {started.name: "started", ds.name: "running"}


def test_cli_text_json_and_exit_codes(sweep: Path, tmp_path: Path) -> None:
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), *map(str, a)], capture_output=True, text=True)
    out = run(sweep)
    assert out.returncode == 1, out.stderr
    assert out.stdout.splitlines()[0].endswith("6 cells: 2 done, 1 running, 1 pending, 1 failed, 1 diverged")
    assert "target_reached" not in out.stdout  # done cells are listed only with --all
    assert "target_reached" in run(sweep, "--all").stdout
    data = json.loads(run(sweep, "--json").stdout)
    assert data["counts"]["done"] == 2 and len(data["cells"]) == 6
    assert run(tmp_path / "missing").returncode == 2


def test_all_done_exits_zero(tmp_path: Path) -> None:
    _record(_cell(tmp_path, ["lr=1e-3"]), "completed")
    assert status.main([str(tmp_path)]) == 0
