"""Representation drift between a base and a fine-tuned model on the same tokens.

Hidden states come from ``model(..., output_hidden_states=True).hidden_states``: index 0
is the embedding output, index L the output of block L, the last index the final
(normed, in GPT-NeoX/Llama) hidden state; negative indices count from the end. Padding
positions (``attention_mask == 0``) are dropped, so both models see identical rows.

- Mean principal angle (MPA, Rofin et al.): the mean of the principal angles between the
  top-k PCA subspaces (in feature space R^D) of the two models' centred hidden states,
  from ``scipy.linalg.subspace_angles``; 0 for identical subspaces, pi/2 for orthogonal.
- Linear CKA (Kornblith et al. 2019): ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on centred
  features; 1 for representations equal up to an orthogonal transform and scale.

Example::

    states = drift_by_layer(base, finetuned, batches, layers=[1, -1], k=16)
    states[3].mpa, states[3].cka
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from overtraining.geometry.perturbation import Batch, eval_mode, on_model_device


def resolve_layers(layers: Sequence[int], num_states: int) -> list[int]:
    """Map (possibly negative) hidden-state indices to sorted, unique non-negative ones.

    Raises:
        IndexError: if an index is outside ``[-num_states, num_states)``.
    """
    out = set()
    for layer in layers:
        if not -num_states <= layer < num_states:
            raise IndexError(f"layer {layer} out of range for {num_states} hidden states")
        out.add(layer % num_states)
    return sorted(out)


@torch.no_grad()
def hidden_states(model: nn.Module, batches: Sequence[Batch], layers: Sequence[int]) -> dict[int, np.ndarray]:
    """Hidden states at ``layers`` over all non-padding positions of ``batches``.

    Args:
        model: a causal LM that accepts ``output_hidden_states=True``.
        batches: fixed batches (``input_ids``, optional ``attention_mask``).
        layers: indices into the ``hidden_states`` tuple (negative from the end).

    Returns:
        ``{layer: (N, D) float64 array}`` keyed by the non-negative layer index; N is the
        number of non-padding positions over all batches.
    """
    rows: dict[int, list[Tensor]] = {}
    with eval_mode(model):
        for batch in on_model_device(model, batches):
            mask = batch.get("attention_mask")
            out = model(input_ids=batch["input_ids"], attention_mask=mask, output_hidden_states=True)
            keep = torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()  # (B, T)
            for layer in resolve_layers(layers, len(out.hidden_states)):
                h = out.hidden_states[layer]  # (B, T, D)
                rows.setdefault(layer, []).append(h[keep].double().cpu())  # (n, D)
    return {layer: torch.cat(chunks).numpy() for layer, chunks in rows.items()}


def pca_basis(x: np.ndarray, k: int) -> np.ndarray:
    """Orthonormal basis (D, k) of the top-k principal directions of the rows of ``x``.

    Raises:
        ValueError: if k exceeds min(N, D) or is < 1.
    """
    n, d = x.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k={k} must be in [1, min(N, D)] = [1, {min(n, d)}]")
    centred = x - x.mean(axis=0)  # (N, D)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, D), D)
    return vt[:k].T  # (D, k)


def mean_principal_angle(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Mean principal angle (radians) between the top-k PCA subspaces of x and y.

    Args:
        x: (N, D) features of the base model.
        y: (M, D) features of the fine-tuned model (usually M = N, the same tokens).
        k: subspace dimension.

    Returns:
        A value in [0, pi/2].
    """
    return float(np.mean(scipy.linalg.subspace_angles(pca_basis(x, k), pca_basis(y, k))))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between (N, D1) and (N, D2) features of the same N examples.

    Raises:
        ValueError: if the row counts differ.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same rows, got {x.shape[0]} and {y.shape[0]}")
    x = x - x.mean(axis=0)  # (N, D1)
    y = y - y.mean(axis=0)  # (N, D2)
    cross = np.linalg.norm(y.T @ x) ** 2  # Frobenius
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


@dataclass(frozen=True)
class LayerDrift:
    """Drift at one layer: mean principal angle (radians) and linear CKA."""

    mpa: float
    cka: float


def drift_by_layer(
    base: nn.Module, finetuned: nn.Module, batches: Sequence[Batch], layers: Sequence[int], k: int
) -> dict[int, LayerDrift]:
    """MPA and CKA between base and fine-tuned hidden states at each layer.

    Args:
        base: the model before fine-tuning.
        finetuned: the model after; same architecture.
        batches: fixed batches (labels are ignored).
        layers: hidden-state indices (negative from the end).
        k: PCA subspace dimension for the MPA.

    Returns:
        ``{layer: LayerDrift}`` keyed by the non-negative layer index.
    """
    xs = hidden_states(base, batches, layers)
    ys = hidden_states(finetuned, batches, layers)
    return {
        layer: LayerDrift(mean_principal_angle(xs[layer], ys[layer], k), linear_cka(xs[layer], ys[layer]))
        for layer in xs
    }
