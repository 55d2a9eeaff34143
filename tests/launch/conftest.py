"""Fixtures for the launcher tests: tiny cell overrides and a cache with the tiny trajectory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_PRETRAIN

# A cell of a few seconds: the tiny recipe, one 250K-token checkpoint, no eval, no geometry.
TINY_CELL = [
    *TINY_PRETRAIN,
    "pretrain.budgets=[250K]",
    "checkpoint=embedded/tokens_250K",
    "eval=none",
    "sharpness=none",
    "logger=none",
    "trainer.max_steps=10",
]


def cell_env(cache: Path) -> dict[str, str]:
    """The environment of a cell subprocess: the repo importable, the given cache, W&B off.

    One torch thread: on 2 shared cores, torch's default thread per core makes a tiny cell
    10-40x slower as soon as another process competes for the cores.
    """
    return os.environ | {
        "PYTHONPATH": str(ROOT),
        "OVERTRAINING_CACHE": str(cache),
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }


def run_cell(*args: str, cwd: Path, cache: Path, timeout: int = 300, prefix: tuple[str, ...] = ("-m",)):
    """``python -m overtraining.run args`` (``prefix`` replaces ``-m`` for torchrun); returns the result."""
    cmd = [sys.executable, *prefix, "overtraining.run", *args]
    return subprocess.run(cmd, cwd=cwd, env=cell_env(cache), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache holding the tiny embedded trajectory, pretrained once by a first tiny cell."""
    cache = tmp_path_factory.mktemp("launch-cache")
    out = run_cell(*TINY_CELL, f"hydra.run.dir={cache / 'warmup'}", cwd=cache, cache=cache)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (cache / "warmup" / "record.json").exists()
    return cache
