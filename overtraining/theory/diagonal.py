"""Diagonal linear networks: how step sizes regulate forgetting (Rofin, Varre, Flammarion 2026).

    python -m overtraining.theory sim=diagonal
    python -m overtraining.theory sim=diagonal sim.finetune_lrs='[0.002,0.005,0.01,0.025]'
    python -m overtraining.theory -m sim=diagonal sim.pretrain_noise=1,2,3 sim.seed=0,1,2

Model: ``f(x) = <w, x>`` with ``w = u*u - v*v`` (Woodworth et al. 2020), ``u = v = alpha``
at init; inputs ``x ~ N(0, I_d)``, squared loss. The paper's toy is only described in
its figure captions, so the setup below is our choice:

* Pretraining task: a sparse target ``w_pre`` whose magnitudes decay geometrically
  (coarse features first, fine ones last), learned by online SGD with label noise, as an
  LLM sees a noisy stream. The pretraining loss is the excess population risk
  ``0.5 ||w - w_pre||^2`` (exact for isotropic inputs).
* Schedules: ``constant`` step vs ``wsd`` (same peak, linear decay over the last
  ``decay_fraction``). At a constant step the SGD noise keeps the iterate above the valley
  floor, where the fine features are lost in the noise; the decay lets it descend: lower
  pretraining loss and a sharper model, the LLM picture of the paper's Figure 5. (With
  noiseless full-batch GD the iterate converges during the stable phase and a later decay
  changes nothing, so the noise is what makes the schedule matter here.)
* Sharpness: the trace of the pretraining-loss Hessian, ``4 * sum(u^2 + v^2)`` (exact, no
  residual term). The paper's proxy, the output change under small Gaussian weight noise,
  estimates the same trace. At the noisy constant-step iterate it fluctuates from replica
  to replica; the mean over replicas is what the claims use.
* Fine-tuning task: a sparse target ``w_ft`` of which ``finetune_overlap`` coordinates sit
  on pretrained features with new values, from ``finetune_samples < d`` examples, so that
  many interpolators exist and the optimiser's implicit bias picks one. Every run is SGD
  (batch 1) to the same training loss ``target_loss``; forgetting is the rise of the
  pretraining loss. ``least_forgetting`` (the interpolator closest to ``w_pre``) and the
  loss of ``w = w_ft`` bracket what any optimiser can reach.

Direction of the effect: the secondary sources on the paper (no full text was available)
report that fine-tuning with a smaller learning rate preserves pretrained features and
forgets less, and that sharpness (raised by learning-rate decay) amplifies forgetting. The
simulation agrees: at equal fine-tuning loss the large step ends at a sparser and flatter
solution (its SGD noise adds a sparsity pressure; Pesme et al. 2021, Even et al. 2023) that
drops pretrained features the fine-tuning data do not pin down, so it forgets more; the
small step stays closer to the pretrained weights. Sparser/flatter is therefore *not*
less forgetting here. The decayed (sharper) model forgets more at every fine-tuning step,
and most of its pretraining gain over the constant-step model is gone after fine-tuning.
The differences are a few percent of the total forgetting, most of which any interpolator
must pay, but they hold for most replicas (see the ``replicas_*`` counts in the summary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from overtraining.theory.config import Schedule


@dataclass
class Tasks:
    """``R`` independent pretraining / fine-tuning task pairs.

    Attributes:
        w_pre: pretraining targets, (R, d).
        w_ft: fine-tuning targets, (R, d).
        x_ft: fine-tuning inputs, (R, n, d).
        y_ft: fine-tuning labels ``x_ft @ w_ft`` (noiseless), (R, n).
    """

    w_pre: np.ndarray
    w_ft: np.ndarray
    x_ft: np.ndarray
    y_ft: np.ndarray


@dataclass
class FinetuneRun:
    """Outcome of fine-tuning ``R`` replicas.

    Attributes:
        u, v: final parameters, (R, d) each.
        steps: steps taken until the target loss was reached, (R,).
        loss: fine-tuning training loss at the stop, (R,) (NaN if diverged).
        trajectory: (T, 2, R) pairs (fine-tuning loss, pretraining loss) every log step.
    """

    u: np.ndarray
    v: np.ndarray
    steps: np.ndarray
    loss: np.ndarray
    trajectory: np.ndarray


def step_sizes(schedule: Schedule, peak: float, steps: int, decay_fraction: float) -> np.ndarray:
    """Per-step step sizes of a pretraining schedule.

    Args:
        schedule: ``constant`` or ``wsd``.
        peak: the step size before any decay.
        steps: number of steps.
        decay_fraction: ``wsd``: the last ``round(decay_fraction * steps)`` steps decay
            linearly from ``peak`` to 0 (the final step uses ``peak / n_decay``).

    Returns:
        Array of shape (steps,).
    """
    lrs = np.full(steps, peak, dtype=float)
    n_decay = int(round(decay_fraction * steps)) if schedule is Schedule.wsd else 0
    if n_decay > 0:
        lrs[steps - n_decay :] = peak * np.arange(n_decay, 0, -1) / n_decay
    return lrs


def make_tasks(
    replicas: int,
    dim: int,
    pre_support: int,
    pre_top: float,
    pre_ratio: float,
    ft_support: int,
    ft_overlap: int,
    ft_samples: int,
    rng: np.random.Generator,
) -> Tasks:
    """Draws sparse pretraining and fine-tuning targets with random signs and supports.

    Args:
        replicas: number of independent task pairs ``R``.
        dim: number of coordinates ``d``.
        pre_support: nonzeros of ``w_pre``; magnitudes ``pre_top * pre_ratio**i``.
        pre_top, pre_ratio: see ``pre_support``.
        ft_support: nonzeros of ``w_ft``, magnitudes uniform in [0.5, 1.5].
        ft_overlap: how many of them lie on the support of ``w_pre``.
        ft_samples: fine-tuning examples ``n``.
        rng: random generator.

    Returns:
        The tasks.
    """
    if ft_overlap > pre_support or pre_support + ft_support - ft_overlap > dim:
        raise ValueError("supports do not fit: need ft_overlap <= pre_support and enough coordinates")
    w_pre, w_ft = np.zeros((replicas, dim)), np.zeros((replicas, dim))
    for r in range(replicas):
        coords = rng.permutation(dim)
        pre, new = coords[:pre_support], coords[pre_support : pre_support + ft_support - ft_overlap]
        w_pre[r, pre] = rng.choice([-1.0, 1.0], pre_support) * pre_top * pre_ratio ** np.arange(pre_support)
        ft = np.concatenate([rng.choice(pre, ft_overlap, replace=False), new])
        w_ft[r, ft] = rng.choice([-1.0, 1.0], ft_support) * rng.uniform(0.5, 1.5, ft_support)
    x_ft = rng.standard_normal((replicas, ft_samples, dim))
    return Tasks(w_pre, w_ft, x_ft, np.einsum("rnd,rd->rn", x_ft, w_ft))


def pretrain_loss(u: np.ndarray, v: np.ndarray, w_pre: np.ndarray) -> np.ndarray:
    """Excess population risk ``0.5 ||u^2 - v^2 - w_pre||^2`` per replica, (R,)."""
    return 0.5 * np.sum((u * u - v * v - w_pre) ** 2, axis=-1)


def sharpness(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Trace of the pretraining-loss Hessian in (u, v): ``4 * sum(u^2 + v^2)``, (R,).

    For ``L = 0.5 * sum_i (u_i^2 - v_i^2 - a_i)^2`` the residual terms ``+-2 r_i`` of the
    diagonal second derivatives cancel in the trace, so this is exact at any point.
    """
    return 4.0 * np.sum(u * u + v * v, axis=-1)


def _sgd_step(u, v, x, y, lr):
    """One SGD step on ``0.5 * mean((x @ w - y)^2)``; x (R, b, d), y (R, b), lr scalar or (R, 1)."""
    w = u * u - v * v
    g = np.einsum("rbd,rb->rd", x, np.einsum("rbd,rd->rb", x, w) - y) / x.shape[1]  # dL/dw, (R, d)
    return u - 2 * lr * u * g, v + 2 * lr * v * g


def pretrain(
    w_pre: np.ndarray, lrs: np.ndarray, noise: float, batch: int, init_scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Online SGD on fresh noisy samples ``y = <x, w_pre> + noise * eps``.

    Args:
        w_pre: targets, (R, d).
        lrs: step size of every step, (T,).
        noise: label-noise std.
        batch: samples per step.
        init_scale: ``u = v = init_scale`` at init.
        rng: random generator.

    Returns:
        ``(u, v)``, each (R, d).
    """
    u = np.full_like(w_pre, init_scale)
    v = np.full_like(w_pre, init_scale)
    for lr in lrs:
        x = rng.standard_normal((w_pre.shape[0], batch, w_pre.shape[1]))
        y = np.einsum("rbd,rd->rb", x, w_pre) + noise * rng.standard_normal(x.shape[:2])
        u, v = _sgd_step(u, v, x, y, lr)
    return u, v


def finetune(
    u: np.ndarray,
    v: np.ndarray,
    tasks: Tasks,
    lr: float,
    batch: int,
    target_loss: float,
    max_steps: int,
    log_every: int,
    rng: np.random.Generator,
) -> FinetuneRun:
    """SGD on the fine-tuning examples; each replica stops once its training loss < target.

    The loss is checked every ``log_every`` steps, so a replica may overshoot the target by
    at most that many SGD steps.

    Args:
        u, v: pretrained parameters, (R, d) each (not modified).
        tasks: fine-tuning data and the pretraining targets (for the trajectory).
        lr: constant step size.
        batch: examples per step, drawn with replacement.
        target_loss: fine-tuning training loss at which a replica stops.
        max_steps: cap on the number of steps.
        log_every: every this many steps, evaluate the full fine-tuning loss, stop the
            replicas below ``target_loss`` and record (fine-tuning, pretraining) loss.
        rng: random generator.

    Returns:
        The run; replicas that diverge keep NaN losses and stop updating.
    """
    n_rep, n = tasks.y_ft.shape
    rows = np.arange(n_rep)[:, None]
    steps = np.full(n_rep, max_steps)
    active = np.ones(n_rep, dtype=bool)
    trajectory = []
    for t in range(max_steps + 1):
        if t % log_every == 0 or t == max_steps:  # full-batch evaluation only at log steps
            w = u * u - v * v
            loss = 0.5 * np.mean((np.einsum("rnd,rd->rn", tasks.x_ft, w) - tasks.y_ft) ** 2, axis=1)
            trajectory.append(np.stack([loss, 0.5 * np.sum((w - tasks.w_pre) ** 2, axis=1)]))
            stop = active & ((loss < target_loss) | ~np.isfinite(loss))
            steps[stop], active[stop] = t, False
            if not active.any() or t == max_steps:
                break
        idx = rng.integers(0, n, (n_rep, batch))
        u_new, v_new = _sgd_step(u, v, tasks.x_ft[rows, idx], tasks.y_ft[rows, idx], lr)
        u, v = np.where(active[:, None], u_new, u), np.where(active[:, None], v_new, v)
    return FinetuneRun(u, v, steps, loss, np.array(trajectory))


def least_forgetting(tasks: Tasks) -> np.ndarray:
    """Smallest pretraining loss of any exact fine-tuning interpolator, (R,).

    The interpolators form the affine set ``{w : x_ft w = y_ft}``; the one closest to
    ``w_pre`` is ``w_pre + pinv(x_ft) (y_ft - x_ft w_pre)``, so the bound is
    ``0.5 ||pinv(x_ft) (y_ft - x_ft w_pre)||^2``: what any optimiser must forget.
    """
    resid = tasks.y_ft - np.einsum("rnd,rd->rn", tasks.x_ft, tasks.w_pre)
    step = np.einsum("rdn,rn->rd", np.linalg.pinv(tasks.x_ft), resid)
    return 0.5 * np.sum(step**2, axis=1)


def summarize(runs: pd.DataFrame, solutions: dict, schedules: list[str], lrs: list[float]) -> dict:
    """Headline numbers with paired counts (how many replicas agree with the mean).

    Args:
        runs: one row per (schedule, finetune_lr, replica), columns as written by the entry
            point (forgetting, support, sharpness_before/after, pretrain_loss_before/after...).
        solutions: fine-tuned weights ``w`` per (schedule, lr), (R, d) each.
        schedules: schedule names in config order; the first is compared with the last.
        lrs: fine-tuning step sizes; the smallest is compared with the largest.

    Returns:
        JSON-ready dict: per schedule, small vs large step; first vs last schedule per step.
    """
    small, large = min(lrs), max(lrs)
    per = runs.pivot_table(index="replica", columns=["schedule", "finetune_lr"])  # (R, metric x schedule x lr)
    mean = lambda col, s, lr: float(per[col][s][lr].mean())
    summary: dict = {"small_lr": small, "large_lr": large, "all_converged": bool(runs.converged.all())}
    for s in schedules:
        summary[f"finetune_step_{s}"] = {
            **{
                f"{col}_{tag}": mean(col, s, lr)
                for col in ("forgetting", "support", "sharpness_after", "finetune_loss")
                for tag, lr in (("small", small), ("large", large))
            },
            "replicas_small_lr_forgets_less": int((per.forgetting[s][small] < per.forgetting[s][large]).sum()),
            "solution_gap": float(np.linalg.norm(solutions[s, large] - solutions[s, small], axis=1).mean()),
        }
    first, last = schedules[0], schedules[-1]
    if first != last:
        sharp = per.sharpness_before
        summary[f"schedule_{first}_vs_{last}"] = {
            "pretrain_loss": [mean("pretrain_loss_before", n, small) for n in (first, last)],
            "sharpness": [mean("sharpness_before", n, small) for n in (first, last)],
            "replicas_last_sharper": int((sharp[last][small] > sharp[first][small]).sum()),
            **{f"forgetting_{lr:g}": [mean("forgetting", n, lr) for n in (first, last)] for lr in lrs},
            **{
                f"replicas_last_forgets_more_{lr:g}": int((per.forgetting[last][lr] > per.forgetting[first][lr]).sum())
                for lr in lrs
            },
            **{
                f"pretrain_loss_after_{lr:g}": [mean("pretrain_loss_after", n, lr) for n in (first, last)] for lr in lrs
            },
        }
    summary["least_forgetting"] = float(runs.least_forgetting.mean())
    summary["overwrite_forgetting"] = float(runs.overwrite_forgetting.mean())
    return summary
