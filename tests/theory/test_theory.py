"""Tests of the theory simulations: closed forms, the default configs' claims, the entry point.

.venv/bin/python -m pytest tests/theory -x -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from overtraining.theory import diagonal, linear
from overtraining.theory.__main__ import run_diagonal, run_linear
from overtraining.theory.config import DiagonalSimConfig, LinearSimConfig, Schedule, register_configs

ROOT = Path(__file__).resolve().parents[2]


def compose_sim(*overrides: str):
    """The ``sim`` dataclass that ``python -m overtraining.theory <overrides>`` would run."""
    register_configs()
    GlobalHydra.instance().clear()  # another test may have left Hydra initialised
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="theory", overrides=list(overrides))).sim


# ---------------------------------------------------------------- config


def test_every_sim_option_composes_to_its_schema():
    assert isinstance(compose_sim(), LinearSimConfig)  # the default
    assert isinstance(compose_sim("sim=linear"), LinearSimConfig)
    sim = compose_sim("sim=diagonal", "sim.schedules=[wsd,constant]")
    assert isinstance(sim, DiagonalSimConfig)
    assert sim.schedules == [Schedule.wsd, Schedule.constant]


@pytest.mark.parametrize(
    "overrides",
    [["sim.perturb_scal=0.1"], ["sim=diagonal", "sim.schedules=[constant,cosine]"], ["sim=diagonal", "sim.dim=big"]],
)
def test_typos_fail_at_compose_time(overrides):
    with pytest.raises(ConfigCompositionException):
        compose_sim(*overrides)


# ---------------------------------------------------------------- linear: closed forms


def test_expected_perturbed_loss_matches_monte_carlo():
    rng = np.random.default_rng(0)
    w1, w2, a = rng.standard_normal((3, 4)), rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    exact = linear.expected_perturbed_loss(w1, w2, a, 0.3)
    sampled = linear.sampled_perturbed_loss(w1, w2, a, 0.3, 20_000, rng)
    assert sampled == pytest.approx(exact, rel=0.01)
    assert linear.expected_perturbed_loss(w1, w2, a, 0.0) == pytest.approx(linear.loss(w1, w2, a))


def test_gd_step_follows_the_numerical_gradient():
    rng = np.random.default_rng(1)
    w1, w2, a = rng.standard_normal((3, 4)), rng.standard_normal((4, 3)), rng.standard_normal((4, 4))
    new1, _ = linear.gd_step(w1, w2, a, lr=1.0)
    eps, num = 1e-6, np.zeros_like(w1)
    for idx in np.ndindex(w1.shape):
        bump = np.zeros_like(w1)
        bump[idx] = eps
        num[idx] = (linear.loss(w1 + bump, w2, a) - linear.loss(w1 - bump, w2, a)) / (2 * eps)
    np.testing.assert_allclose(w1 - new1, num, rtol=1e-5, atol=1e-7)


def test_misaligned_target_has_the_requested_angle_and_norm():
    a = linear.make_target(8, 5, 2.0, 0.5, np.random.default_rng(2)).matrix
    b = linear.misaligned_target(a, 60.0, np.random.default_rng(3))
    assert np.linalg.norm(b) == pytest.approx(np.linalg.norm(a))
    assert np.sum(a * b) / np.sum(a * a) == pytest.approx(0.5)


def test_target_has_the_geometric_spectrum():
    t = linear.make_target(6, 4, 3.0, 0.5, np.random.default_rng(4))
    np.testing.assert_allclose(np.linalg.svd(t.matrix, compute_uv=False)[:4], [3.0, 1.5, 0.75, 0.375])
    np.testing.assert_allclose(np.einsum("ik,ij,jk->k", t.left, t.matrix, t.right), t.singular_values)


# ---------------------------------------------------------------- linear: the default run


@pytest.fixture(scope="module")
def linear_default(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear")
    summary = run_linear(compose_sim("sim=linear"), out, figures=False)
    return summary, pd.read_csv(out / "linear_checkpoints.csv")


def test_directions_are_learned_largest_first(linear_default):
    summary, _ = linear_default
    t = np.array(summary["time_to_learn"])
    assert (t > 0).all() and (np.diff(t) > 0).all(), t  # every direction learned, in order of size
    assert t[-1] > 50 * t[0]  # saddle-to-saddle: the smallest direction comes much later
    assert summary["max_relative_error_final"] < 0.01


def test_sensitivity_grows_and_perturbed_loss_is_u_shaped(linear_default):
    summary, table = linear_default
    sens = table.sensitivity[table.n_learned >= 1].to_numpy()
    assert (np.diff(sens) >= -1e-9).all() and sens[-1] > 1.5 * sens[0]  # progressive sensitivity
    i = summary["u_shape_min_index"]
    assert 0 < i < len(table) - 1  # interior minimum
    assert 0 < summary["u_shape_min_n_learned"] < table.n_learned.max()
    assert summary["perturbed_loss_final"] > 1.05 * summary["perturbed_loss_min"]
    assert summary["perturbed_loss_first"] > 1.05 * summary["perturbed_loss_min"]
    assert (table.perturbed_loss_mc - table.perturbed_loss).abs().max() < 0.05  # 128 draws vs exact


def test_forgetting_grows_with_pretraining(linear_default):
    summary, table = linear_default
    forget = table.forgetting[table.n_learned >= 1].to_numpy()
    assert (np.diff(forget) >= -1e-9).all()
    assert summary["forgetting_final"] > 0 > summary["forgetting_first_learned"]
    # fine-tuning itself succeeds better on later checkpoints: the degradation is not a failure to adapt
    assert table.finetune_loss_after.iloc[-1] < table.finetune_loss_after.iloc[len(table) // 2]


# ---------------------------------------------------------------- diagonal: closed forms


def test_wsd_step_sizes():
    np.testing.assert_allclose(diagonal.step_sizes(Schedule.constant, 0.1, 4, 0.5), [0.1] * 4)
    np.testing.assert_allclose(diagonal.step_sizes(Schedule.wsd, 0.1, 6, 0.5), [0.1, 0.1, 0.1, 0.1, 0.2 / 3, 0.1 / 3])


def test_sharpness_is_the_hessian_trace():
    rng = np.random.default_rng(5)
    u, v, a = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    theta, eps = np.concatenate([u, v]), 1e-4

    def f(th):
        return diagonal.pretrain_loss(th[:4], th[4:], a)

    trace = sum((f(theta + eps * e) - 2 * f(theta) + f(theta - eps * e)) / eps**2 for e in np.eye(8))
    assert diagonal.sharpness(u, v) == pytest.approx(trace, rel=1e-4)


def test_least_forgetting_is_the_projection():
    tasks = diagonal.make_tasks(2, 12, 3, 1.0, 0.5, 3, 1, 5, np.random.default_rng(6))
    best = tasks.w_pre + np.einsum(
        "rdn,rn->rd", np.linalg.pinv(tasks.x_ft), tasks.y_ft - np.einsum("rnd,rd->rn", tasks.x_ft, tasks.w_pre)
    )
    np.testing.assert_allclose(np.einsum("rnd,rd->rn", tasks.x_ft, best), tasks.y_ft, atol=1e-9)
    np.testing.assert_allclose(diagonal.least_forgetting(tasks), 0.5 * np.sum((best - tasks.w_pre) ** 2, axis=1))
    assert (diagonal.least_forgetting(tasks) <= 0.5 * np.sum((tasks.w_ft - tasks.w_pre) ** 2, axis=1)).all()


# ---------------------------------------------------------------- diagonal: the default run


@pytest.fixture(scope="module")
def diagonal_default(tmp_path_factory):
    sim = compose_sim("sim=diagonal", "sim.finetune_lrs=[0.005,0.025]")  # the default's smallest and largest
    return sim, run_diagonal(sim, tmp_path_factory.mktemp("diagonal"), figures=False)


def test_small_and_large_steps_reach_the_same_loss_and_forget_differently(diagonal_default):
    sim, summary = diagonal_default
    assert summary["all_converged"]
    for s in ("constant", "wsd"):
        res = summary[f"finetune_step_{s}"]
        for tag in ("small", "large"):
            assert sim.target_loss / 3 < res[f"finetune_loss_{tag}"] < sim.target_loss  # same loss
        # Rofin et al.: the small step forgets less; the large one is sparser and flatter.
        assert res["forgetting_small"] < res["forgetting_large"] - 0.1
        assert res["replicas_small_lr_forgets_less"] >= 6  # of 8
        assert res["support_large"] < res["support_small"] - 2
        assert res["sharpness_after_large"] < res["sharpness_after_small"]
        assert res["solution_gap"] > 0.1


def test_decayed_pretraining_is_sharper_and_forgets_more(diagonal_default):
    _, summary = diagonal_default
    res = summary["schedule_constant_vs_wsd"]
    assert res["pretrain_loss"][1] < 0.5 * res["pretrain_loss"][0]  # decay lowers the pretraining loss
    assert res["sharpness"][1] > res["sharpness"][0]  # ... and sharpens the model
    for lr in ("0.005", "0.025"):
        assert res[f"forgetting_{lr}"][1] > res[f"forgetting_{lr}"][0] + 0.1
        assert res[f"replicas_last_forgets_more_{lr}"] >= 6
        gain_before = res["pretrain_loss"][0] - res["pretrain_loss"][1]
        gain_after = res[f"pretrain_loss_after_{lr}"][0] - res[f"pretrain_loss_after_{lr}"][1]
        assert gain_after < 0.5 * gain_before  # most of the decay's gain is lost to fine-tuning


# ---------------------------------------------------------------- entry point


def run_entry_point(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    cmd = [sys.executable, "-m", "overtraining.theory", f"hydra.run.dir={out}", *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sim", "overrides", "files"),
    [
        (
            "linear",
            ["sim.dim=6", "sim.hidden=6", "sim.rank=4", "sim.steps=400", "sim.n_checkpoints=8"],
            [
                "linear_checkpoints.csv",
                "linear_directions.csv",
                "linear_learning.png",
                "linear_perturbation.png",
                "linear_finetuning.png",
            ],
        ),
        (
            "diagonal",
            [
                "sim.replicas=2",
                "sim.dim=20",
                "sim.pretrain_support=3",
                "sim.finetune_support=3",
                "sim.finetune_overlap=1",
                "sim.finetune_samples=10",
                "sim.pretrain_steps=200",
                "sim.finetune_lrs=[0.01,0.02]",
                "sim.target_loss=0.05",
                "sim.max_finetune_steps=3000",
            ],
            ["diagonal_runs.csv", "diagonal_forgetting.png", "diagonal_sharpness.png"],
        ),
    ],
)
def test_entry_point_writes_results(tmp_path, sim, overrides, files):
    res = run_entry_point(tmp_path, f"sim={sim}", *overrides)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in [*files, f"{sim}_summary.json", ".hydra/config.yaml"]:
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / f"{sim}_summary.json").read_text())
    assert summary["config"]["dim"] in (6, 20) and summary["git_sha"]
