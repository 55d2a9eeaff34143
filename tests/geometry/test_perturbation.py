import math

import pytest
import torch

from overtraining.geometry.perturbation import (
    add_gaussian_noise_,
    evaluate_loss,
    noise_scale,
    perturbation_sensitivity,
    restored,
    unique_parameters,
)


def test_gamma_zero_is_the_base_loss_and_leaves_the_model_bit_identical(model, batches, state_bits):
    before = state_bits(model)
    result = perturbation_sensitivity(model, batches, gammas=[0.0], seeds=2)
    assert result.losses[0] == (result.base_loss, result.base_loss)
    assert result.summary()[0.0]["delta_loss_mean"] == 0.0
    assert state_bits(model) == before


@pytest.mark.parametrize("mode", ["std", "norm"])
def test_positive_gamma_changes_the_loss_and_leaves_the_model_bit_identical(model, batches, state_bits, mode):
    model.train()
    before = state_bits(model)
    result = perturbation_sensitivity(model, batches, gammas=[0.5, 2.0], seeds=2, mode=mode)
    stats = result.summary()
    assert all(loss != result.base_loss for row in result.losses for loss in row)
    assert stats[2.0]["loss_std"] > 0  # the two seeds draw different noise
    assert stats[2.0]["ppl_mean"] == pytest.approx(math.exp(result.base_loss) + stats[2.0]["delta_ppl_mean"])
    assert state_bits(model) == before
    assert model.training  # training flag handed back


def test_same_seed_same_noise_at_every_gamma(model, batches):
    """Common random numbers: the noise of seed s at gamma is gamma times one eps."""
    params = unique_parameters(model)
    deltas = []
    for gamma in (0.1, 0.3):
        with restored(params) as start:
            add_gaussian_noise_(params, [gamma * noise_scale(p, "std") for p in params], seed=7)
            deltas.append(torch.cat([(p - s).detach().flatten() for p, s in zip(params, start, strict=True)]))
    torch.testing.assert_close(deltas[1], 3 * deltas[0], rtol=1e-4, atol=1e-6)


def test_tied_embedding_is_perturbed_once(tied_llama):
    params = unique_parameters(tied_llama)
    emb = tied_llama.model.embed_tokens.weight
    assert tied_llama.lm_head.weight is emb
    assert sum(p is emb for p in params) == 1
    with restored(params):
        start = emb.detach().clone()
        add_gaussian_noise_(params, [0.3 * noise_scale(p, "std") for p in params], seed=0)
        ratio = float((emb.detach() - start).std() / start.std())
    assert ratio == pytest.approx(0.3, rel=0.05)  # perturbed twice would give ~0.42 or 0.6


def test_norm_mode_scale_is_rms_and_unknown_mode_suggests():
    x = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert noise_scale(x, "norm") == pytest.approx(5.0 / 2.0)
    assert noise_scale(torch.ones(5), "std") == 0.0
    with pytest.raises(ValueError, match="did you mean 'std'"):
        noise_scale(x, "sdt")


def test_evaluate_loss_is_token_weighted(model, batches):
    full = evaluate_loss(model, batches)
    parts = [evaluate_loss(model, [b]) for b in batches]
    counts = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    assert full == pytest.approx(sum(p * n for p, n in zip(parts, counts, strict=True)) / sum(counts), rel=1e-6)
