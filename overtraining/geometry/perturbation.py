"""Gaussian perturbation sensitivity of a checkpoint (Springer et al. 2025, App. D.2).

Every parameter tensor theta_i is replaced by theta_i + gamma * s_i * eps_i,
eps_i ~ N(0, I), and the loss on fixed batches is compared with the unperturbed loss.
The per-tensor scale s_i depends on the mode:

- ``"std"`` (default, the Pythia-70M reproduction): s_i = std(theta_i), so the noise is a
  fixed *relative* displacement across checkpoints. LayerNorm gains that are still all
  ones have std 0 and are left untouched; 1-element tensors get s_i = 0.
- ``"norm"``: s_i = ||theta_i|| / sqrt(numel(theta_i)) (the RMS of the tensor), so that
  E||delta_i||^2 = gamma^2 ||theta_i||^2: the noise norm is gamma times the tensor norm.
  It differs from "std" only by the tensor mean (it also moves constant tensors).

Tied tensors (``lm_head`` tied to the embeddings) are one ``Parameter`` and are perturbed
once: parameters come from ``model.parameters()``, which de-duplicates shared tensors.
For each seed the same eps is used at every gamma (common random numbers), so the
delta-vs-gamma curve of one seed is smooth. The noise is added in the model's own dtype:
in bf16 (relative spacing 2^-8) gammas below ~0.01 partly round away, so pass an fp32
model when probing small gammas.

No persistent change: the parameters are snapshot once (a clone), noise is added in
place, and after each evaluation the snapshot is copied back (``Tensor.copy_``: exact,
bit for bit). Measured on 2 shared CPU cores (torch 2.13, median of 15), per
perturbation: restoring in place costs 0.07 ms on the 385K-parameter byte GPT-NeoX
(hidden 96, 3 layers) and 4-5 ms on a 19M-parameter one (hidden 512, 6 layers), against
2-7 ms and 9-10 ms for ``copy.deepcopy`` of the model. Restoring is 2-30x cheaper and
keeps one spare copy of the parameters instead of a second model per perturbation, so it
is what this module does. (Drawing the noise itself costs more than either: 1.2 ms and
55-63 ms.)

Example::

    result = perturbation_sensitivity(model, batches, gammas=[0.05, 0.1], seeds=3)
    result.summary()[0.1]["delta_loss_mean"]
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from overtraining.config import PERTURB_MODES, check_choice
from overtraining.training.losses import lm_loss

Batch = dict[str, Tensor]


def unique_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The model's parameters with tied tensors listed once, in a fixed order."""
    return list(model.parameters())  # nn.Module de-duplicates shared Parameters


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, collision-free across (seed, batch, sample)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> 1)


def gaussian_like(params: Sequence[Tensor], seed: int) -> Iterator[Tensor]:
    """Yield eps_i ~ N(0, I) shaped like each tensor, reproducibly from ``seed``.

    One generator per device, so the stream does not depend on where other tensors live.
    """
    generators: dict[torch.device, torch.Generator] = {}
    for p in params:
        if p.device not in generators:
            generators[p.device] = torch.Generator(device=p.device).manual_seed(seed)
        yield torch.randn(p.shape, generator=generators[p.device], device=p.device)


@torch.no_grad()
def add_gaussian_noise_(params: Sequence[Tensor], scales: Sequence[float], seed: int) -> None:
    """theta_i += scales[i] * eps_i in place; eps_i is drawn even where the scale is 0."""
    for p, scale, eps in zip(params, scales, gaussian_like(params, seed), strict=True):
        if scale != 0.0:
            p.add_(eps, alpha=scale)


@torch.no_grad()
def restore_(params: Sequence[Tensor], snapshot: Sequence[Tensor]) -> None:
    """Copy ``snapshot`` back into ``params`` (exact)."""
    for p, saved in zip(params, snapshot, strict=True):
        p.copy_(saved)


@contextmanager
def restored(params: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    """Snapshot ``params`` on entry, restore them on exit (also on error).

    Yields:
        The snapshot, for intermediate ``restore_`` calls.
    """
    snapshot = [p.detach().clone() for p in params]
    try:
        yield snapshot
    finally:
        restore_(params, snapshot)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout) and give back its training flag on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def on_model_device(model: nn.Module, batches: Sequence[Batch]) -> list[Batch]:
    """``batches`` moved to the device of the model's parameters (no copy where already there)."""
    device = next(model.parameters()).device
    return [{k: v.to(device) for k, v in batch.items()} for batch in batches]


def target_count(batch: Batch) -> int:
    """Number of next-token targets the HF causal-LM loss averages over."""
    return int((batch["labels"][:, 1:] != -100).sum())  # labels are shifted inside the model


evaluate_loss = lm_loss  # token-weighted mean next-token loss over fixed batches, in eval mode


def noise_scale(param: Tensor, mode: str) -> float:
    """Per-tensor noise scale s_i for gamma = 1 (see the module docstring).

    Raises:
        ValueError: for an unknown mode, suggesting the closest valid one.
    """
    check_choice("sharpness.perturb_mode", mode, PERTURB_MODES)
    x = param.detach().float()
    if mode == "std":
        return float(x.std()) if x.numel() > 1 else 0.0
    return float(x.norm()) / math.sqrt(x.numel())


@dataclass(frozen=True)
class PerturbationResult:
    """Losses of one checkpoint under Gaussian weight noise.

    Attributes:
        base_loss: unperturbed loss (nats).
        gammas: noise magnitudes, in the order given.
        losses: ``losses[g][s]`` is the loss at ``gammas[g]`` with seed index ``s``.
        unit_noise_norm: sqrt(sum_i s_i^2 n_i), the expected norm of the noise at gamma = 1
            (n_i elements of tensor i; exact in expectation of the squared norm).
        param_norm: ||theta||, over unique parameters.
    """

    base_loss: float
    gammas: tuple[float, ...]
    losses: tuple[tuple[float, ...], ...]
    unit_noise_norm: float = float("nan")
    param_norm: float = float("nan")

    def summary(self) -> dict[float, dict[str, float]]:
        """Mean and sample std (ddof=1; 0 for one seed) over seeds, per gamma.

        Returns:
            ``{gamma: {"loss_mean", "loss_std", "delta_loss_mean", "delta_loss_std",
            "ppl_mean", "ppl_std", "delta_ppl_mean", "delta_ppl_std", "noise_norm",
            "noise_rel_norm"}}``; perplexity is exp(loss) per seed, delta is against the
            unperturbed model, ``noise_norm`` = gamma * ``unit_noise_norm`` and
            ``noise_rel_norm`` = noise_norm / ||theta||.
        """
        base_ppl = math.exp(self.base_loss)
        out = {}
        for gamma, row in zip(self.gammas, self.losses, strict=True):
            loss = np.asarray(row, dtype=np.float64)
            ppl = np.exp(loss)
            columns = {"loss": loss, "delta_loss": loss - self.base_loss,
                       "ppl": ppl, "delta_ppl": ppl - base_ppl}  # fmt: skip
            out[gamma] = {}
            for name, x in columns.items():
                out[gamma][f"{name}_mean"] = float(x.mean())
                out[gamma][f"{name}_std"] = float(x.std(ddof=1)) if x.size > 1 else 0.0
            out[gamma]["noise_norm"] = gamma * self.unit_noise_norm
            out[gamma]["noise_rel_norm"] = gamma * self.unit_noise_norm / self.param_norm
        return out


def perturbation_sensitivity(
    model: nn.Module,
    batches: Sequence[Batch],
    gammas: Sequence[float],
    seeds: int = 3,
    mode: str = "std",
    seed: int = 0,
) -> PerturbationResult:
    """Loss under theta_i + gamma * s_i * eps_i for every gamma and ``seeds`` noise draws.

    The model is left bit-identical (parameters restored from a snapshot), in its own
    dtype (noise is drawn in fp32 and added in the parameter dtype) and training mode.

    Args:
        model: a causal LM whose ``model(**batch).loss`` is the mean next-token loss.
        batches: fixed batches (``input_ids``, ``labels``, optional ``attention_mask``).
        gammas: relative noise magnitudes; 0 gives the base loss exactly.
        seeds: number of independent noise draws per gamma.
        mode: ``"std"`` or ``"norm"`` (module docstring).
        seed: base seed; draw ``s`` uses ``derived_seed(seed, s)`` at every gamma.

    Returns:
        A PerturbationResult.

    Raises:
        ValueError: for an unknown mode or ``seeds < 1``.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    batches = on_model_device(model, batches)  # once, not at every evaluation
    params = unique_parameters(model)
    unit_scales = [noise_scale(p, mode) for p in params]
    base_loss = evaluate_loss(model, batches)
    losses = [[0.0] * seeds for _ in gammas]
    with restored(params) as snapshot:
        for s in range(seeds):
            for g, gamma in enumerate(gammas):
                add_gaussian_noise_(params, [gamma * u for u in unit_scales], derived_seed(seed, s))
                losses[g][s] = evaluate_loss(model, batches)
                restore_(params, snapshot)
    unit_norm = math.sqrt(sum(u * u * p.numel() for u, p in zip(unit_scales, params, strict=True)))
    param_norm = math.sqrt(sum(float(p.detach().float().pow(2).sum()) for p in params))
    return PerturbationResult(base_loss, tuple(gammas), tuple(tuple(row) for row in losses), unit_norm, param_norm)
