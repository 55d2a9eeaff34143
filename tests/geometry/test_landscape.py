import numpy as np
import pytest

from overtraining.geometry.landscape import filter_normalized_direction, interpolation_losses, random_slice
from overtraining.geometry.perturbation import evaluate_loss, unique_parameters


def test_interpolation_endpoints_are_the_two_models(model, tiny_neox, batches, state_bits):
    finetuned = tiny_neox(1)
    before = (state_bits(model), state_bits(finetuned))
    losses = interpolation_losses(model, finetuned, batches, alphas=[0.0, 0.5, 1.0])
    assert losses[0] == evaluate_loss(model, batches)
    assert losses[2] == evaluate_loss(finetuned, batches)
    assert losses[1] not in (losses[0], losses[2])
    assert (state_bits(model), state_bits(finetuned)) == before


def test_filter_normalized_direction_matches_filter_norms(model):
    params = unique_parameters(model)
    for p, d in zip(params, filter_normalized_direction(params, seed=0), strict=True):
        if p.dim() == 1:
            assert not d.any()
        else:
            np.testing.assert_allclose(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5)


def test_random_slice_centre_is_the_model_loss(model, batches, state_bits):
    before = state_bits(model)
    grid = random_slice(model, batches, coords=[-0.5, 0.0, 0.5], seed=0)
    assert grid.shape == (3, 3)
    assert grid[1, 1] == pytest.approx(evaluate_loss(model, batches), abs=1e-6)
    assert len(np.unique(grid)) == 9
    assert state_bits(model) == before
