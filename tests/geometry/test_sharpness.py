import copy

import pytest
import torch

from overtraining.geometry.perturbation import add_gaussian_noise_, derived_seed, unique_parameters
from overtraining.geometry.sharpness import (
    hutchinson_trace,
    kl_sharpness,
    lanczos_top_eigenvalue,
    model_hvp,
)


def quadratic(n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (n, n) symmetric A = Q diag(spectrum) Q^T with top eigenvalue 10 and bottom -12.

    The loss is 0.5 x^T A x, whose Hessian is A. A most-negative eigenvalue larger in
    magnitude than the top one catches an estimator that returns max |lambda|.
    """
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    spectrum = torch.linspace(-12.0, 9.0, n, dtype=torch.float64)
    spectrum[-1] = 10.0
    return q @ torch.diag(spectrum) @ q.T, spectrum


def quadratic_hvp(a: torch.Tensor):
    """HVP of 0.5 x^T A x by autograd on a loss function of a list of tensors (x split in two)."""
    x = [torch.zeros(20, dtype=a.dtype, requires_grad=True), torch.zeros(30, dtype=a.dtype, requires_grad=True)]

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        flat = torch.cat(x)
        (g,) = torch.autograd.grad(0.5 * flat @ a @ flat, [flat], create_graph=True)
        return list(torch.autograd.grad(g, x, grad_outputs=torch.cat(v)))

    return hvp, [t.detach() for t in x]


@pytest.mark.parametrize("reorthogonalize", [False, True])
def test_lanczos_finds_the_top_eigenvalue(reorthogonalize):
    a, spectrum = quadratic()
    hvp, like = quadratic_hvp(a)
    result = lanczos_top_eigenvalue(hvp, like, tol=1e-5, max_iter=50, reorthogonalize=reorthogonalize)
    assert result.converged
    assert result.value == pytest.approx(float(spectrum.max()), rel=1e-4)
    assert result.num_hvps == len(result.history) < 50


def test_hutchinson_is_within_three_standard_errors_of_the_trace():
    a, spectrum = quadratic()
    hvp, like = quadratic_hvp(a)
    result = hutchinson_trace(hvp, like, probes=100, seed=0)
    assert result.stderr > 0
    assert abs(result.value - float(spectrum.sum())) < 3 * result.stderr


def test_model_hvp_matches_finite_differences_and_leaves_the_model_unchanged(model, batches, state_bits):
    before = state_bits(model)
    hvp, params = model_hvp(model, batches, cache_graph=True)
    gen = torch.Generator().manual_seed(0)
    v = [torch.randn(p.shape, generator=gen) for p in params]
    hv = hvp(v)
    assert all(torch.equal(a, b) for a, b in zip(hv, hvp(v), strict=True))  # cached graph, same answer
    uncached, _ = model_hvp(model, batches, cache_graph=False)
    torch.testing.assert_close(uncached(v), hv, rtol=1e-5, atol=1e-6)
    assert state_bits(model) == before

    def grad_at(h: float) -> torch.Tensor:  # token-weighted gradient at theta + h v, in fp64
        m = copy.deepcopy(model).double()
        with torch.no_grad():
            for p, d in zip(m.parameters(), v, strict=True):
                p.add_(d.double(), alpha=h)
        counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
        loss = sum(m(**b).loss * n for b, n in zip(batches, counts, strict=True)) / sum(counts)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(m.parameters()))])

    finite = (grad_at(1e-6) - grad_at(-1e-6)) / 2e-6  # ||v|| ~ 150: h must be small
    error = torch.cat([h.flatten() for h in hv]).double() - finite
    assert float(error.norm() / finite.norm()) < 1e-3


def test_kl_is_zero_at_sigma_zero_and_scales_as_sigma_squared(model, batches, state_bits):
    before = state_bits(model)
    assert kl_sharpness(model, batches, sigma=0.0, samples=2) == 0.0
    small = kl_sharpness(model, batches, sigma=1e-5, samples=3)
    large = kl_sharpness(model, batches, sigma=3e-5, samples=3)
    assert small > 0
    assert large / small == pytest.approx(9.0, rel=0.05)
    assert state_bits(model) == before


def test_kl_matches_a_float64_reference(model, batches):
    """The naive fp32 sum p (log p - log q) is wrong at sigma = 1e-5; ours is not."""
    batch, sigma = batches[0], 1e-5
    keep = batch["attention_mask"].bool()
    ref = []
    for s in range(2):
        noisy = copy.deepcopy(model)
        params = unique_parameters(noisy)
        add_gaussian_noise_(params, [sigma] * len(params), derived_seed(0, 0, s))  # the same eps
        with torch.no_grad():
            logp = torch.log_softmax(model.double()(input_ids=batch["input_ids"]).logits[keep], -1)
            logq = torch.log_softmax(noisy.double()(input_ids=batch["input_ids"]).logits[keep], -1)
        model.float()
        ref.append(float((logp.exp() * (logp - logq)).sum(-1).mean()))
    ours = kl_sharpness(model, [batch], sigma=sigma, samples=2)
    assert ours == pytest.approx(sum(ref) / 2, rel=1e-3)


def test_kl_upcasts_a_bf16_model(model, batches):
    fp32 = kl_sharpness(model, batches, sigma=1e-5, samples=2)
    bf16 = model.to(torch.bfloat16)
    value = kl_sharpness(bf16, batches, sigma=1e-5, samples=2)
    assert next(bf16.parameters()).dtype == torch.bfloat16  # not converted in place
    assert value == pytest.approx(fp32, rel=0.2)  # bf16-rounded weights, same noise scale
