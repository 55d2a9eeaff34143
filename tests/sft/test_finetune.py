"""finetune on a tiny random model: the loss falls, target-loss stop, LoRA, divergence, resume."""

import logging
import math

import pytest
import torch

from overtraining.config import LRScheduleConfig, ModelConfig, SFTDataConfig
from overtraining.data.chat import collate
from overtraining.data.sft_data import load_sft_data
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model
from overtraining.training.sft import (
    TrainerConfig,
    finetune,
    first_target_step,
    is_diverged,
    micro_batch_indices,
    plan_steps,
    supports_sparse_logits,
    token_loss,
)

TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
LR, SCHEDULE = 3e-3, LRScheduleConfig(name="cosine", warmup_steps=3)


def _cfg(**kw) -> TrainerConfig:
    base = dict(max_steps=30, batch_size=8, probe_every=10, checkpoint_every=10, device="cpu")
    return TrainerConfig(**(base | kw))


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def data(tok):
    return load_sft_data(SFTDataConfig(num_train=64, num_heldout=8, max_length=256), tok)


@pytest.fixture(scope="module")
def baseline(tok, data, tmp_path_factory):
    """One uninterrupted 30-step run."""
    return finetune(
        build_tiny_model(TINY, 0),
        tok,
        data,
        LR,
        SCHEDULE,
        _cfg(),
        tmp_path_factory.mktemp("base"),
        probe=lambda model: {"probe/ok": 1.0},
    )


def test_sft_loss_falls(baseline):
    losses = [h["loss"] for h in baseline.history]
    assert baseline.status == "completed" and baseline.steps == 30 and len(losses) == 30
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0  # from ~ln(260) = 5.6 nats
    assert [p["step"] for p in baseline.probes] == [10, 20, 30]
    assert baseline.probes[-1]["sft_loss"] < baseline.probes[0]["sft_loss"] and baseline.probes[0]["probe/ok"] == 1.0
    assert baseline.tokens > 30 * 8 * 100 and not baseline.model.training
    assert baseline.history[0]["lr"] == 0.0 and baseline.history[3]["lr"] == pytest.approx(LR, rel=0.05)


def test_target_rule_on_a_known_curve():
    # EMA(0.5): 5, 4.5, 3.75, 2.875, 1.9375
    assert first_target_step([5, 4, 3, 2, 1], target=3.0, beta=0.5) == 4
    assert first_target_step([5, 4, 3, 2, 1], target=5.0, beta=0.5) == 1
    assert first_target_step([5, 4, 3, 2, 1], target=1.0, beta=0.5) is None
    assert is_diverged(float("nan"), 5.0, 10.0) and is_diverged(float("inf"), 5.0, 10.0)
    assert is_diverged(50.1, 5.0, 10.0) and not is_diverged(49.9, 5.0, 10.0)


def test_target_loss_stops_at_the_first_step_reaching_it(tok, data, baseline, tmp_path):
    target = baseline.history[11]["smoothed_loss"] + 1e-9
    expected = first_target_step([h["loss"] for h in baseline.history], target, 0.9)
    out = finetune(build_tiny_model(TINY, 0), tok, data, LR, SCHEDULE, _cfg(target_loss=target), tmp_path)
    assert expected is not None and expected <= 12
    assert (out.status, out.target_reached_step, out.steps) == ("target_reached", expected, expected)
    assert out.probes[-1]["step"] == expected


def test_resume_after_a_kill_reaches_the_same_loss(tok, data, baseline, tmp_path, caplog):
    def kill_at_15(record: dict) -> None:
        if record["step"] == 15:
            raise KeyboardInterrupt  # a preemption after the step-10 state was written

    with pytest.raises(KeyboardInterrupt):
        finetune(build_tiny_model(TINY, 0), tok, data, LR, SCHEDULE, _cfg(), tmp_path, on_step=kill_at_15)
    assert (tmp_path / "sft_state.pt").exists() and not (tmp_path / "sft_state.pt.tmp").exists()
    with caplog.at_level(logging.INFO, logger="overtraining.training.sft"):
        out = finetune(
            build_tiny_model(TINY, 0), tok, data, LR, SCHEDULE, _cfg(), tmp_path, probe=lambda model: {"probe/ok": 1.0}
        )
    assert "resumed from step 10" in caplog.text and out.resumed_from == 10
    assert [h["loss"] for h in out.history] == pytest.approx([h["loss"] for h in baseline.history], rel=1e-6)
    assert [p["sft_loss"] for p in out.probes] == pytest.approx([p["sft_loss"] for p in baseline.probes], rel=1e-6)
    assert out.tokens == baseline.tokens

    again = finetune(build_tiny_model(TINY, 0), tok, data, LR, SCHEDULE, _cfg(), tmp_path)  # a requeued cell
    assert (again.status, again.steps, again.resumed_from) == ("completed", 30, 30)
    with pytest.raises(ValueError, match="another run"):
        finetune(build_tiny_model(TINY, 0), tok, data, 2 * LR, SCHEDULE, _cfg(), tmp_path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft asks transformers a deprecated question
def test_lora_trains_adapters_only(tok, data, tmp_path):
    model = build_tiny_model(TINY, 0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    out = finetune(model, tok, data, 1e-2, SCHEDULE, _cfg(method="lora", max_steps=5), tmp_path)
    assert all(torch.equal(params[n], before[n]) for n in before)  # base weights bit-identical
    trainable = {n: p for n, p in out.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any(p.abs().sum() > 0 for n, p in trainable.items() if "lora_B" in n)  # B starts at zero

    merged = finetune(
        build_tiny_model(TINY, 0),
        tok,
        data,
        1e-2,
        SCHEDULE,
        _cfg(method="lora", max_steps=3, merge_lora=True),
        tmp_path / "merged",
    )
    assert type(merged.model).__name__ == "GPTNeoXForCausalLM"
    changed = dict(merged.model.named_parameters())["gpt_neox.layers.0.attention.query_key_value.weight"]
    assert not torch.equal(changed, before["gpt_neox.layers.0.attention.query_key_value.weight"])


def test_planted_nan_is_reported_not_raised(tok, data, tmp_path):
    model = build_tiny_model(TINY, 0)
    calls = []

    def poison(module, args, output):  # the 4th training forward returns NaN logits
        calls.append(1)
        if len(calls) == 4:
            output.logits = output.logits * float("nan")
        return output

    model.register_forward_hook(poison)
    out = finetune(model, tok, data, LR, SCHEDULE, _cfg(probe_every=0), tmp_path, probe=lambda m: 1 / 0)
    assert (out.diverged, out.diverged_step, out.steps, out.status) == (True, 4, 3, "diverged")
    assert math.isnan(out.history[-1]["loss"]) and out.probes == []

    huge = finetune(build_tiny_model(TINY, 0), tok, data, 1e6, LRScheduleConfig(), _cfg(), tmp_path / "huge")
    assert huge.diverged and huge.diverged_step is not None and huge.diverged_step <= 5


def test_step_plan_and_data_order():
    assert plan_steps(TrainerConfig(epochs=3, batch_size=4, grad_accum=2), 100, world_size=1) == 38
    assert plan_steps(TrainerConfig(max_steps=7), 100, world_size=4) == 7
    cfg = TrainerConfig(batch_size=3, grad_accum=2)
    seen = [
        i
        for step in range(5)
        for k in range(2)
        for r in range(2)
        for i in micro_batch_indices(step, k, cfg, n=60, world=2, rank=r)
    ]
    assert sorted(seen) == list(range(60))  # one epoch: every example once, split over ranks


def test_sparse_logits_give_the_full_loss(tok, data):
    model = build_tiny_model(TINY, 0)
    batch = collate(data.train[:4], tok.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    full, n_full = token_loss(model, inputs, batch["labels"], sparse=False)
    sparse, n_sparse = token_loss(model, inputs, batch["labels"], sparse=True)
    assert supports_sparse_logits(model) and n_full == n_sparse > 0
    assert sparse.item() == pytest.approx(full.item(), rel=1e-5)
