import json

import pytest
import torch

from overtraining.checkpoints import resolve
from overtraining.config import CheckpointConfig, ModelConfig, PretrainConfig
from overtraining.pretrain import train_trajectory


def tiny_recipe(cache, out, **kw) -> PretrainConfig:
    base = dict(
        model=ModelConfig(hidden_size=32, num_layers=2, intermediate_size=64),
        batch_size=4,
        seq_len=64,
        budgets=["1K", "2K", "3K"],
        cooldown_ratio=0.5,
        cache_dir=str(cache),
        out_dir=str(out),
    )
    return PretrainConfig(**(base | kw))


def test_checkpoints_with_exact_tokens(corpus_cache, tmp_path):
    paths = train_trajectory(tiny_recipe(corpus_cache, tmp_path / "traj"))
    assert [p.name for p in paths] == ["tokens_1K", "tokens_2K", "tokens_3K"]
    tpb = 4 * 64
    for p, steps in zip(paths, (4, 8, 12), strict=True):  # ceil(budget / 256 tokens per step)
        meta = json.loads((p / "checkpoint.json").read_text())
        assert meta["step"] == steps and meta["tokens"] == steps * tpb
        cool = json.loads((p.parent / f"{p.name}-cooldown" / "checkpoint.json").read_text())
        assert cool["tokens"] == (steps + steps // 2) * tpb and cool["lr_at_save"] == 0.0
        assert (p / "model.safetensors").exists() and (p / "tokenizer.json").exists()
    # resolvable as a local checkpoint, tokens from checkpoint.json
    ck = resolve(CheckpointConfig(family="local", revision="", path=str(paths[1])), tmp_path)
    assert ck.tokens == 8 * tpb


def test_resume_gives_the_same_next_step_loss(corpus_cache, tmp_path):
    full = tiny_recipe(corpus_cache, tmp_path / "full", budgets=["3K"], cooldown_ratio=0.0, state_every=5)
    train_trajectory(full)
    whole = json.loads((tmp_path / "full" / "trajectory.json").read_text())["history"]

    cut = tiny_recipe(
        corpus_cache, tmp_path / "cut", budgets=["3K"], cooldown_ratio=0.0, state_every=5, stop_after_steps=5
    )
    assert train_trajectory(cut) == []  # "killed" after step 5
    cut.stop_after_steps = 0
    train_trajectory(cut)
    resumed = json.loads((tmp_path / "cut" / "trajectory.json").read_text())["history"]
    assert [r["step"] for r in resumed] == list(range(1, 13))
    assert resumed[5]["loss"] == pytest.approx(whole[5]["loss"], rel=1e-5)  # the next step after the cut
    assert resumed[-1]["loss"] == pytest.approx(whole[-1]["loss"], rel=1e-4)
    a = torch.load(tmp_path / "full" / "_state" / "state.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "_state" / "state.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_other_recipe_in_same_dir_is_refused(corpus_cache, tmp_path):
    train_trajectory(tiny_recipe(corpus_cache, tmp_path / "t", budgets=["1K"], cooldown_ratio=0.0))
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['lr'\]\)"):
        train_trajectory(tiny_recipe(corpus_cache, tmp_path / "t", budgets=["1K"], cooldown_ratio=0.0, lr=1e-2))


def test_bad_recipe_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"pretrain.lr=0.0 must be > 0"):
        train_trajectory(tiny_recipe(tmp_path, tmp_path / "t", lr=0.0))
    with pytest.raises(FileNotFoundError, match="pretrain.corpus.path"):
        cfg = tiny_recipe(tmp_path, tmp_path / "t")
        cfg.corpus.source, cfg.corpus.path = "local", str(tmp_path / "missing.txt")
        train_trajectory(cfg)


def test_sam_step_on_a_quadratic_ascends_then_steps_with_the_gradient_there():
    """L = 0.5 theta^T A theta: g = A theta, theta_adv = theta + rho g/||g||, step with A theta_adv."""
    from overtraining.pretrain import sam_step

    a = torch.tensor([1.0, 4.0])
    theta = torch.nn.Parameter(torch.tensor([3.0, -1.0]))
    seen = []

    def loss_fn():
        seen.append(theta.detach().clone())
        return 0.5 * (a * theta * theta).sum()

    opt = torch.optim.SGD([theta], lr=0.1)
    loss = sam_step([theta], loss_fn, opt, rho=0.5, max_grad_norm=0.0)
    g = torch.tensor([3.0, -4.0])  # A theta, ||g|| = 5
    adv = torch.tensor([3.0, -1.0]) + 0.5 * g / 5  # (3.3, -1.4)
    assert torch.allclose(seen[0], torch.tensor([3.0, -1.0])) and torch.allclose(seen[1], adv)
    g_adv = a * adv  # (3.3, -5.6): not g
    assert torch.allclose(theta.detach(), torch.tensor([3.0, -1.0]) - 0.1 * g_adv)  # from theta, not theta_adv
    assert float(loss) == pytest.approx(0.5 * (9 + 4))  # the loss at theta
    assert theta.grad is None


def test_sam_recipe_differs_from_adamw_and_does_not_mix(corpus_cache, tmp_path):
    from overtraining.pretrain import recipe

    adamw = tiny_recipe(corpus_cache, "", budgets=["1K"], cooldown_ratio=0.0)
    sam = tiny_recipe(corpus_cache, "", budgets=["1K"], cooldown_ratio=0.0, optimizer="sam", sam_rho=0.1)
    assert "optimizer" not in recipe(adamw)  # AdamW recipes written before SAM existed still match
    assert recipe(sam)["optimizer"] == "sam" and recipe(sam)["sam_rho"] == 0.1
    assert adamw.resolved_out_dir().name == "embedded" and sam.resolved_out_dir().name == "embedded-sam"
    sam.out_dir = adamw.out_dir = str(tmp_path / "t")
    train_trajectory(adamw)
    with pytest.raises(ValueError, match=r"another recipe \(differs in \['optimizer', 'sam_rho'\]\)"):
        train_trajectory(sam)


def test_sam_trajectory_trains_and_records_its_optimizer(corpus_cache, tmp_path):
    kw = dict(budgets=["1K"], cooldown_ratio=0.5)
    adamw = train_trajectory(tiny_recipe(corpus_cache, tmp_path / "a", **kw))[0]
    sam = train_trajectory(tiny_recipe(corpus_cache, tmp_path / "s", optimizer="sam", sam_rho=0.05, **kw))[0]
    for path in (sam, sam.parent / "tokens_1K-cooldown"):
        meta = json.loads((path / "checkpoint.json").read_text())
        assert meta["optimizer"] == "sam" and meta["sam_rho"] == 0.05 and meta["recipe"]["optimizer"] == "sam"
    assert json.loads((adamw / "checkpoint.json").read_text())["optimizer"] == "adamw"
    la = json.loads((tmp_path / "a" / "trajectory.json").read_text())["history"]
    ls = json.loads((tmp_path / "s" / "trajectory.json").read_text())["history"]
    assert la[0]["loss"] == pytest.approx(ls[0]["loss"])  # same init, same first batch
    assert la[-1]["loss"] != pytest.approx(ls[-1]["loss"], rel=1e-4)  # different updates


@pytest.mark.parametrize(
    "kw, match",
    [({"optimizer": "sgd"}, r"unknown pretrain.optimizer 'sgd'"), ({"sam_rho": 0.0}, r"pretrain.sam_rho=0.0 must be")],
)
def test_bad_sam_settings_are_refused(kw, match):
    from overtraining.config import ConfigError

    with pytest.raises(ConfigError, match=match):
        PretrainConfig(**kw)
