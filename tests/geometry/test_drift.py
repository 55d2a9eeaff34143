import math

import numpy as np
import pytest

from overtraining.geometry.drift import drift_by_layer, hidden_states, linear_cka, mean_principal_angle, resolve_layers


def features(n: int = 400, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.linspace(3.0, 0.5, d)  # distinct variances: a stable PCA


def test_mpa_is_zero_for_identical_representations():
    x = features()
    assert mean_principal_angle(x, x.copy(), k=4) == pytest.approx(0.0, abs=1e-7)


def test_mpa_is_a_right_angle_for_orthogonal_subspaces():
    x = np.zeros((400, 12))
    y = np.zeros((400, 12))
    x[:, :4] = features(d=4, seed=1)  # lives in coordinates 0-3
    y[:, 4:8] = features(d=4, seed=2)  # lives in coordinates 4-7
    assert mean_principal_angle(x, y, k=4) == pytest.approx(math.pi / 2, abs=1e-7)


def test_cka_is_one_under_an_orthogonal_transform_and_small_for_unrelated_features():
    x = features()
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(12, 12)))
    assert linear_cka(x, 2.5 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-10)  # rotation, scale, shift
    assert linear_cka(x, features(seed=4)) < 0.3


def test_resolve_layers_maps_negative_indices_and_deduplicates():
    assert resolve_layers([-1, 2, 0], num_states=3) == [0, 2]
    with pytest.raises(IndexError):
        resolve_layers([3], num_states=3)


def test_hidden_states_drop_padding(model, batches):
    states = hidden_states(model, batches, layers=[0, -1])
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert sorted(states) == [0, 2]
    assert states[2].shape == (tokens, 32)


def test_drift_of_a_model_against_itself_and_another_model(model, tiny_neox, batches):
    same = drift_by_layer(model, model, batches, layers=[1, -1], k=4)
    assert all(d.mpa == pytest.approx(0.0, abs=1e-6) and d.cka == pytest.approx(1.0) for d in same.values())
    other = drift_by_layer(model, tiny_neox(1), batches, layers=[-1], k=4)
    assert other[2].mpa > 0.1 and other[2].cka < 0.99
