"""Config of the ``sharpness`` Hydra group and the two entry points the pipeline calls.

    python -m overtraining.run sharpness=default   # perturbation + KL proxy (cheap)
    python -m overtraining.run sharpness=full      # + top Hessian eigenvalue and trace
    python -m overtraining.run sharpness=none      # no geometry probes

``GeometryConfig`` is the typed schema (the lead registers it in the ConfigStore; the
YAMLs live in ``conf/sharpness/``). ``num_batches``, ``batch_size`` and ``seq_len`` tell
the caller how to build the fixed batches; the estimators use every batch they are given.

- ``measure_checkpoint(model, batches, cfg)``: the selected single-model estimators, as
  flat metric names (``perturb/gamma=0.1/delta_loss_mean``, ``sharpness/kl``, ...).
- ``measure_pair(base, finetuned, batches, cfg)``: drift per layer and the loss along the
  line base -> fine-tuned (and an optional 2D slice around the base).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from overtraining.geometry.drift import drift_by_layer
from overtraining.geometry.landscape import interpolation_losses, random_slice
from overtraining.geometry.perturbation import PERTURB_MODES, Batch, perturbation_sensitivity
from overtraining.geometry.sharpness import hutchinson_trace, kl_sharpness, lanczos_top_eigenvalue, model_hvp

ESTIMATORS = ("perturbation", "kl", "hessian_top", "hessian_trace")


def check_choice(value: str, choices: Sequence[str], what: str) -> None:
    """Raise a ValueError naming the closest valid choice if ``value`` is not one of ``choices``."""
    if value in choices:
        return
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {what} {value!r}; choose from {list(choices)}.{hint}")


@dataclass
class GeometryConfig:
    """Geometry probes of a checkpoint (Hydra group ``sharpness``).

    Attributes:
        estimators: subset of ESTIMATORS run by ``measure_checkpoint``.
        num_batches: fixed batches the caller builds (from held-out pretraining text).
        batch_size: sequences per batch.
        seq_len: tokens per sequence.
        perturb_gammas: relative Gaussian noise magnitudes.
        perturb_seeds: noise draws per gamma.
        perturb_mode: "std" (gamma * std(theta_i)) or "norm" (gamma * ||theta_i|| / sqrt(n)).
        kl_sigma: absolute noise std of the KL proxy.
        kl_samples: noise draws per batch for the KL proxy.
        eig_tol: relative Ritz-residual tolerance of Lanczos.
        eig_max_iter: most HVPs Lanczos may use.
        trace_probes: Rademacher probes of Hutchinson's estimator.
        hvp_cache_graph: keep the first-order graph between HVPs (faster, more memory).
        drift_layers: hidden-state indices for drift (0 = embeddings, -1 = last).
        drift_k: PCA subspace dimension of the mean principal angle.
        landscape_alphas: interpolation coefficients base -> fine-tuned.
        landscape_2d_points: grid points per axis of a 2D slice around the base (0 = off).
        landscape_2d_span: the 2D grid spans [-span, span] in filter-normalised units.
        seed: seed of every noise draw, probe and direction.
        on_finetuned: ``run.py`` also runs ``measure_checkpoint`` on the fine-tuned model.
        text: the text the batches come from: an embedded corpus split (ood_prose,
            id_heldout, ...) or a Hub text (wikitext2, c4; the Pythia-70M reproduction
            measured perturbation on WikiText-2).
    """

    estimators: list[str] = field(default_factory=lambda: ["perturbation", "kl"])
    num_batches: int = 4
    batch_size: int = 8
    seq_len: int = 128
    perturb_gammas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    perturb_seeds: int = 3
    perturb_mode: str = "std"
    kl_sigma: float = 1e-5
    kl_samples: int = 10
    eig_tol: float = 1e-3
    eig_max_iter: int = 30
    trace_probes: int = 20
    hvp_cache_graph: bool = True
    drift_layers: list[int] = field(default_factory=lambda: [-1])
    drift_k: int = 16
    landscape_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    landscape_2d_points: int = 0
    landscape_2d_span: float = 1.0
    seed: int = 0
    on_finetuned: bool = False
    text: str = "ood_prose"

    def __post_init__(self) -> None:
        for name in self.estimators:
            check_choice(name, ESTIMATORS, "geometry estimator")
        check_choice(self.perturb_mode, PERTURB_MODES, "perturb_mode")
        positive = {"num_batches": self.num_batches, "batch_size": self.batch_size, "seq_len": self.seq_len,
                    "perturb_seeds": self.perturb_seeds, "kl_samples": self.kl_samples,
                    "eig_max_iter": self.eig_max_iter, "drift_k": self.drift_k}  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.trace_probes < 2:
            raise ValueError(f"trace_probes must be >= 2 (for a standard error), got {self.trace_probes}")


def _perturbation_metrics(model: nn.Module, batches: Sequence[Batch], cfg: GeometryConfig) -> dict[str, float]:
    result = perturbation_sensitivity(
        model, batches, cfg.perturb_gammas, seeds=cfg.perturb_seeds, mode=cfg.perturb_mode, seed=cfg.seed
    )
    metrics = {"perturb/base_loss": result.base_loss, "perturb/base_ppl": float(np.exp(result.base_loss))}
    for gamma, stats in result.summary().items():
        metrics.update({f"perturb/gamma={gamma:g}/{name}": value for name, value in stats.items()})
    return metrics


def _hessian_metrics(model: nn.Module, batches: Sequence[Batch], cfg: GeometryConfig) -> dict[str, float]:
    hvp, params = model_hvp(model, batches, cache_graph=cfg.hvp_cache_graph)  # one graph for both
    metrics: dict[str, float] = {}
    if "hessian_top" in cfg.estimators:
        top = lanczos_top_eigenvalue(hvp, params, tol=cfg.eig_tol, max_iter=cfg.eig_max_iter, seed=cfg.seed)
        metrics.update({"sharpness/hessian_top": top.value, "sharpness/hessian_top_hvps": float(top.num_hvps),
                        "sharpness/hessian_top_converged": float(top.converged)})  # fmt: skip
    if "hessian_trace" in cfg.estimators:
        trace = hutchinson_trace(hvp, params, probes=cfg.trace_probes, seed=cfg.seed)
        metrics.update({"sharpness/hessian_trace": trace.value, "sharpness/hessian_trace_se": trace.stderr})
    return metrics


def measure_checkpoint(model: nn.Module, batches: Sequence[Batch], cfg: GeometryConfig) -> dict[str, float]:
    """Run the estimators selected in ``cfg`` on one model; the model is left unchanged.

    Args:
        model: a causal LM (bf16/fp16 models get fp32 copies for the KL and HVPs).
        batches: fixed batches with ``input_ids``, ``labels``, optional ``attention_mask``.
        cfg: the geometry config.

    Returns:
        Flat metrics: ``perturb/base_loss``, ``perturb/base_ppl``,
        ``perturb/gamma=G/{loss,delta_loss,ppl,delta_ppl}_{mean,std}``, ``sharpness/kl``,
        ``sharpness/hessian_top``, ``sharpness/hessian_top_hvps``,
        ``sharpness/hessian_top_converged``, ``sharpness/hessian_trace``,
        ``sharpness/hessian_trace_se`` (only those of the selected estimators).
    """
    metrics: dict[str, float] = {}
    if "perturbation" in cfg.estimators:
        metrics.update(_perturbation_metrics(model, batches, cfg))
    if "kl" in cfg.estimators:
        metrics["sharpness/kl"] = kl_sharpness(
            model, batches, sigma=cfg.kl_sigma, samples=cfg.kl_samples, seed=cfg.seed
        )
    if {"hessian_top", "hessian_trace"} & set(cfg.estimators):
        metrics.update(_hessian_metrics(model, batches, cfg))
    return metrics


def measure_pair(
    base: nn.Module, finetuned: nn.Module, batches: Sequence[Batch], cfg: GeometryConfig
) -> dict[str, float | list]:
    """Drift and landscape between a base and a fine-tuned model; neither is changed.

    Args:
        base: the model before fine-tuning.
        finetuned: the model after; same architecture.
        batches: fixed batches (labels needed for the landscape).
        cfg: the geometry config (empty ``drift_layers`` / ``landscape_alphas`` skip those).

    Returns:
        ``drift/mpa/layer=L``, ``drift/cka/layer=L`` (L non-negative), ``drift/mpa_mean``,
        ``drift/cka_mean``, ``landscape/alphas``, ``landscape/losses`` (lists) and, if
        ``landscape_2d_points > 0``, ``landscape2d/coords`` and ``landscape2d/losses``
        (a nested list, ``[i][j]`` at x = coords[i], y = coords[j]).
    """
    metrics: dict[str, float | list] = {}
    if cfg.drift_layers:
        drift = drift_by_layer(base, finetuned, batches, cfg.drift_layers, cfg.drift_k)
        for layer, d in drift.items():
            metrics[f"drift/mpa/layer={layer}"] = d.mpa
            metrics[f"drift/cka/layer={layer}"] = d.cka
        metrics["drift/mpa_mean"] = float(np.mean([d.mpa for d in drift.values()]))
        metrics["drift/cka_mean"] = float(np.mean([d.cka for d in drift.values()]))
    if cfg.landscape_alphas:
        metrics["landscape/alphas"] = [float(a) for a in cfg.landscape_alphas]
        metrics["landscape/losses"] = interpolation_losses(base, finetuned, batches, cfg.landscape_alphas)
    if cfg.landscape_2d_points > 0:
        coords = np.linspace(-cfg.landscape_2d_span, cfg.landscape_2d_span, cfg.landscape_2d_points).tolist()
        metrics["landscape2d/coords"] = coords
        metrics["landscape2d/losses"] = random_slice(base, batches, coords, seed=cfg.seed).tolist()
    return metrics
