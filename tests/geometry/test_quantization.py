"""Closed-form checks of the quantization probe (RTN through torchao) and its wiring."""

import math

import pytest
import torch

from overtraining.config import ConfigError, GeometryConfig
from overtraining.geometry.measure import measure_checkpoint
from overtraining.geometry.perturbation import evaluate_loss
from overtraining.geometry.quantization import (
    gptq_sensitivity,
    quantizable_weights,
    quantization_sensitivity,
    rtn_quantize,
)


def test_int8_error_is_at_most_half_a_step_per_element():
    torch.manual_seed(0)
    w = torch.randn(6, 128)
    q = rtn_quantize(w, bits=8, group_size=64)
    step = w.view(6, 2, 64).abs().amax(-1, keepdim=True) / 127  # s_k = max|w| / (2^7 - 1)
    err = (q - w).view(6, 2, 64).abs()
    assert (err <= step / 2 * (1 + 1e-6)).all()
    assert err.max() > 0.4 * step.min()  # it does round: the bound is nearly reached somewhere
    # every value lies on its group's grid: q / s is an integer in [-127, 127]
    k = (q.view(6, 2, 64) / step).round()
    assert torch.allclose(q.view(6, 2, 64), k * step, rtol=0, atol=1e-7) and k.abs().max() == 127


def test_int4_on_the_grid_is_exact_and_int3_is_coarser():
    gen = torch.Generator().manual_seed(1)
    ints = torch.randint(-7, 8, (4, 96), generator=gen).float()
    ints[:, 0], ints[:, 32], ints[:, 64] = 7, -7, 7  # each 32-group reaches |q| = 7: scale = 2^-3 exactly
    w = ints * 0.125
    assert torch.equal(rtn_quantize(w, bits=4, group_size=32), w)
    w3 = rtn_quantize(w, bits=3, group_size=32)  # q_max = 3: scale 7/24, coarser grid
    assert not torch.equal(w3, w) and (w3 - w).abs().max() <= 7 / 24 / 2 + 1e-6


def test_group_size_zero_is_one_scale_per_row_and_ragged_rows_get_a_short_group():
    w = torch.tensor([[1.0, -0.5, 0.25, 3.5], [0.0, 0.0, 0.0, 0.0]])
    q = rtn_quantize(w, bits=3, group_size=0)  # row scale 3.5 / 3
    s = 3.5 / 3
    assert torch.allclose(q[0], torch.tensor([1.0, -0.0, 0.0, 3.0]) * s)  # round(0.857)=1, round(-0.43)=0
    assert torch.equal(q[1], torch.zeros(4))  # an all-zero group stays exactly zero
    ragged = rtn_quantize(w, bits=3, group_size=3)  # groups {1, -0.5, 0.25} and {3.5}
    assert ragged[0, 3] == pytest.approx(3.5) and ragged[0, 0] == pytest.approx(1.0)


def test_quantization_leaves_the_model_bit_identical(model, batches, state_bits):
    model.train()
    before = state_bits(model)
    result = quantization_sensitivity(model, batches, bits=[8, 4, 3], group_size=16)
    assert state_bits(model) == before and model.training
    assert result.base_loss == evaluate_loss(model, batches)
    errs = result.weight_rel_errors
    assert 0 < errs[0] < errs[1] < errs[2] < 1  # fewer bits, larger error
    # int8 RTN of Gaussian-like weights: relative error ~ 1/(127 * sqrt(12)) x (max/std) -- well under 1%
    assert errs[0] < 0.01 and errs[1] > 0.05
    m = result.metrics()
    assert m["quant/bits=4/delta_loss"] == pytest.approx(m["quant/bits=4/loss"] - m["quant/base_loss"])
    assert abs(m["quant/bits=8/delta_loss"]) < abs(m["quant/bits=3/delta_loss"])
    assert 0 < m["quant/weight_fraction"] < 1  # embeddings, norms and biases stay in fp32


def test_tied_head_is_quantized_once(tied_llama):
    weights = quantizable_weights(tied_llama)
    head = tied_llama.lm_head.weight
    assert sum(w is head for w in weights) == 1 and head is tied_llama.model.embed_tokens.weight
    assert len(weights) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer + the (tied) head


def test_measure_checkpoint_adds_quant_metrics_and_restores(model, batches, state_bits):
    before = state_bits(model)
    cfg = GeometryConfig(estimators=["quantization"], quant_bits=[4], quant_group_size=32)
    metrics = measure_checkpoint(model, batches, cfg)
    assert set(metrics) == {"quant/base_loss", "quant/weight_fraction", "quant/bits=4/loss",
                            "quant/bits=4/delta_loss", "quant/bits=4/weight_rel_error"}  # fmt: skip
    assert all(math.isfinite(v) for v in metrics.values())
    assert state_bits(model) == before


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"quant_bits": [1]}, r"sharpness.quant_bits entry=1 must be in \[2, 8\]"),
        ({"quant_bits": [16]}, r"quant_bits entry=16"),
        ({"quant_group_size": -1}, r"sharpness.quant_group_size=-1 must be >= 0"),
        ({"quant_method": "gptqq"}, r"did you mean 'gptq'"),
        ({"estimators": ["quantisation"]}, r"did you mean 'quantization'"),
        ({"estimators": ["quantization"], "quant_bits": []}, r"quant_bits is empty"),
    ],
)
def test_bad_quant_config_is_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        GeometryConfig(**kw)


def test_gptq_without_cuda_says_how_to_fix(model, batches):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the GPU test covers GPTQ")
    with pytest.raises(RuntimeError, match="quant_method=rtn"):
        gptq_sensitivity(model, batches, bits=[4])
    with pytest.raises(ValueError, match="GPTQ supports"):
        gptq_sensitivity(model, batches, bits=[3])


@pytest.mark.gpu
def test_gptq_int4_on_gpu_is_closer_than_rtn(model, make_batches):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("mslk")
    batches = make_batches(num=4)
    gptq = gptq_sensitivity(model, batches, bits=[4], group_size=32)
    rtn = quantization_sensitivity(model.cuda(), batches, bits=[4], group_size=32)
    assert math.isfinite(gptq.losses[0])
    gptq_rise, rtn_rise = gptq.losses[0] - gptq.base_loss, rtn.losses[0] - rtn.base_loss  # bf16 vs fp32 bases
    assert gptq_rise <= rtn_rise + 1e-2  # calibrated on these batches: no worse than RTN
