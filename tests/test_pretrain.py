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
