"""A real multirun sweep on the embedded default (2 checkpoints x 2 LRs), then the real report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from overtraining.results import load_records
from tests.launch.conftest import TINY_PRETRAIN, run_cell

pytestmark = pytest.mark.integration

SWEEP = [
    *TINY_PRETRAIN,
    "pretrain.budgets=[250K,500K]",
    "checkpoint=embedded/tokens_250K,embedded/tokens_500K",
    "lr=1e-3,3e-3",
    "trainer.max_steps=12",
    "trainer.probe_every=6",
    "sft_data.num_train=200",
    "sft_data.num_heldout=20",
    "eval.limit=40",
    "eval.id_max_examples=4",
    "eval.format_probe_prompts=2",
    "sharpness.perturb_seeds=2",
    "sharpness.num_batches=2",
    "sweep_name=itest",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Runs the sweep once (W&B offline) and returns its directory."""
    work = tmp_path_factory.mktemp("sweep")
    out = run_cell(
        "-m", *SWEEP, "logger.mode=offline", f"logger.dir={work / 'wandb'}", cwd=work, cache=work / "cache", timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work / "multirun" / "itest"


def test_every_cell_has_one_complete_record(sweep):
    records = load_records(sweep)
    assert len(records) == 4
    assert {(r.checkpoint, r.lr) for r in records} == {
        (f"embedded/tokens_{b}", lr) for b in ("250K", "500K") for lr in (1e-3, 3e-3)
    }
    for r in records:
        assert r.status == "completed", r.notes
        assert r.tokens in (250_112, 500_224)  # exact: ceil(budget / 512) steps x 512 tokens
        assert r.metrics["sft/steps"] == 12
        losses = [row["loss"] for row in r.curves["sft"]]
        assert losses[-1] < losses[0]  # SFT learns the task
        assert 0.0 <= r.metrics["ft/ood/embedded_prose_cloze/acc"] <= 1.0
        assert math.isfinite(r.metrics["forget/ppl/ood_prose/loss"])
        assert r.metrics["base/perturb/gamma=0.2/delta_loss_mean"] > 0  # noise hurts the base model
        assert r.metrics["base/sharpness/kl"] > 0
        assert 0.0 <= r.metrics["drift/mpa_mean"] <= math.pi / 2
        assert [p["step"] for p in r.curves["probes"]][-1] == 12
        assert r.config["checkpoint"]["revision"] in r.checkpoint


def test_base_evaluation_is_paid_once_per_checkpoint(sweep):
    notes = [n for r in load_records(sweep) for n in r.notes if n.startswith("base evaluation")]
    assert sorted(notes).count("base evaluation: computed") == 2  # N checkpoints, not N x M cells
    assert sorted(notes).count("base evaluation: cache hit") == 2


def test_rerun_skips_finished_cells(sweep):
    work = sweep.parent.parent
    before = {p: p.stat().st_mtime_ns for p in sweep.rglob("record.json")}
    out = run_cell("-m", *SWEEP, "logger.mode=disabled", cwd=work, cache=work / "cache", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("skip: cell") == 4
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("record.json")} == before


def test_report_from_the_real_sweep(sweep, tmp_path):
    from overtraining.report import build_report

    html = build_report([sweep], tmp_path / "report")
    assert html.exists() and html.stat().st_size > 10_000
    for name in (
        "ood_vs_tokens.png",
        "forgetting_vs_tokens.png",
        "sensitivity_vs_tokens.png",
        "sharpness_vs_tokens.png",
        "ood_vs_sft_loss.png",
        "pareto.png",
        "drift.png",
        "landscape.png",
    ):
        assert (tmp_path / "report" / name).exists(), name
    assert (tmp_path / "report" / "cells.csv").read_text().count("\n") == 5  # header + 4 cells
    page = html.read_text()
    assert "data:image/png;base64," in page
    # the effect verdicts, with the sweep's own numbers; 2 budgets are too few for a verdict
    assert "Progressive sensitivity (noise gamma = 0.2) cannot be judged (3 budgets needed)" in page
    assert "The U-shape of fine-tuned OOD prose loss (LR 1e-3) cannot be judged: 2 budget(s), 3 needed" in page


def test_wandb_offline_runs_hold_the_metrics(sweep):
    runs = sorted((sweep.parent.parent / "wandb").rglob("run-*.wandb"))
    assert len(runs) == 4
    blob = runs[0].read_bytes()
    assert b"forget/ppl/ood_prose/loss" in blob and b"sft_loss" in blob
    summary = json.loads(next(sweep.rglob("record.json")).read_text())["metrics"]
    assert "ft/ppl/ood_prose/ppl" in summary
