"""Config of the ``sharpness`` Hydra group and the two entry points the pipeline calls.

    python -m overtraining.run sharpness=default   # perturbation + KL proxy + int8/4/3 RTN (cheap)
    python -m overtraining.run sharpness=full      # + top Hessian eigenvalue and trace
    python -m overtraining.run sharpness=none      # no geometry probes

``GeometryConfig`` is the typed schema (the lead registers it in the ConfigStore; the
YAMLs live in ``conf/sharpness/``). ``num_batches``, ``batch_size`` and ``seq_len`` tell
the caller how to build the fixed batches; the estimators use every batch they are given.

- ``measure_checkpoint(model, batches, cfg)``: the selected single-model estimators, as
  flat metric names (``perturb/gamma=0.1/delta_loss_mean``, ``sharpness/kl``, ...).
- ``measure_pair(base, finetuned, batches, cfg)``: drift per layer and the loss along the
  line base -> fine-tuned (and an optional 2D slice around the base).
- ``geometry_batches(tokenizer, text, cfg)``: the fixed batches, built from ``cfg``.
- ``update_size(base_state, finetuned)``: ||theta_ft - theta_base||, global and per layer.

Every estimator runs in fp32: a bf16 model is measured on an fp32 copy (the KL proxy's
sigma = 1e-5 would round away in bf16).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from overtraining.config import GeometryConfig, with_seed
from overtraining.geometry.drift import drift_by_layer
from overtraining.geometry.landscape import interpolation_losses, random_slice
from overtraining.geometry.perturbation import Batch, perturbation_sensitivity
from overtraining.geometry.quantization import quantization_sensitivity
from overtraining.geometry.sharpness import hutchinson_trace, kl_sharpness, lanczos_top_eigenvalue, model_hvp


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
        ``sharpness/hessian_trace_se``, ``quant/base_loss``, ``quant/weight_fraction``,
        ``quant/bits=B/{loss,delta_loss,weight_rel_error}`` (only those of the selected
        estimators). Quantization runs on the fp32 model (a copy for bf16 models) and restores
        its weights bit for bit.
    """
    cfg = with_seed(cfg)
    metrics: dict[str, float] = {}
    if not cfg.estimators:
        return metrics
    if next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).float()
    if "perturbation" in cfg.estimators:
        metrics.update(_perturbation_metrics(model, batches, cfg))
    if "kl" in cfg.estimators:
        metrics["sharpness/kl"] = kl_sharpness(
            model, batches, sigma=cfg.kl_sigma, samples=cfg.kl_samples, seed=cfg.seed
        )
    if {"hessian_top", "hessian_trace"} & set(cfg.estimators):
        metrics.update(_hessian_metrics(model, batches, cfg))
    if "quantization" in cfg.estimators:
        result = quantization_sensitivity(model, batches, cfg.quant_bits, cfg.quant_group_size, cfg.quant_method)
        metrics.update(result.metrics())
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
    cfg = with_seed(cfg)
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


def geometry_batches(tokenizer, text: str, cfg: GeometryConfig) -> list[Batch]:  # tokenizer: a HF tokenizer
    """``cfg.num_batches`` fixed batches of ``cfg.batch_size`` x ``cfg.seq_len`` tokens from ``text``."""
    from overtraining.training.lm_data import fixed_batches

    need = cfg.num_batches * cfg.batch_size * cfg.seq_len * 8  # characters; enough for any tokenizer here
    ids = tokenizer(text[: max(need, 4096)], add_special_tokens=False)["input_ids"]
    return fixed_batches(np.asarray(ids, dtype=np.int64), cfg.num_batches, cfg.batch_size, cfg.seq_len)


_LAYER = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: ``"3"`` for ``...layers.3.mlp...``, else ``"embed"``/``"head"``/``"other"``."""
    m = _LAYER.search(f".{name}")
    if m:
        return m.group(1)
    if "embed" in name or ".wte" in name or ".wpe" in name:
        return "embed"
    return "head" if "lm_head" in name or "embed_out" in name else "other"


@torch.no_grad()
def update_size(base_state: Mapping[str, torch.Tensor], finetuned: nn.Module) -> dict[str, float]:
    """Size of the fine-tuning update, globally and per layer (fp32, on the base state's device).

    Args:
        base_state: the base model's ``state_dict`` (a CPU copy), same names as ``finetuned``'s.
        finetuned: the fine-tuned model (for LoRA, the merged model).

    Returns:
        ``update/norm`` = ||theta_ft - theta_base||, ``update/rel_norm`` = that over
        ||theta_base||, and ``update/layer=<L>/norm``, ``update/layer=<L>/rel_norm`` per layer.

    Raises:
        ValueError: when the parameter names differ (e.g. an unmerged PeftModel).
    """
    ft_state = finetuned.state_dict()
    if set(ft_state) != set(base_state):
        diff = sorted(set(ft_state) ^ set(base_state))[:3]
        raise ValueError(f"update_size: parameter names differ ({diff}); merge LoRA adapters first")
    sq_diff: dict[str, float] = {}
    sq_base: dict[str, float] = {}
    seen: set[int] = set()
    for name, base in base_state.items():
        ft = ft_state[name]
        if not torch.is_floating_point(base) or ft.data_ptr() in seen:  # int buffers; tied tensors once
            continue
        seen.add(ft.data_ptr())
        layer = layer_of(name)
        b = base.float()
        sq_diff[layer] = sq_diff.get(layer, 0.0) + float((ft.detach().to(b.device).float() - b).pow(2).sum())
        sq_base[layer] = sq_base.get(layer, 0.0) + float(b.pow(2).sum())
    total_diff, total_base = sum(sq_diff.values()), sum(sq_base.values())
    out = {"update/norm": total_diff**0.5, "update/rel_norm": (total_diff / total_base) ** 0.5}
    for layer in sq_diff:
        out[f"update/layer={layer}/norm"] = sq_diff[layer] ** 0.5
        out[f"update/layer={layer}/rel_norm"] = (sq_diff[layer] / max(sq_base[layer], 1e-30)) ** 0.5
    return out
