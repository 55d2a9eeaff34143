"""A probe-only cell with the quantization probe through the real CLI, on a SAM-pretrained tiny model."""

from __future__ import annotations

import json
import math

import pytest

from tests.conftest import TINY_PRETRAIN
from tests.launch.conftest import run_cell

pytestmark = pytest.mark.integration


def test_probe_only_cell_measures_quantization_beside_noise(tmp_path):
    args = [
        *TINY_PRETRAIN,
        "pretrain.budgets=[25K]",
        "pretrain.optimizer=sam",
        "checkpoint=embedded/tokens_25K",
        "trainer.max_steps=0",
        "eval=none",
        "logger=none",
        "sharpness.estimators=[perturbation,quantization]",
        "sharpness.quant_bits=[8,4,3]",
        "sharpness.quant_group_size=16",
        "sharpness.perturb_gammas=[0.2]",
        "sharpness.perturb_seeds=1",
        "sharpness.num_batches=1",
        "sharpness.drift_layers=[]",
        "sharpness.landscape_alphas=[]",
        f"hydra.run.dir={tmp_path / 'cell'}",
    ]
    out = run_cell(*args, cwd=tmp_path, cache=tmp_path / "cache", timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    record = json.loads((tmp_path / "cell" / "record.json").read_text())
    m = record["metrics"]
    assert record["status"] == "completed" and record["config"]["pretrain_schedule"] == "constant+sam"
    assert (tmp_path / "cache" / "trajectories" / "embedded-sam" / "tokens_25K" / "checkpoint.json").exists()
    assert m["base/quant/base_loss"] == pytest.approx(m["base/perturb/base_loss"])  # same batches, same model
    errs = [m[f"base/quant/bits={b}/weight_rel_error"] for b in (8, 4, 3)]
    assert 0 < errs[0] < 0.02 < errs[1] < errs[2] < 1
    for b in (8, 4, 3):
        loss, delta = m[f"base/quant/bits={b}/loss"], m[f"base/quant/bits={b}/delta_loss"]
        assert math.isfinite(loss) and delta == pytest.approx(loss - m["base/quant/base_loss"])
    assert abs(m["base/quant/bits=8/delta_loss"]) < m["base/quant/bits=3/delta_loss"]  # coarser grid, larger rise
    assert m["base/perturb/gamma=0.2/delta_loss_mean"] > 0
