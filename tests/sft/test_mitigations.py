"""Mitigations in closed form: penalty gradients, the Fisher, replay's token share, SAM's ascent, WiSE's ends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from overtraining.config import (
    CellConfig,
    ConfigError,
    LRScheduleConfig,
    MitigationConfig,
    ModelConfig,
    SFTDataConfig,
    TrainerConfig,
)
from overtraining.data.sft_data import load_sft_data
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model
from overtraining.training import mitigations as mit
from overtraining.training.sft import finetune

TINY = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


@pytest.fixture()
def moved():
    """A tiny model, its anchor theta_0, and the model moved off it by a known delta."""
    model = build_tiny_model(TINY, 0)
    anchor = mit.anchor_of(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    return model, anchor


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_l2_penalty_value_and_gradient(moved):
    model, anchor = moved
    lam = 0.3
    loss = mit.penalty(model.named_parameters(), anchor, lam)
    deltas = {n: p.detach() - anchor[n] for n, p in model.named_parameters()}
    assert loss.item() == pytest.approx(lam * sum(float(d.square().sum()) for d in deltas.values()), rel=1e-5)
    for name, g in _grads(model, loss).items():
        torch.testing.assert_close(g, 2 * lam * deltas[name], rtol=1e-5, atol=1e-9)


def test_ewc_penalty_gradient_is_weighted_by_the_fisher(moved):
    model, anchor = moved
    lam, gen = 2.0, torch.Generator().manual_seed(2)
    fisher = {n: torch.rand(a.shape, generator=gen) for n, a in anchor.items()}
    loss = mit.penalty(model.named_parameters(), anchor, lam, fisher)
    for name, g in _grads(model, loss).items():
        expected = 2 * lam * fisher[name] * (dict(model.named_parameters())[name].detach() - anchor[name])
        torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-9)


def test_fisher_is_the_mean_of_squared_batch_gradients():
    model = build_tiny_model(TINY, 0)
    gen = torch.Generator().manual_seed(3)
    batches = [{"input_ids": (ids := torch.randint(0, 256, (2, 12), generator=gen)), "labels": ids} for _ in range(3)]
    fisher = mit.diagonal_fisher(model, batches)
    assert all(p.grad is None for p in model.parameters())  # .grad untouched (autograd.grad)
    per_batch = []
    for b in batches:
        model.zero_grad(set_to_none=True)
        model(**b).loss.backward()
        per_batch.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, f in fisher.items():
        expected = sum(g[name].square() for g in per_batch) / 3
        torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-12)
    normed = mit.diagonal_fisher(model, batches, normalize=True)
    total = sum(float(f.sum()) for f in normed.values()) / sum(f.numel() for f in normed.values())
    assert total == pytest.approx(1.0, rel=1e-5)


def test_replay_rows_hold_exactly_the_requested_targets():
    tokens = np.arange(10_000, dtype=np.int64) % 251
    for n in (1, 63, 64, 65, 300):
        rows = mit.replay_rows(tokens, n, seq_len=64, seed=0, step=3)
        assert int((rows["labels"][:, 1:] != -100).sum()) == n
        assert rows["input_ids"].shape[1] == 65
        for ids, mask in zip(rows["input_ids"], rows["attention_mask"], strict=True):
            window = ids[mask == 1].numpy()
            assert np.all(np.diff(window) % 251 == 1)  # a contiguous window of the text
    again = mit.replay_rows(tokens, 300, seq_len=64, seed=0, step=3)
    assert torch.equal(again["input_ids"], mit.replay_rows(tokens, 300, 64, 0, 3)["input_ids"])
    assert mit.replay_rows(tokens, 0, 64, 0, 0) is None
    assert mit.replay_targets(0.2, 400) == 100 and mit.replay_targets(0.01, 1234) == 12
    assert [mit.rank_share(10, 4, r) for r in range(4)] == [3, 3, 2, 2]


def test_replay_share_of_every_update_is_the_configured_fraction(tmp_path):
    tok = byte_tokenizer()
    data = load_sft_data(SFTDataConfig(num_train=16, num_heldout=2, max_length=128), tok)
    text = np.arange(50_000, dtype=np.int64) % 200
    m = mit.SFTMitigation("replay", 0.1, replay_tokens=text, seq_len=32)
    cfg = TrainerConfig(max_steps=3, batch_size=4, probe_every=0, checkpoint_every=0, device="cpu")
    out = finetune(build_tiny_model(TINY, 0), tok, data, 1e-3, LRScheduleConfig(), cfg, tmp_path, mitigation=m)
    for row in out.history:
        assert "replay_loss" in row and 3.0 < row["replay_loss"] < 7.0  # ~ln(256) for a fresh model
        assert abs(row["replay_fraction"] - 0.1) < 0.01  # rounding of one target in a few hundred
    assert abs(out.metrics["replay_token_fraction"] - 0.1) < 0.005


def test_sam_ascends_along_the_normalised_gradient_of_a_quadratic():
    a = torch.tensor([1.0, 4.0, 9.0])
    theta = torch.nn.Parameter(torch.tensor([1.0, -0.5, 0.25]))
    rho, lr = 0.1, 0.05

    def loss_fn():
        return 0.5 * (a * theta * theta).sum()  # grad = A theta

    seen = []

    def backward_again():
        seen.append(theta.detach().clone())
        loss_fn().backward()

    start = theta.detach().clone()
    loss_fn().backward()
    g = a * start
    mit.sam_second_pass([theta], rho, backward_again)
    ascended = start + rho * g / g.norm()
    torch.testing.assert_close(seen[0], ascended)  # where the second gradient was taken
    assert torch.equal(theta.detach(), start)  # restored bit for bit
    torch.testing.assert_close(theta.grad, a * ascended)  # the gradient there
    torch.optim.SGD([theta], lr=lr).step()
    torch.testing.assert_close(theta.detach(), start - lr * a * ascended)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_wise_ends_are_the_base_and_the_finetuned_model_bit_for_bit(dtype):
    gen = torch.Generator().manual_seed(4)
    base = {"w": torch.randn(5, 3, generator=gen).to(dtype), "pos": torch.arange(4)}
    ft = {"w": torch.randn(5, 3, generator=gen).to(dtype), "pos": torch.arange(4)}
    assert torch.equal(mit.interpolate_state(base, ft, 0.0)["w"], base["w"])
    assert torch.equal(mit.interpolate_state(base, ft, 1.0)["w"], ft["w"])
    half = mit.interpolate_state(base, ft, 0.5)["w"]
    torch.testing.assert_close(half.float(), ((base["w"].float() + ft["w"].float()) / 2).to(dtype).float())
    assert half.dtype == dtype and torch.equal(mit.interpolate_state(base, ft, 0.5)["pos"], ft["pos"])


def test_wise_on_a_model_state_dict():
    base, ft = build_tiny_model(TINY, 0), build_tiny_model(TINY, 1)
    zero = mit.interpolate_state(base.state_dict(), ft.state_dict(), 0.0)
    assert all(torch.equal(zero[k], v) for k, v in base.state_dict().items())


@pytest.mark.parametrize(
    ("mitigation", "trainer", "says"),
    [
        (MitigationConfig(name="l2", strength=0.1), TrainerConfig(method="lora"), "trainer.method=lora"),
        (MitigationConfig(name="ewc", strength=0.1), TrainerConfig(deepspeed="zero3"), "ZeRO-3"),
        (MitigationConfig(name="sam", strength=0.05), TrainerConfig(deepspeed="zero2"), "mitigation=sam"),
    ],
)
def test_combinations_that_cannot_run_are_refused(mitigation, trainer, says):
    with pytest.raises(ConfigError, match=says):
        CellConfig(mitigation=mitigation, trainer=trainer)


def test_combinations_that_can_run_are_accepted():
    CellConfig(mitigation=MitigationConfig(name="l2", strength=0.1), trainer=TrainerConfig(deepspeed="zero2"))
    CellConfig(mitigation=MitigationConfig(name="replay", strength=0.05), trainer=TrainerConfig(method="lora"))
    CellConfig(mitigation=MitigationConfig(name="sam", strength=0.05), trainer=TrainerConfig(method="lora"))
    assert MitigationConfig(name="replay", strength=0.05).label == "replay 0.05"
    with pytest.raises(ConfigError, match="mitigation.strength"):
        MitigationConfig(name="replay", strength=1.0)


def test_fisher_cache_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"w": torch.tensor([0.5, 2.0])}

    first, hit1 = mit.cached_fisher(tmp_path / "f.pt", compute)
    second, hit2 = mit.cached_fisher(tmp_path / "f.pt", compute)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(second["w"], first["w"])


def test_sam_with_lora_moves_only_the_adapters(tmp_path):
    tok = byte_tokenizer()
    data = load_sft_data(SFTDataConfig(num_train=16, num_heldout=2, max_length=128), tok)
    model = build_tiny_model(TINY, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainerConfig(method="lora", max_steps=3, batch_size=4, probe_every=0, checkpoint_every=0, device="cpu")
    sam = mit.SFTMitigation("sam", 0.05)
    out = finetune(model, tok, data, 3e-3, LRScheduleConfig(), cfg, tmp_path, mitigation=sam)
    assert out.status == "completed" and out.history[-1]["loss"] < out.history[0]["loss"]
    base = dict(out.model.get_base_model().named_parameters())
    for name, p in before.items():  # SAM's ascent is undone exactly; frozen weights never move
        lora_name = name.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(base.get(name, base.get(lora_name)), p), name


def test_a_strength_swept_across_mitigations_leaves_none_at_zero():
    """``-m mitigation=none,l2 mitigation.strength=0.1``: the baseline still runs, without a knob."""
    from overtraining.config import MitigationConfig

    assert MitigationConfig(name="none", strength=0.1).strength == 0.0
    assert MitigationConfig(name="none", strength=0.1).label == "none"
    assert MitigationConfig(name="l2", strength=0.1).label == "l2 0.1"
