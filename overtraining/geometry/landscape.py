"""Loss landscape around a checkpoint: the line base -> fine-tuned, and 2D random slices.

- ``interpolation_losses``: loss at (1 - a) * theta_base + a * theta_ft for a grid of a.
  ``torch.lerp`` returns its endpoints exactly, so a = 0 is the base model's loss and
  a = 1 the fine-tuned model's, bit for bit.
- ``random_slice``: loss at theta + x * d1 + y * d2 on a square grid, with d1, d2
  filter-normalised random directions (Li et al. 2018, "Visualizing the Loss Landscape of
  Neural Nets"): each filter (row along dim 0) of d has the norm of the same filter of
  theta; 1-D tensors (biases, norm gains) get a zero direction, as in Li et al.

Both evaluate in the first model's modules, writing parameters in place and restoring
them exactly afterwards (see ``perturbation.restored``): no persistent change to either
model, and no second copy of a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from overtraining.geometry.perturbation import (
    Batch,
    evaluate_loss,
    gaussian_like,
    on_model_device,
    restored,
    unique_parameters,
)


def matched_parameters(base: nn.Module, other: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """The unique parameters of two models of one architecture, paired by name.

    Raises:
        ValueError: if the names or shapes differ.
    """
    a = dict(base.named_parameters())
    b = dict(other.named_parameters())
    if a.keys() != b.keys():
        raise ValueError(f"parameter names differ: {sorted(a.keys() ^ b.keys())[:5]} ...")
    bad = [n for n in a if a[n].shape != b[n].shape]
    if bad:
        raise ValueError(f"parameter shapes differ at {bad[:5]}")
    return list(a.values()), [b[n] for n in a]


@torch.no_grad()
def interpolation_losses(
    base: nn.Module, finetuned: nn.Module, batches: Sequence[Batch], alphas: Sequence[float]
) -> list[float]:
    """Loss along the straight line from ``base`` (a = 0) to ``finetuned`` (a = 1).

    Args:
        base: the model before fine-tuning; evaluated in place and restored.
        finetuned: the model after fine-tuning; only read.
        batches: fixed batches with ``labels``.
        alphas: interpolation coefficients (values outside [0, 1] extrapolate).

    Returns:
        The token-weighted mean loss at each alpha, in order.
    """
    params, targets = matched_parameters(base, finetuned)
    batches = on_model_device(base, batches)  # once, not at every alpha
    losses = []
    with restored(params) as start:
        ends = start if finetuned is base else targets  # the same model: a flat line
        for alpha in alphas:
            for p, p0, p1 in zip(params, start, ends, strict=True):
                p.copy_(torch.lerp(p0, p1.to(device=p0.device, dtype=p0.dtype), float(alpha)))
            losses.append(evaluate_loss(base, batches))
    return losses


def filter_normalized_direction(params: Sequence[Tensor], seed: int) -> list[Tensor]:
    """A Gaussian direction rescaled filter by filter to the norms of ``params``.

    Args:
        params: the parameter tensors theta.
        seed: seed of the Gaussian draw.

    Returns:
        One tensor per parameter: zero for 1-D tensors; otherwise, for every filter i
        (slice along dim 0), d_i * ||theta_i|| / ||d_i||.
    """
    out = []
    for p, eps in zip(params, gaussian_like(params, seed), strict=True):
        if p.dim() <= 1:
            out.append(torch.zeros_like(p))
            continue
        d = eps.to(p.dtype).flatten(1)  # (filters, fan_in)
        theta = p.detach().flatten(1)  # (filters, fan_in)
        scale = theta.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10)
        out.append((d * scale).view_as(p))
    return out


@torch.no_grad()
def random_slice(model: nn.Module, batches: Sequence[Batch], coords: Sequence[float], seed: int = 0) -> np.ndarray:
    """Loss on the plane theta + x * d1 + y * d2 through ``model``'s parameters.

    Args:
        model: the centre of the slice; evaluated in place and restored.
        batches: fixed batches with ``labels``.
        coords: grid coordinates used for both x and y (include 0 for the centre).
        seed: d1 uses ``seed``, d2 uses ``seed + 1``.

    Returns:
        (len(coords), len(coords)) array, ``[i, j]`` the loss at x = coords[i], y = coords[j].
    """
    params = unique_parameters(model)
    batches = on_model_device(model, batches)
    d1 = filter_normalized_direction(params, seed)
    d2 = filter_normalized_direction(params, seed + 1)
    grid = np.empty((len(coords), len(coords)))
    with restored(params) as centre:
        for i, x in enumerate(coords):
            for j, y in enumerate(coords):
                for p, c, a, b in zip(params, centre, d1, d2, strict=True):
                    p.copy_(c + x * a + y * b)
                grid[i, j] = evaluate_loss(model, batches)
    return grid
