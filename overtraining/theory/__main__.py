"""Theory simulations of catastrophic overtraining, seconds on a CPU.

    python -m overtraining.theory                        # sim=linear: Springer et al. 2025, sec. 4
    python -m overtraining.theory sim=diagonal           # Rofin, Varre, Flammarion 2026
    python -m overtraining.theory sim=linear sim.perturb_scale=0.12 hydra.run.dir=outputs/theory/lin
    python -m overtraining.theory -m sim=diagonal sim.seed=0,1,2 sim.pretrain_noise=1,2
    python -m overtraining.theory --cfg job sim=diagonal # print the composed config

Writes into the Hydra run dir (``outputs/theory/<date>/<time>``, ``multirun/theory/...``
with ``-m``): ``<sim>_*.csv`` (one row per checkpoint, direction or fine-tuning run),
``<sim>_summary.json`` (headline numbers, the config, the git SHA) and, unless
``figures=false``, ``<sim>_*.png``. The science lives in ``linear.py`` and ``diagonal.py``;
this file wires the config to it and writes the results.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import hydra
import matplotlib
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from overtraining.theory import diagonal, linear
from overtraining.theory.config import DiagonalSimConfig, LinearSimConfig, TheoryConfig, register_configs

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

log = logging.getLogger(__name__)
SUPPORT_TOL = 1e-2  # |w_i| above this counts as a used coordinate (init gives ~0)


def save(fig: plt.Figure, path: Path) -> None:
    """Writes ``fig`` as a PNG and frees it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_sha() -> str:
    """The checkout's HEAD commit, or ``unknown`` outside git / before the first commit."""
    res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def run_linear(sim: LinearSimConfig, out: Path, figures: bool) -> dict:
    """Pretrains the two-layer linear net, then perturbs and fine-tunes every checkpoint."""
    rng = np.random.default_rng(sim.seed)
    target = linear.make_target(sim.dim, sim.rank, sim.top_singular_value, sim.spectrum_ratio, rng)
    ft_target = linear.misaligned_target(target.matrix, sim.finetune_angle_deg, rng)
    save_at = linear.checkpoint_steps(sim.steps, sim.n_checkpoints)
    run = linear.pretrain(target, sim.hidden, sim.init_scale, sim.lr, sim.steps, save_at, rng)
    learned_at = linear.time_to_learn(run.strengths, target.singular_values, sim.learned_fraction)
    table = linear.measure_checkpoints(
        run,
        target,
        ft_target,
        learned_at,
        sim.perturb_scale,
        sim.perturb_samples,
        sim.finetune_lr,
        sim.finetune_steps,
        rng,
    )
    directions = pd.DataFrame(
        {
            "direction": np.arange(sim.rank),
            "singular_value": target.singular_values,
            "learned_value": run.strengths[-1],
            "time_to_learn": learned_at,
        }
    )
    table.to_csv(out / "linear_checkpoints.csv", index=False)
    directions.to_csv(out / "linear_directions.csv", index=False)
    if figures:
        plot_linear(table, directions, run.strengths, out)
    summary = linear.summarize(table, learned_at, run.strengths[-1], target)
    return summary | {"critical_singular_value": 2 * sim.perturb_scale**2 * sim.dim}


def plot_linear(table: pd.DataFrame, directions: pd.DataFrame, strengths: np.ndarray, out: Path) -> None:
    """Writes linear_learning.png, linear_perturbation.png and linear_finetuning.png."""
    fig, ax = plt.subplots(figsize=(6, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(directions)))
    for (_, d), c in zip(directions.iterrows(), colors, strict=True):
        frac = strengths[1:, int(d.direction)] / d.singular_value
        ax.plot(np.arange(1, len(strengths)), frac, color=c, label=f"s={d.singular_value:.3g}")
    ax.set(
        xscale="log",
        xlabel="pretraining step",
        ylabel="learned fraction  u_i' W v_i / s_i",
        title="Features are learned one at a time, largest first",
    )
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    save(fig, out / "linear_learning.png")

    x = table.step.clip(lower=0.5)  # step 0 drawn at 0.5 on the log axis
    i = int(table.perturbed_loss.idxmin())
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, table.sensitivity, "o-", label="exact expectation")
    a.plot(x, table.perturbed_loss_mc - table.pretrain_loss, "x", label="Monte Carlo")
    a.set(
        xscale="log",
        xlabel="pretraining step",
        ylabel="perturbed - clean pretraining loss",
        title="Progressive sensitivity",
    )
    a.legend()
    b.plot(x, table.pretrain_loss, "o-", label="clean")
    b.plot(x, table.perturbed_loss, "o-", label="after Gaussian perturbation")
    b.axvline(x[i], color="gray", ls=":", label=f"minimum ({table.n_learned[i]} features learned)")
    b.set(xscale="log", xlabel="pretraining step", ylabel="pretraining loss", title="Perturbed loss is U-shaped")
    b.legend(loc="center right")
    save(fig, out / "linear_perturbation.png")

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(x, table.pretrain_loss, "o-", label="before fine-tuning")
    a.plot(x, table.pretrain_loss_after_ft, "o-", label="after fine-tuning")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="pretraining step",
        ylabel="pretraining loss",
        title="Fine-tuning on a misaligned task",
    )
    a.legend()
    b.plot(table.n_learned, table.forgetting, "o")
    b.axhline(0, color="gray", lw=0.5)
    b.set(
        xlabel="features learned in pretraining",
        ylabel="forgetting (rise of pretraining loss)",
        title="Forgetting grows with pretraining",
    )
    save(fig, out / "linear_finetuning.png")


def run_diagonal(sim: DiagonalSimConfig, out: Path, figures: bool) -> dict:
    """Pretrains under each schedule, fine-tunes each model at each step size to one loss."""
    tasks = diagonal.make_tasks(
        sim.replicas,
        sim.dim,
        sim.pretrain_support,
        sim.pretrain_top,
        sim.pretrain_ratio,
        sim.finetune_support,
        sim.finetune_overlap,
        sim.finetune_samples,
        np.random.default_rng(sim.seed),
    )
    least = diagonal.least_forgetting(tasks)  # what any interpolator must forget
    overwrite = diagonal.pretrain_loss(tasks.w_ft, np.zeros_like(tasks.w_ft), tasks.w_pre)  # w = w_ft exactly
    rows, curves, solutions = [], {}, {}
    for schedule in sim.schedules:
        lrs = diagonal.step_sizes(schedule, sim.pretrain_lr, sim.pretrain_steps, sim.decay_fraction)
        # The same sample stream for every schedule and the same batches for every run.
        u, v = diagonal.pretrain(
            tasks.w_pre,
            lrs,
            sim.pretrain_noise,
            sim.pretrain_batch,
            sim.init_scale,
            np.random.default_rng([sim.seed, 1]),
        )
        before, sharp = diagonal.pretrain_loss(u, v, tasks.w_pre), diagonal.sharpness(u, v)
        for lr in sim.finetune_lrs:
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging replica turns NaN and stops
                ft = diagonal.finetune(
                    u,
                    v,
                    tasks,
                    lr,
                    sim.finetune_batch,
                    sim.target_loss,
                    sim.max_finetune_steps,
                    sim.log_every,
                    np.random.default_rng([sim.seed, 2]),
                )
                w, after = ft.u**2 - ft.v**2, diagonal.pretrain_loss(ft.u, ft.v, tasks.w_pre)
                sharp_after = diagonal.sharpness(ft.u, ft.v)
            curves[schedule.value, lr], solutions[schedule.value, lr] = ft.trajectory.mean(axis=2).T, w
            rows += [
                {
                    "schedule": schedule.value,
                    "finetune_lr": lr,
                    "replica": r,
                    "pretrain_loss_before": before[r],
                    "sharpness_before": sharp[r],
                    "finetune_steps": int(ft.steps[r]),
                    "finetune_loss": ft.loss[r],
                    "converged": bool(ft.loss[r] < sim.target_loss),
                    "pretrain_loss_after": after[r],
                    "forgetting": after[r] - before[r],
                    "sharpness_after": sharp_after[r],
                    "l1_norm": np.abs(w[r]).sum(),
                    "support": int((np.abs(w[r]) > SUPPORT_TOL).sum()),
                    "least_forgetting": least[r],
                    "overwrite_forgetting": overwrite[r],
                }
                for r in range(sim.replicas)
            ]
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "diagonal_runs.csv", index=False)
    names = [s.value for s in sim.schedules]
    if figures:
        plot_diagonal(runs, curves, names, sim, out)
    return diagonal.summarize(runs, solutions, names, list(sim.finetune_lrs))


def plot_diagonal(runs: pd.DataFrame, curves: dict, names: list[str], sim: DiagonalSimConfig, out: Path) -> None:
    """Writes diagonal_forgetting.png and diagonal_sharpness.png (replica means)."""
    means = runs.groupby(["schedule", "finetune_lr"], sort=False).mean(numeric_only=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for s in names:
        m = means.xs(s, level="schedule")
        a.plot(m.index, m.forgetting, marker="o", label=f"pretrained: {s}")
    a.set(
        xscale="log",
        xlabel="fine-tuning step size",
        ylabel="forgetting (rise of pretraining loss)",
        title=f"Fine-tuned to the same loss ({sim.target_loss:g}), mean of {sim.replicas}",
    )
    a.legend()
    for lr in (min(sim.finetune_lrs), max(sim.finetune_lrs)):
        ft_loss, pre_loss = curves[names[-1], lr]
        b.plot(ft_loss, pre_loss, label=f"step {lr:g}")
    b.set(
        xscale="log",
        xlabel="fine-tuning training loss",
        ylabel="pretraining loss",
        title=f"Fine-tuning the {names[-1]} model (replica mean)",
    )
    b.invert_xaxis()
    b.legend()
    save(fig, out / "diagonal_forgetting.png")

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    lr = min(sim.finetune_lrs)
    panels = [
        ("pretrain_loss_before", "pretraining loss", "Before fine-tuning"),
        ("sharpness_before", "Hessian trace", "Sharpness before fine-tuning"),
        ("pretrain_loss_after", "pretraining loss", f"After fine-tuning (step {lr:g})"),
    ]
    for ax, (col, ylabel, title) in zip(axes, panels, strict=True):
        ax.bar(names, [means.loc[(s, lr), col] for s in names], color=[f"C{i}" for i in range(len(names))])
        ax.set(xlabel="pretraining schedule", ylabel=ylabel, title=title)
    save(fig, out / "diagonal_sharpness.png")


register_configs()


@hydra.main(config_path="../../conf", config_name="theory", version_base="1.3")
def main(dict_cfg: DictConfig) -> None:
    """Runs the selected simulation and writes its results to the Hydra run dir."""
    cfg: TheoryConfig = OmegaConf.to_object(dict_cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    if isinstance(cfg.sim, LinearSimConfig):
        name, summary = "linear", run_linear(cfg.sim, out, cfg.figures)
    elif isinstance(cfg.sim, DiagonalSimConfig):
        name, summary = "diagonal", run_diagonal(cfg.sim, out, cfg.figures)
    else:
        raise TypeError(f"unknown sim config {type(cfg.sim).__name__}: use sim=linear or sim=diagonal")
    summary |= {"git_sha": git_sha(), "config": OmegaConf.to_container(dict_cfg.sim, enum_to_str=True)}
    (out / f"{name}_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("%s: wrote results to %s", name, out)


if __name__ == "__main__":
    main()
