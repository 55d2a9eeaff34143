"""The real CLI multirun over every mitigation on a tiny embedded model, then the report's frontier."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from overtraining.results import load_records
from tests.launch.conftest import TINY_PRETRAIN, run_cell

pytestmark = pytest.mark.integration

SWEEP = [
    *TINY_PRETRAIN,
    "pretrain.budgets=[100K]",
    "checkpoint=embedded/tokens_100K",
    "mitigation=none,l2,ewc,replay,sam,wise",
    "mitigation.alphas=[0,0.5,1]",
    "lr=3e-3",
    "trainer.max_steps=4",
    "trainer.probe_every=0",
    "trainer.checkpoint_every=0",
    "sft_data.num_train=32",
    "sft_data.num_heldout=4",
    "eval=quick",
    "eval.limit=8",
    "eval.id_max_examples=4",
    "eval.id_max_new_tokens=8",
    "eval.format_probe=false",
    "eval.ppl_max_tokens=2048",
    "sharpness=none",
    "logger=none",
    "sweep_name=mit",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("mitigations")
    out = run_cell("-m", *SWEEP, cwd=work, cache=work / "cache", timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work / "multirun" / "mit"


def test_every_mitigation_ran_and_recorded_its_numbers(sweep):
    records = {r.config["mitigation"]["name"]: r for r in load_records(sweep)}
    assert sorted(records) == ["ewc", "l2", "none", "replay", "sam", "wise"]
    for name, r in records.items():
        assert r.status == "completed", (name, r.notes)
        assert r.metrics["sft/steps"] == 4 and math.isfinite(r.metrics["forget/ppl/ood_prose/loss"])
    replay = records["replay"]
    assert abs(replay.metrics["sft/replay_token_fraction"] - 0.05) < 0.005
    assert all(0 < row["replay_loss"] < 6 for row in replay.curves["sft"])
    for name in ("l2", "ewc"):
        pens = [row["penalty"] for row in records[name].curves["sft"]]
        assert pens[0] == 0.0 and pens[-1] > 0  # theta = theta_base before the first update
    assert "EWC Fisher: computed" in records["ewc"].notes
    wise, none = records["wise"].metrics, records["none"].metrics
    assert wise["wise/alpha=1/ft/ppl/ood_prose/loss"] == wise["ft/ppl/ood_prose/loss"]
    assert wise["wise/alpha=0/forget/ppl/ood_prose/loss"] == 0.0
    assert math.isfinite(wise["wise/alpha=0.5/ft/id/loss"])
    # plain SFT and the wise cell's own SFT are the same run (same seed, CPU, fp32)
    assert wise["ft/ppl/ood_prose/loss"] == none["ft/ppl/ood_prose/loss"]
    assert records["sam"].metrics["ft/ppl/ood_prose/loss"] != none["ft/ppl/ood_prose/loss"]


def test_report_draws_the_frontier(sweep, tmp_path):
    import pandas as pd

    from overtraining.report import build_report

    html = build_report([sweep], tmp_path / "report", n_boot=10)
    assert (tmp_path / "report" / "mitigation_frontier.png").exists()
    cells = pd.read_csv(tmp_path / "report" / "cells.csv")
    assert sorted(cells["mitigation"]) == ["ewc 0.01", "l2 0.01", "none", "replay 0.05", "sam 0.05", "wise"]
    groups = pd.read_csv(tmp_path / "report" / "groups.csv")
    assert sorted(groups["mitigation"]) == sorted(cells["mitigation"])  # one replica group per mitigation
    findings = pd.read_csv(tmp_path / "report" / "findings.csv")
    removes = findings.loc[findings["effect"].str.contains("removes the U-shape"), "effect"]
    assert sorted(e.split(" removes")[0] for e in removes) == [
        "ewc 0.01",
        "l2 0.01",
        "replay 0.05",
        "sam 0.05",
        "wise alpha=0.5",  # alpha 0 is the base model, alpha 1 plain SFT
    ]
    same_lr = findings.loc[findings["effect"].str.endswith("forgets less than plain SFT (same LR)"), "effect"]
    assert len(same_lr) == 5  # l2, ewc, replay, sam, wise (its interior alpha)
    page = html.read_text()
    assert "Learning-forgetting frontier per mitigation" in page and "ewc 0.01" in page
