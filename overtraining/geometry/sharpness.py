"""Sharpness of a checkpoint: the KL proxy, the top Hessian eigenvalue, the Hessian trace.

- ``kl_sharpness``: Rofin et al.'s estimator, the mean over batches of
  KL(p_theta || p_theta+eps) of the next-token distributions, eps ~ N(0, sigma^2 I) on all
  parameters, sigma = 1e-5, 10 draws per batch. For small sigma it is
  ~ sigma^2 / 2 * tr(F) (F the Fisher), so it scales as sigma^2. It runs in fp32 on an
  fp32 copy when the model is bf16/fp16 (bf16 spacing near 0.02 is ~1e-4: noise of 1e-5
  would round away). The KL itself is computed from the logit shift d = z_q - z_p as
  log E_p[exp(d - E_p d)] with ``expm1``/``log1p``: the textbook sum p (log p - log q)
  subtracts two log-softmaxes whose fp32 rounding (~1e-7) exceeds a KL of ~1e-9. On the
  test model (sigma 1e-5) the textbook fp32 formula gives -4.0e-9, ours 1.07565e-8, an
  fp64 reference 1.07565e-8.
- ``lanczos_top_eigenvalue`` and ``hutchinson_trace`` are generic: they take an
  ``hvp(v: list[Tensor]) -> list[Tensor]`` closure and tensors shaped like v, so they
  are tested on a quadratic 0.5 x^T A x with known A. ``model_hvp`` builds the closure
  for a causal LM over fixed batches.

HVPs use double backward (reverse-over-reverse), the faster of the two on the
385K-parameter byte GPT-NeoX (batch 8 x 128, 2 shared CPU cores, ``benchmarks/bench_hvp.py``):
one HVP costs 3.0-3.9x a gradient, against 3.6-4.1x for torch.func ``jvp(grad(f))``
(forward-over-reverse). Double backward can also keep its first-order graph between HVPs
(``cache_graph=True``, the default), so that every further HVP is one extra backward:
2.0-2.3x a gradient. Lanczos reaches 1% of its converged top eigenvalue in 3-4 HVPs there.
HVPs run in fp32 with the math SDPA kernel (double backward is not implemented for flash /
memory-efficient attention), in eval mode; do not use torch.compile or reentrant
checkpointing around them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from overtraining.geometry.perturbation import (
    Batch,
    add_gaussian_noise_,
    derived_seed,
    eval_mode,
    gaussian_like,
    on_model_device,
    restore_,
    restored,
    target_count,
    unique_parameters,
)

HVP = Callable[[list[Tensor]], list[Tensor]]


def fp32_model(model: nn.Module) -> nn.Module:
    """``model`` itself if all its floating parameters are fp32, else an fp32 deep copy."""
    if all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point()):
        return model
    return copy.deepcopy(model).float()


def kl_from_logit_shift(logp: Tensor, shift: Tensor) -> Tensor:
    """KL(p || q) per row, where log q = log_softmax(z_p + shift) and logp = log_softmax(z_p).

    Args:
        logp: (N, V) log-probabilities of the reference distribution p.
        shift: (N, V) logit difference z_q - z_p.

    Returns:
        (N,) KL divergences, >= 0, accurate to fp32 rounding of ``shift`` itself.
    """
    p = logp.exp()  # (N, V)
    centred = shift - (p * shift).sum(-1, keepdim=True)  # (N, V): E_p[centred] = 0
    return torch.log1p((p * torch.expm1(centred)).sum(-1)).clamp_min(0.0)  # (N,)


def _position_mask(batch: Batch) -> Tensor:
    """(B, T) bool: positions whose next-token prediction counts (non-padding)."""
    mask = batch.get("attention_mask")
    return torch.ones_like(batch["input_ids"], dtype=torch.bool) if mask is None else mask.bool()


@torch.no_grad()
def kl_sharpness(
    model: nn.Module, batches: Sequence[Batch], sigma: float = 1e-5, samples: int = 10, seed: int = 0
) -> float:
    """Mean over batches of E_eps KL(p_theta || p_theta+eps) over non-padding positions.

    Every position with ``attention_mask == 1`` (all if absent) counts, prompt or not:
    the KL needs no labels. Draw ``s`` of batch ``b`` uses ``derived_seed(seed, b, s)``, so
    two sigmas with one seed share their eps directions. The model is left bit-identical.

    Args:
        model: a causal LM (any dtype; computed on an fp32 copy unless already fp32).
        batches: fixed batches.
        sigma: noise standard deviation (absolute, the same for every parameter).
        samples: noise draws per batch.
        seed: base seed.

    Returns:
        The KL proxy in nats per token.

    Raises:
        ValueError: if ``samples < 1`` or ``sigma < 0``.
    """
    if samples < 1 or sigma < 0:
        raise ValueError(f"need samples >= 1 and sigma >= 0, got {samples}, {sigma}")
    work = fp32_model(model)
    params = unique_parameters(work)
    per_batch = []
    with restored(params) as snapshot, eval_mode(work):
        for b, batch in enumerate(on_model_device(work, batches)):
            inputs = {k: v for k, v in batch.items() if k != "labels"}  # no loss needed
            mask = _position_mask(batch)  # (B, T)
            clean = work(**inputs).logits.float()[mask]  # (N, V)
            logp = torch.log_softmax(clean, dim=-1)  # (N, V)
            kls = []
            for s in range(samples):
                add_gaussian_noise_(params, [sigma] * len(params), derived_seed(seed, b, s))
                noisy = work(**inputs).logits.float()[mask]  # (N, V)
                restore_(params, snapshot)
                kls.append(float(kl_from_logit_shift(logp, noisy - clean).mean()))
            per_batch.append(float(np.mean(kls)))
    return float(np.mean(per_batch))


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """Inner product of two tensor lists, accumulated in fp64."""
    return float(sum((x * y).sum(dtype=torch.float64) for x, y in zip(a, b, strict=True)))


def _combine(a: Sequence[Tensor], b: Sequence[Tensor], beta: float) -> list[Tensor]:
    """a + beta * b for tensor lists."""
    return [x + beta * y for x, y in zip(a, b, strict=True)]


@dataclass(frozen=True)
class EigenResult:
    """Top eigenvalue estimate.

    Attributes:
        value: largest (algebraic) Ritz value.
        num_hvps: Hessian-vector products used.
        converged: whether the residual bound met the tolerance.
        history: the top Ritz value after each HVP.
    """

    value: float
    num_hvps: int
    converged: bool
    history: tuple[float, ...]


def lanczos_top_eigenvalue(
    hvp: HVP,
    like: Sequence[Tensor],
    tol: float = 1e-3,
    max_iter: int = 50,
    seed: int = 0,
    reorthogonalize: bool = False,
) -> EigenResult:
    """Largest eigenvalue of a symmetric operator by the Lanczos iteration.

    Stops when the Ritz residual |beta_k * y_k[-1]| (a bound on the distance to an
    eigenvalue) is <= tol * |theta|, or on an invariant subspace. Without
    reorthogonalisation only two vectors are kept (memory 3x the parameters); the top
    Ritz value still converges (lost orthogonality only duplicates converged values).

    Args:
        hvp: v -> H v on lists of tensors.
        like: tensors with the shapes, dtypes and devices of v.
        tol: relative tolerance on the Ritz residual.
        max_iter: maximum number of HVPs.
        seed: seed of the random start vector.
        reorthogonalize: full reorthogonalisation (keeps every Lanczos vector).

    Returns:
        An EigenResult.
    """
    v = [e.to(t.dtype) for e, t in zip(gaussian_like(like, seed), like, strict=True)]
    v = [x / math.sqrt(_dot(v, v)) for x in v]
    v_prev, beta, basis = None, 0.0, [v]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[float] = []
    converged = False
    for _ in range(max_iter):
        w = hvp(v)
        alphas.append(_dot(w, v))
        w = _combine(w, v, -alphas[-1])
        if v_prev is not None:
            w = _combine(w, v_prev, -beta)
        for q in basis if reorthogonalize else ():
            w = _combine(w, q, -_dot(w, q))
        beta = math.sqrt(max(_dot(w, w), 0.0))
        ritz, vecs = scipy.linalg.eigh_tridiagonal(np.array(alphas), np.array(betas))
        history.append(float(ritz[-1]))
        if beta * abs(vecs[-1, -1]) <= tol * abs(ritz[-1]) or beta <= 1e-12 * abs(ritz[-1]):
            converged = True
            break
        betas.append(beta)
        v_prev, v = v, [x / beta for x in w]
        if reorthogonalize:
            basis.append(v)
    return EigenResult(history[-1], len(history), converged, tuple(history))


@dataclass(frozen=True)
class TraceResult:
    """Hutchinson trace estimate: ``value`` +- ``stderr`` (standard error of the mean)."""

    value: float
    stderr: float
    num_hvps: int


def hutchinson_trace(hvp: HVP, like: Sequence[Tensor], probes: int = 20, seed: int = 0) -> TraceResult:
    """tr(H) ~ mean_i z_i^T H z_i with Rademacher probes z_i.

    Args:
        hvp: v -> H v on lists of tensors.
        like: tensors with the shapes, dtypes and devices of v.
        probes: number of probes (>= 2 for a standard error).
        seed: probe ``i`` uses ``derived_seed(seed, i)``.

    Returns:
        A TraceResult; stderr = std(samples, ddof=1) / sqrt(probes).

    Raises:
        ValueError: if ``probes < 2``.
    """
    if probes < 2:
        raise ValueError(f"need probes >= 2 for a standard error, got {probes}")
    samples = []
    for i in range(probes):
        gen = torch.Generator(device=like[0].device).manual_seed(derived_seed(seed, i))
        z = [(torch.randint(0, 2, t.shape, generator=gen, device=t.device) * 2 - 1).to(t.dtype) for t in like]
        samples.append(_dot(z, hvp(z)))
    x = np.asarray(samples)
    return TraceResult(float(x.mean()), float(x.std(ddof=1) / math.sqrt(probes)), probes)


def model_hvp(model: nn.Module, batches: Sequence[Batch], cache_graph: bool = True) -> tuple[HVP, list[Tensor]]:
    """Hessian-vector product of the token-weighted mean loss over ``batches``.

    H v = sum_b (n_b / N) H_b v, n_b the target tokens of batch b, by double backward in
    fp32 (an fp32 copy for bf16/fp16 models), math SDPA kernel, eval mode. The model's
    parameters are not modified (the closure differentiates detached aliases).

    Args:
        model: a causal LM.
        batches: fixed batches with ``labels``.
        cache_graph: keep each batch's first-order graph between calls: every HVP after
            the first costs one backward instead of forward + two backwards, at the
            memory of one autograd graph per batch (held until the closure is freed).

    Returns:
        ``(hvp, params)``: the closure and the parameter tensors (templates for v).
    """
    work = fp32_model(model)
    batches = on_model_device(work, batches)
    names, params = zip(*[(n, p.detach().requires_grad_()) for n, p in work.named_parameters()], strict=True)
    params = list(params)
    counts = [target_count(b) for b in batches]
    weights = [n / sum(counts) for n in counts]
    cache: dict[int, tuple[Tensor, ...]] = {}

    def first_order(i: int) -> tuple[Tensor, ...]:
        if i in cache:
            return cache[i]
        with sdpa_kernel(SDPBackend.MATH), eval_mode(work):
            loss = functional_call(work, dict(zip(names, params, strict=True)), args=(), kwargs=batches[i]).loss
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True, materialize_grads=True)
        if cache_graph:
            cache[i] = grads
        return grads

    def hvp(v: list[Tensor]) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in params]
        for i, weight in enumerate(weights):
            hv = torch.autograd.grad(
                first_order(i), params, grad_outputs=v, retain_graph=cache_graph,
                allow_unused=True, materialize_grads=True,
            )  # fmt: skip
            out = [o + weight * h.detach() for o, h in zip(out, hv, strict=True)]
        return out

    return hvp, [p.detach() for p in params]


def hessian_top_eigenvalue(
    model: nn.Module, batches: Sequence[Batch], tol: float = 1e-3, max_iter: int = 50, seed: int = 0
) -> EigenResult:
    """Top eigenvalue of the loss Hessian over ``batches`` (Lanczos on ``model_hvp``)."""
    hvp, params = model_hvp(model, batches)
    return lanczos_top_eigenvalue(hvp, params, tol=tol, max_iter=max_iter, seed=seed)


def hessian_trace(model: nn.Module, batches: Sequence[Batch], probes: int = 20, seed: int = 0) -> TraceResult:
    """Hutchinson estimate of the loss-Hessian trace over ``batches``."""
    hvp, params = model_hvp(model, batches)
    return hutchinson_trace(hvp, params, probes=probes, seed=seed)
