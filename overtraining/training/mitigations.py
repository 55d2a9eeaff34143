"""Mitigations of forgetting inside the SFT loop (``mitigation`` group; docs/mitigations.md).

The loop of ``overtraining.training.sft`` asks an ``SFTMitigation`` three things per update:

* ``replay``: rows of pretraining-like text whose next-token targets make up a fraction
  ``f`` of the update's trained tokens (Bethune et al. 2025). Their summed NLL joins the
  SFT NLL over one denominator, the update's SFT plus replay targets::

      L = (sum_sft nll + sum_replay nll) / (N_sft + N_replay),   N_replay = round(f N_sft / (1 - f))

* ``l2`` / ``ewc``: a penalty added to the loss of the update's last micro-batch::

      l2:  lambda * sum_i (theta_i - theta_base,i)^2                  (L2-SP, Li et al. 2018)
      ewc: lambda * sum_i F_i (theta_i - theta_base,i)^2              (Kirkpatrick et al. 2017)

  with ``F_i = (1/N) sum_b (dL_b / dtheta_i)^2`` the diagonal Fisher of the base model over
  N batches of pretraining-like text (``diagonal_fisher``), optionally divided by its mean;

* ``sam``: after the backward at theta, ascend to ``theta + rho g / ||g||``, recompute the
  gradient there, restore theta bit for bit, and let the optimizer step with that gradient
  (Foret et al. 2021; ``sam_second_pass``).

WiSE-FT (post hoc weight interpolation) is not in the loop: ``interpolate_state`` is used by
the cell's measure step. Everything here works on CPU and on one GPU; replay and the
penalties also under DeepSpeed ZeRO-0/2 (the refusals are in ``overtraining.config``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from overtraining.data.chat import IGNORE_INDEX

FISHER_CODE_VERSION = "fisher-v1"


# ---------------------------------------------------------------------------- replay
def replay_targets(fraction: float, sft_targets: int) -> int:
    """Replay targets of one update: ``round(f * N_sft / (1 - f))``, so that ``N_r / (N_sft + N_r) ~ f``.

    >>> replay_targets(0.2, 400)
    100
    """
    if fraction <= 0 or sft_targets <= 0:
        return 0
    return int(round(fraction * sft_targets / (1.0 - fraction)))


def rank_share(total: int, world: int, rank: int) -> int:
    """This rank's part of ``total`` items split over ``world`` ranks (the first ranks take the remainder)."""
    return total // world + (1 if rank < total % world else 0)


def replay_rows(tokens: np.ndarray, n_targets: int, seq_len: int, seed: int, step: int, rank: int = 0) -> dict | None:
    """``n_targets`` next-token targets of pretraining-like text, as right-padded LM rows.

    Each row is a random window of at most ``seq_len + 1`` tokens (``seq_len`` targets); the
    last row is shorter so the targets add up to exactly ``n_targets``. The windows are a
    pure function of (seed, step, rank), so a resumed run replays the same text.

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels`` (R, seq_len + 1), labels
        ``IGNORE_INDEX`` on padding; None when ``n_targets`` is 0.
    """
    if n_targets <= 0:
        return None
    sizes = [seq_len] * (n_targets // seq_len) + ([n_targets % seq_len] if n_targets % seq_len else [])
    rng = np.random.default_rng([seed, step, rank, 7])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=len(sizes))
    ids = np.zeros((len(sizes), seq_len + 1), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, (s, n) in enumerate(zip(starts, sizes, strict=True)):
        ids[r, : n + 1] = tokens[s : s + n + 1]
        mask[r, : n + 1] = 1
    labels = np.where(mask == 1, ids, IGNORE_INDEX)
    as_t = torch.from_numpy
    return {"input_ids": as_t(ids), "attention_mask": as_t(mask), "labels": as_t(labels)}


# ---------------------------------------------------------------------------- penalties
def anchor_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """theta_base: an fp32 copy of the trainable parameters, by name, on their device."""
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def penalty(
    params: Iterable[tuple[str, torch.Tensor]],
    anchor: Mapping[str, torch.Tensor],
    strength: float,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``lambda * sum_i w_i (theta_i - theta_base,i)^2`` in fp32 (w = 1: L2-SP; w = F: EWC).

    Its gradient is ``2 lambda w_i (theta_i - theta_base,i)``.

    Args:
        params: (name, parameter) pairs; names absent from ``anchor`` are skipped.
        anchor: theta_base by name (fp32).
        strength: lambda.
        weights: F by name (EWC), or None (L2-SP).
    """
    total = None
    for name, p in params:
        if name not in anchor:
            continue
        sq = (p.float() - anchor[name]).square()
        term = (sq * weights[name]).sum() if weights is not None else sq.sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no parameter of the model has an anchor: the penalty would be empty")
    return strength * total


def diagonal_fisher(model: torch.nn.Module, batches: list[dict], normalize: bool = False) -> dict[str, torch.Tensor]:
    """The diagonal empirical Fisher ``F_i = (1/N) sum_b (dL_b / dtheta_i)^2`` over N LM batches.

    ``L_b`` is the mean next-token loss of batch ``b`` (``labels = input_ids``). The model is
    run in eval mode and its ``.grad`` fields are left untouched (``torch.autograd.grad``).

    Args:
        model: the base causal LM.
        batches: dicts with ``input_ids`` and ``labels`` (B, T).
        normalize: divide F by its mean over every parameter entry (so mean(F) = 1).

    Returns:
        F by parameter name (fp32, on the parameters' device), for the trainable parameters.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    device = named[0][1].device
    fisher = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in named}
    was_training = model.training
    model.eval()
    for batch in batches:
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss.float()
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        for (n, _), g in zip(named, grads, strict=True):
            if g is not None:
                fisher[n] += g.float().square()
    model.train(was_training)
    for f in fisher.values():
        f /= len(batches)
    if normalize:
        mean = sum(float(f.sum()) for f in fisher.values()) / sum(f.numel() for f in fisher.values())
        if mean > 0:
            for f in fisher.values():
                f /= mean
    return fisher


def cached_fisher(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], bool]:
    """The Fisher saved at ``path``, else ``compute()`` saved there atomically; (F, hit)."""
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True), True
        except (OSError, RuntimeError, EOFError):
            pass  # a damaged file is recomputed
    fisher = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({n: f.detach().cpu() for n, f in fisher.items()}, tmp)
    os.replace(tmp, path)
    return fisher, False


# ---------------------------------------------------------------------------- SAM
@torch.no_grad()
def sam_ascent(params: list[torch.Tensor], rho: float) -> None:
    """Moves the parameters to ``theta + rho * g / ||g||`` (g: their ``.grad``, ||g|| over all of them)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = rho / (float(norm) + 1e-12)
    for p in params:
        if p.grad is not None:
            p.add_(p.grad.to(p.dtype), alpha=scale)


def sam_second_pass(params: list[torch.Tensor], rho: float, backward_again: Callable[[], object]) -> None:
    """SAM's second pass: with ``g = grad L(theta)`` in ``.grad``, leave ``grad L(theta + rho g / ||g||)`` there.

    Ascends (``sam_ascent``), clears the gradients, calls ``backward_again()`` (the same
    update's forward and backward at the perturbed point), then restores theta from a copy
    (bit for bit); the optimizer then steps from theta with the perturbed point's gradient.
    """
    saved = [p.detach().clone() for p in params]
    sam_ascent(params, rho)
    for p in params:
        p.grad = None
    backward_again()
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)


# ---------------------------------------------------------------------------- WiSE-FT
@torch.no_grad()
def interpolate_state(
    base: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """WiSE-FT: ``theta(alpha) = theta_base + alpha (theta_ft - theta_base)``, per tensor.

    ``torch.lerp`` in fp32 for half-precision tensors: alpha = 0 gives the base tensors bit
    for bit and alpha = 1 the fine-tuned ones. Non-float tensors (buffers) are the
    fine-tuned model's. The result is on the fine-tuned tensors' devices and dtypes.
    """
    out = {}
    for name, ft in finetuned.items():
        if not ft.is_floating_point() or name not in base:
            out[name] = ft.clone()
            continue
        b = base[name].to(ft.device)
        if ft.dtype == torch.float32:
            out[name] = torch.lerp(b.float(), ft, alpha)
        else:
            out[name] = torch.lerp(b.float(), ft.float(), alpha).to(ft.dtype)
    return out


# ---------------------------------------------------------------------------- the loop's view
@dataclass
class SFTMitigation:
    """What the SFT loop applies (``overtraining.cell.build_mitigation``; the default: plain SFT).

    Attributes:
        name: none | replay | l2 | ewc | sam | wise (wise acts after SFT, not here).
        strength: f (replay), lambda (l2, ewc) or rho (sam).
        replay_tokens: the token array replay rows are cut from (replay only).
        seq_len: targets per replay row.
        seed: the replay windows' seed.
        fisher: F by parameter name (ewc only; moved to the parameters' device at ``attach``).
        anchor: theta_base by name, fp32 (l2, ewc; set by ``attach``).
    """

    name: str = "none"
    strength: float = 0.0
    replay_tokens: np.ndarray | None = None
    seq_len: int = 128
    seed: int = 0
    fisher: dict[str, torch.Tensor] | None = None
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def penalised(self) -> bool:
        return self.name in ("l2", "ewc") and self.strength > 0

    @property
    def replays(self) -> bool:
        return self.name == "replay" and self.strength > 0 and self.replay_tokens is not None

    @property
    def two_pass(self) -> bool:
        return self.name == "sam" and self.strength > 0

    def attach(self, model: torch.nn.Module) -> None:
        """Takes theta_base from ``model`` (before any update) and puts F beside it."""
        if not self.penalised:
            return
        self.anchor = anchor_of(model)
        if self.fisher is not None:
            missing = sorted(self.anchor.keys() - self.fisher.keys())
            if missing:
                raise ValueError(f"the Fisher has no entry for {missing[0]}: delete the cached Fisher and rerun")
            self.fisher = {n: self.fisher[n].to(a.device, torch.float32) for n, a in self.anchor.items()}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        """The L2-SP or EWC penalty of ``model``'s parameters (``penalty``)."""
        weights = self.fisher if self.name == "ewc" else None
        return penalty(model.named_parameters(), self.anchor, self.strength, weights)
