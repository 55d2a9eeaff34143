"""Two-layer linear network: progressive sensitivity (Springer et al. 2025, section 4).

    python -m overtraining.theory sim=linear
    python -m overtraining.theory sim=linear sim.perturb_scale=0.12 sim.finetune_angle_deg=60
    python -m overtraining.theory -m sim=linear sim.perturb_scale=0.05,0.0866,0.12 sim.seed=0,1

Model ``f(x) = W2 W1 x`` (W1: m x d, W2: d x m), pretrained by full-batch gradient descent
with a small step (a discretised gradient flow) on ``A`` from a small Gaussian init. The
paper's exact numbers are not public; our choices:

* Target ``A = U diag(s) V^T`` with random orthonormal ``U, V`` and a geometric spectrum
  ``s_i = top * ratio**i``: the network learns one singular direction at a time, largest
  first (saddle-to-saddle; Saxe et al. 2014, Gidel et al. 2019), at times ~ ln(1/init)/s_i.
* Loss: the population squared error under isotropic inputs,
  ``E_x 0.5 ||W2 W1 x - A x||^2 = 0.5 ||W2 W1 - A||_F^2``.
* Perturbation: i.i.d. ``N(0, sigma^2)`` noise on every weight of both layers, a fixed
  absolute scale at every checkpoint. Its expected effect has a closed form (below), and
  a Monte Carlo estimate is saved next to it.
* Fine-tuning: a fixed number of gradient steps with a fixed step on
  ``B = cos(theta) A + sin(theta) C``, ``C`` a random map orthogonal to ``A`` of equal norm.

Why the U-shape: with balanced layers a learned direction of strength ``s`` puts ``s`` into
``||W1||_F^2`` and into ``||W2||_F^2``, so it adds ``sigma^2 d s`` to the perturbed loss
while removing ``s^2 / 2`` from the clean loss. Directions with ``s > 2 sigma^2 d`` pay off,
the later, smaller ones do not: the perturbed loss falls, then rises (their Theorem 4.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Target:
    """A pretraining map ``A = U[:, :r] diag(s) V[:, :r]^T``.

    Attributes:
        matrix: ``A``, (d, d).
        left, right: ``U[:, :r]`` and ``V[:, :r]``, (d, r) each.
        singular_values: ``s``, (r,), decreasing.
    """

    matrix: np.ndarray
    left: np.ndarray
    right: np.ndarray
    singular_values: np.ndarray


@dataclass
class Pretraining:
    """A gradient-descent pretraining run.

    Attributes:
        checkpoint_steps: steps at which weights were saved, (C,).
        w1, w2: saved weights, (C, m, d) and (C, d, m).
        strengths: ``diag(U^T W2 W1 V)`` after every step, (steps + 1, r): how much of each
            target direction the network has learned.
    """

    checkpoint_steps: np.ndarray
    w1: np.ndarray
    w2: np.ndarray
    strengths: np.ndarray


def make_target(dim: int, rank: int, top: float, ratio: float, rng: np.random.Generator) -> Target:
    """Draws ``A`` with random orthonormal singular vectors and ``s_i = top * ratio**i``.

    Args:
        dim: input = output dimension ``d``.
        rank: number of nonzero singular values ``r <= d``.
        top: largest singular value.
        ratio: geometric decay of the spectrum, in (0, 1].
        rng: random generator.

    Returns:
        The target.
    """
    left, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    right, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    s = top * ratio ** np.arange(rank)
    return Target((left[:, :rank] * s) @ right[:, :rank].T, left[:, :rank], right[:, :rank], s)


def misaligned_target(a: np.ndarray, angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """``B = cos(theta) A + sin(theta) C`` with ``<C, A>_F = 0`` and ``||C||_F = ||A||_F``.

    Args:
        a: the pretraining map, (d, d).
        angle_deg: angle between ``A`` and ``B`` in the Frobenius geometry.
        rng: random generator.

    Returns:
        ``B``, (d, d), with ``||B||_F = ||A||_F``.
    """
    c = rng.standard_normal(a.shape)
    c -= np.sum(c * a) / np.sum(a * a) * a
    c *= np.linalg.norm(a) / np.linalg.norm(c)
    theta = np.deg2rad(angle_deg)
    return np.cos(theta) * a + np.sin(theta) * c


def loss(w1: np.ndarray, w2: np.ndarray, target: np.ndarray) -> float:
    """Population loss ``0.5 ||W2 W1 - target||_F^2`` (isotropic Gaussian inputs)."""
    return 0.5 * float(np.sum((w2 @ w1 - target) ** 2))


def gd_step(w1: np.ndarray, w2: np.ndarray, target: np.ndarray, lr: float) -> tuple[np.ndarray, np.ndarray]:
    """One gradient-descent step on ``loss``; returns the new ``(W1, W2)``."""
    g = w2 @ w1 - target  # dL/dW for the end-to-end map, (d, d)
    return w1 - lr * w2.T @ g, w2 - lr * g @ w1.T


def expected_perturbed_loss(w1: np.ndarray, w2: np.ndarray, target: np.ndarray, sigma: float) -> float:
    """``E loss(W1 + sigma Z1, W2 + sigma Z2)`` with i.i.d. standard Gaussian ``Z1, Z2``.

    Expanding ``(W2 + sZ2)(W1 + sZ1)``, the cross terms have zero mean and
    ``E||W2 Z1||^2 = d_in ||W2||^2``, ``E||Z2 W1||^2 = d_out ||W1||^2``,
    ``E||Z2 Z1||^2 = d_out m d_in``.

    Args:
        w1: (m, d_in); w2: (d_out, m); target: (d_out, d_in); sigma: noise std.

    Returns:
        The expected perturbed loss.
    """
    (m, d_in), d_out = w1.shape, w2.shape[0]
    spread = d_in * np.sum(w2**2) + d_out * np.sum(w1**2) + sigma**2 * d_out * m * d_in
    return loss(w1, w2, target) + 0.5 * sigma**2 * float(spread)


def sampled_perturbed_loss(
    w1: np.ndarray, w2: np.ndarray, target: np.ndarray, sigma: float, samples: int, rng: np.random.Generator
) -> float:
    """Monte Carlo estimate of ``expected_perturbed_loss`` from ``samples`` noise draws."""
    z1 = rng.standard_normal((samples, *w1.shape))
    z2 = rng.standard_normal((samples, *w2.shape))
    prods = (w2 + sigma * z2) @ (w1 + sigma * z1)  # (samples, d_out, d_in)
    return 0.5 * float(np.mean(np.sum((prods - target) ** 2, axis=(1, 2))))


def finetune(
    w1: np.ndarray, w2: np.ndarray, target: np.ndarray, lr: float, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``steps`` gradient-descent steps of size ``lr`` towards ``target``."""
    for _ in range(steps):
        w1, w2 = gd_step(w1, w2, target, lr)
    return w1, w2


def checkpoint_steps(steps: int, n: int) -> np.ndarray:
    """Step 0 plus about ``n - 1`` log-spaced steps in [1, steps] (duplicates removed)."""
    return np.unique(np.concatenate([[0], np.geomspace(1, steps, n - 1).round().astype(int)]))


def pretrain(
    target: Target,
    hidden: int,
    init_scale: float,
    lr: float,
    steps: int,
    save_at: np.ndarray,
    rng: np.random.Generator,
) -> Pretraining:
    """Gradient descent from ``N(0, init_scale^2)`` weights, saving weights at ``save_at``.

    Args:
        target: the map to learn.
        hidden: hidden width ``m``.
        init_scale: std of the initial weights.
        lr: step size.
        steps: number of steps.
        save_at: sorted steps (in [0, steps]) whose weights are kept.
        rng: random generator.

    Returns:
        The run, including the learned strength of every target direction after each step.
    """
    d = target.matrix.shape[0]
    w1 = init_scale * rng.standard_normal((hidden, d))
    w2 = init_scale * rng.standard_normal((d, hidden))
    saved1, saved2, strengths = [], [], []
    for t in range(steps + 1):
        if t > 0:
            w1, w2 = gd_step(w1, w2, target.matrix, lr)
        strengths.append(np.einsum("ik,ij,jk->k", target.left, w2 @ w1, target.right))
        if t in save_at:
            saved1.append(w1)
            saved2.append(w2)
    return Pretraining(np.asarray(save_at), np.array(saved1), np.array(saved2), np.array(strengths))


def time_to_learn(strengths: np.ndarray, singular_values: np.ndarray, fraction: float) -> np.ndarray:
    """First step at which each direction reaches ``fraction`` of its singular value.

    Args:
        strengths: (T, r) learned strengths per step.
        singular_values: (r,) targets.
        fraction: threshold in (0, 1).

    Returns:
        (r,) integer steps; -1 for directions never learned.
    """
    reached = strengths >= fraction * singular_values
    return np.where(reached.any(axis=0), reached.argmax(axis=0), -1)


def measure_checkpoints(
    run: Pretraining,
    target: Target,
    ft_target: np.ndarray,
    learned_at: np.ndarray,
    sigma: float,
    samples: int,
    ft_lr: float,
    ft_steps: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Perturbs and fine-tunes every saved checkpoint.

    Args:
        run: pretraining run with saved checkpoints.
        target: the pretraining target.
        ft_target: the fine-tuning map ``B``.
        learned_at: ``time_to_learn`` of every direction, (r,).
        sigma: perturbation std; samples: Monte Carlo draws per checkpoint.
        ft_lr, ft_steps: fixed fine-tuning recipe, the same for every checkpoint.
        rng: random generator (Monte Carlo noise).

    Returns:
        One row per checkpoint: step, directions learned, clean / perturbed (exact and
        sampled) pretraining loss, pretraining and fine-tuning losses after fine-tuning, and
        ``sensitivity`` (perturbed - clean) and ``forgetting`` (after - before fine-tuning).
    """
    rows = []
    for step, w1, w2 in zip(run.checkpoint_steps, run.w1, run.w2, strict=True):
        f1, f2 = finetune(w1, w2, ft_target, ft_lr, ft_steps)
        rows.append(
            {
                "step": int(step),
                "n_learned": int(np.sum((learned_at >= 0) & (learned_at <= step))),
                "pretrain_loss": loss(w1, w2, target.matrix),
                "perturbed_loss": expected_perturbed_loss(w1, w2, target.matrix, sigma),
                "perturbed_loss_mc": sampled_perturbed_loss(w1, w2, target.matrix, sigma, samples, rng),
                "pretrain_loss_after_ft": loss(f1, f2, target.matrix),
                "finetune_loss_before": loss(w1, w2, ft_target),
                "finetune_loss_after": loss(f1, f2, ft_target),
            }
        )
    table = pd.DataFrame(rows)
    table["sensitivity"] = table.perturbed_loss - table.pretrain_loss
    table["forgetting"] = table.pretrain_loss_after_ft - table.pretrain_loss
    return table


def summarize(table: pd.DataFrame, learned_at: np.ndarray, final_strengths: np.ndarray, target: Target) -> dict:
    """Headline numbers: where the perturbed loss bottoms out, sensitivity and forgetting trends.

    Args:
        table: output of ``measure_checkpoints``.
        learned_at: ``time_to_learn`` per direction, (r,).
        final_strengths: learned strength of every direction at the end, (r,).
        target: the pretraining target.

    Returns:
        JSON-ready dict.
    """
    i_min = int(table.perturbed_loss.idxmin())
    learned = table[table.n_learned >= 1]
    return {
        "u_shape_min_step": int(table.step[i_min]),
        "u_shape_min_index": i_min,
        "u_shape_min_n_learned": int(table.n_learned[i_min]),
        "n_checkpoints": len(table),
        "u_shape_interior": 0 < i_min < len(table) - 1,
        "perturbed_loss_first": float(table.perturbed_loss.iloc[0]),
        "perturbed_loss_min": float(table.perturbed_loss[i_min]),
        "perturbed_loss_final": float(table.perturbed_loss.iloc[-1]),
        "sensitivity_first": float(table.sensitivity.iloc[0]),
        "sensitivity_final": float(table.sensitivity.iloc[-1]),
        "forgetting_first_learned": float(learned.forgetting.iloc[0]),
        "forgetting_final": float(table.forgetting.iloc[-1]),
        "time_to_learn": learned_at.tolist(),
        "learned_in_order": bool(learned_at.min() >= 0 and np.all(np.diff(learned_at) > 0)),
        "max_relative_error_final": float(np.max(np.abs(final_strengths / target.singular_values - 1))),
    }
