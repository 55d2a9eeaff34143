"""Shared fixtures: a tiny model recipe, an isolated cache, offline W&B."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# A recipe small enough for tests: ~30K parameters, 256 tokens per step.
TINY_PRETRAIN = [
    "pretrain.model.hidden_size=32",
    "pretrain.model.num_layers=2",
    "pretrain.model.intermediate_size=64",
    "pretrain.batch_size=4",
    "pretrain.seq_len=64",
]


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """A cache dir holding the embedded corpus (built once per test session)."""
    from overtraining.data.corpus import build_embedded_corpus

    cache = tmp_path_factory.mktemp("cache")
    build_embedded_corpus(cache)
    return cache


def run_module(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Runs ``python -m module args`` and returns the CompletedProcess (text)."""
    import subprocess

    full_env = os.environ | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
