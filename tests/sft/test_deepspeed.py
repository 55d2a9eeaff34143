"""DeepSpeed on CPU (gloo, a world of 1): ZeRO-2 matches plain PyTorch, ZeRO-3 returns a full model."""

import json

import pytest

from overtraining.config import LRScheduleConfig, ModelConfig, SFTDataConfig, TrainerConfig
from overtraining.data.sft_data import load_sft_data
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model
from overtraining.training import distributed
from overtraining.training.mitigations import SFTMitigation
from overtraining.training.sft import finetune

pytest.importorskip("deepspeed")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.distributed renames under gloo
TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def data():
    return load_sft_data(SFTDataConfig(num_train=48, num_heldout=4, max_length=256), byte_tokenizer())


def _run(data, tmp_path, mitigation=None, **kw):
    cfg = TrainerConfig(max_steps=8, batch_size=4, grad_accum=2, probe_every=0, checkpoint_every=4, device="cpu", **kw)
    return finetune(
        build_tiny_model(TINY, 0),
        byte_tokenizer(),
        data,
        3e-3,
        LRScheduleConfig(name="cosine"),
        cfg,
        tmp_path,
        probe=lambda model: {"n_params": float(sum(p.numel() for p in model.parameters()))},
        mitigation=mitigation,
    )


def test_zero2_matches_plain_pytorch(data, tmp_path):
    plain = _run(data, tmp_path / "plain")
    zero2 = _run(data, tmp_path / "zero2", deepspeed="zero2")
    assert zero2.status == "completed" and zero2.steps == 8
    assert [h["loss"] for h in zero2.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)
    assert [h["lr"] for h in zero2.history] == pytest.approx([h["lr"] for h in plain.history])
    assert zero2.probes[-1]["sft_loss"] == pytest.approx(plain.probes[-1]["sft_loss"], rel=1e-4)
    assert (tmp_path / "zero2" / "sft_state_ds" / "latest").exists()


@pytest.mark.parametrize("name", ["l2", "replay"])
def test_zero2_mitigations_match_plain_pytorch(data, tmp_path, name):
    """The penalty (added on every rank, averaged by DeepSpeed) and replay rows give the same updates."""
    import numpy as np

    def make() -> SFTMitigation:
        text = np.arange(20_000, dtype=np.int64) % 200
        return SFTMitigation(name, 0.5 if name == "l2" else 0.2, replay_tokens=text, seq_len=32)

    plain = _run(data, tmp_path / "plain", make())
    zero2 = _run(data, tmp_path / "zero2", make(), deepspeed="zero2")
    key = "penalty" if name == "l2" else "replay_loss"
    assert [h["loss"] for h in zero2.history] == pytest.approx([h["loss"] for h in plain.history], rel=1e-4)
    assert [h[key] for h in zero2.history] == pytest.approx([h[key] for h in plain.history], rel=1e-3, abs=1e-7)
    assert plain.history[-1][key] > 0


def test_zero3_gathers_a_full_model(data, tmp_path):
    out = _run(data, tmp_path, deepspeed="zero3")
    n_params = sum(p.numel() for p in build_tiny_model(TINY, 0).parameters())
    assert out.probes[-1]["n_params"] == n_params  # the probe saw full, not partitioned, tensors
    assert sum(p.numel() for p in out.model.parameters()) == n_params


def test_config_files_are_complete_and_checked(tmp_path):
    for name in distributed.DS_PRESETS:
        config = distributed.deepspeed_config(name, micro_batch=4, grad_accum=2, max_grad_norm=1.0, bf16=False)
        assert config["train_micro_batch_size_per_gpu"] == 4 and config["bf16"] == {"enabled": False}
        assert "auto" not in json.dumps(config)
    with pytest.raises(ValueError, match="did you mean 'zero_optimization'"):
        distributed.check_keys({"zero_optimisation": {"stage": 2}}, "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2, "contiguous_gradient": True}}))
    with pytest.raises(ValueError, match="contiguous_gradient"):
        distributed.deepspeed_config(str(bad), 1, 1, 1.0, bf16=False)
    with pytest.raises(ValueError, match="did you mean 'zero2'"):
        TrainerConfig(deepspeed="zero-2")
