"""The cell recipe in-process on a tiny model: each step, seeds, identity, caches, LoRA.

A failure here names the step (``prepare``, ``measure_base``, ``fine_tune``,
``measure_change``) instead of a subprocess's exit code.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from overtraining import cell
from overtraining.config import (
    CellConfig,
    CheckpointConfig,
    EvalConfig,
    GeometryConfig,
    LoggerConfig,
    ModelConfig,
    PretrainConfig,
    SFTDataConfig,
    TrainerConfig,
)
from overtraining.results import cell_id, read_record

TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def tiny_cfg(cache: Path, out_dir: Path | None = None, **kw) -> CellConfig:
    """A cell of a few seconds on a 16K-token tiny trajectory (fields of ``kw`` replace the defaults)."""
    base = dict(
        model=TINY,
        checkpoint=CheckpointConfig(family="embedded", revision="tokens_16K"),
        sft_data=SFTDataConfig(num_train=64, num_heldout=8, max_length=128),
        trainer=TrainerConfig(max_steps=6, batch_size=4, probe_every=3, checkpoint_every=3),
        eval=EvalConfig(
            tasks=["embedded_prose_cloze"], limit=10, id_max_examples=2, format_probe=False, ppl_max_tokens=2048
        ),
        sharpness=GeometryConfig(
            num_batches=1, batch_size=2, seq_len=32, perturb_gammas=[0.2], perturb_seeds=1, kl_samples=2, drift_k=4
        ),
        logger=LoggerConfig(kind="none"),
        pretrain=PretrainConfig(
            model=TINY,
            budgets=["16K"],
            batch_size=4,
            seq_len=64,
            cache_dir=str(cache),
            out_dir=str(out_dir or cache / "traj"),
            cooldown_ratio=0.0,
        ),
        cache_dir=str(cache),
    )
    return CellConfig(**(base | kw))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cell-cache")


@pytest.fixture(scope="module")
def first(cache, tmp_path_factory):
    """One complete cell (seed 0); pretrains the tiny trajectory on the way."""
    run_dir = tmp_path_factory.mktemp("run0")
    return cell.run_cell(tiny_cfg(cache), run_dir), run_dir


def _science(record) -> dict:
    return {k: v for k, v in record.metrics.items() if not k.startswith("time/") and "/time/" not in k}


def test_a_cell_writes_a_complete_record(first):
    record, run_dir = first
    assert record.status == "completed"
    assert read_record(run_dir / "record.json").cell_id == record.cell_id
    m = record.metrics
    assert m["sft/steps"] == 6
    assert m["base/perturb/gamma=0.2/delta_loss_mean"] != 0  # one draw on a 16K-token model: either sign
    assert m["base/perturb/gamma=0.2/noise_norm"] > 0
    assert 0 < m["base/perturb/gamma=0.2/noise_rel_norm"] < 1
    assert m["update/norm"] > 0 and 0 < m["update/rel_norm"] < 1
    assert any(k.startswith("update/layer=0/") for k in m)
    assert math.isfinite(m["forget/ppl/ood_prose/loss"])
    assert record.config["seeds"] == {
        "seed": 0,
        "trainer.seed": 0,
        "sharpness.seed": 0,
        "sft_data.seed": 0,
        "pretrain.seed": 0,
    }
    assert record.config["dtypes"]["eval"] == "float32" and record.config["dtypes"]["geometry"] == "float32"
    assert record.timings["peak_rss_gb"] > 0.1
    assert [row["alpha"] for row in record.curves["landscape"]] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_the_update_size_is_the_distance_between_the_weights(cache):
    """update_size against a hand-made change: one tensor moved by a known amount."""
    from overtraining.geometry.measure import update_size
    from overtraining.models import build_tiny_model

    model = build_tiny_model(TINY, seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    name = "gpt_neox.layers.1.mlp.dense_h_to_4h.weight"
    with torch.no_grad():
        model.get_parameter(name).add_(0.5)
    got = update_size(base, model)
    n = model.get_parameter(name).numel()
    assert got["update/norm"] == pytest.approx(0.5 * math.sqrt(n), rel=1e-5)
    assert got["update/layer=1/norm"] == pytest.approx(0.5 * math.sqrt(n), rel=1e-5)
    assert got["update/layer=0/norm"] == 0.0


def test_the_same_seed_gives_an_identical_record(first, cache, tmp_path):
    again = cell.run_cell(tiny_cfg(cache), tmp_path)
    assert again.cell_id == first[0].cell_id
    assert _science(again) == {k: v for k, v in _science(first[0]).items() if k in _science(again)}
    assert again.curves["sft"] == first[0].curves["sft"]


def test_another_seed_gives_another_sft_trajectory(first, cache, tmp_path):
    other = cell.run_cell(tiny_cfg(cache, seed=1), tmp_path)
    assert other.cell_id != first[0].cell_id
    assert other.metrics["sft/final_loss"] != first[0].metrics["sft/final_loss"]
    assert other.config["seeds"]["trainer.seed"] == 1 == other.config["seeds"]["sharpness.seed"]


def test_cell_id_ignores_where_results_go(cache):
    a = dataclasses.asdict(tiny_cfg(cache))
    b = dataclasses.asdict(tiny_cfg(cache / "elsewhere", out_dir=cache / "traj", sweep_name="other", experiment="x"))
    assert cell_id(a) == cell_id(b)
    c = dataclasses.asdict(tiny_cfg(cache, lr=2e-3))
    assert cell_id(a) != cell_id(c)


def test_retrained_weights_miss_the_base_cache(cache, tmp_path):
    """Same trajectory dir and names, other weights (another pretraining seed): no stale numbers."""
    traj = tmp_path / "traj"
    probe = dict(trainer=TrainerConfig(max_steps=0, epochs=0))
    cfg = tiny_cfg(cache, out_dir=traj, **probe)
    first = cell.run_cell(cfg, tmp_path / "a")  # may hit: identical weights elsewhere share the entry
    assert "base evaluation: cache hit" in cell.run_cell(cfg, tmp_path / "b").notes
    import shutil

    shutil.rmtree(traj)
    cfg2 = tiny_cfg(cache, out_dir=traj, **probe)
    cfg2.pretrain.seed = 1
    second = cell.run_cell(cfg2, tmp_path / "c")
    assert "base evaluation: computed" in second.notes
    assert second.metrics["base/perturb/base_loss"] != first.metrics["base/perturb/base_loss"]


def test_an_sft_state_of_other_data_is_refused(first, cache, tmp_path):
    run_dir = tmp_path / "r"
    cfg = tiny_cfg(cache, trainer=TrainerConfig(max_steps=6, batch_size=4, checkpoint_every=3, probe_every=0))
    cell.run_cell(cfg, run_dir)
    (run_dir / "record.json").unlink()  # as if killed after SFT saved its state
    other = tiny_cfg(
        cache,
        trainer=TrainerConfig(max_steps=6, batch_size=4, checkpoint_every=3, probe_every=0),
        sft_data=SFTDataConfig(num_train=48, num_heldout=8, max_length=128),
    )
    with pytest.raises(ValueError, match="holds the SFT state of another run .*data"):
        cell.run_cell(other, run_dir)
    failed = read_record(run_dir / "record.json")
    assert failed.status == "failed" and "base/perturb/base_loss" in failed.metrics  # measured work is kept


def test_lora_cell_compares_merged_weights(cache, tmp_path):
    cfg = tiny_cfg(cache, trainer=TrainerConfig(method="lora", max_steps=4, batch_size=4, lora_r=4), lr=1e-2)
    record = cell.run_cell(cfg, tmp_path)
    assert record.status == "completed"
    m = record.metrics
    assert m["update/norm"] > 0
    assert math.isfinite(m["drift/cka_mean"]) and len(record.curves["landscape"]) == 5
    # LoRA updates only the adapted linear layers: embeddings stay exactly where they were
    assert m["update/layer=embed/norm"] == 0.0


def test_a_lora_that_cannot_apply_fails_before_the_base_measurements(cache, tmp_path):
    cfg = tiny_cfg(cache, trainer=TrainerConfig(method="lora", lora_targets=["c_attn"]))
    with pytest.raises(ValueError, match="trainer.lora_targets"):
        cell.run_cell(cfg, tmp_path)
    record = json.loads((tmp_path / "record.json").read_text())
    assert not any(k.startswith("base/") for k in record["metrics"])


def test_the_2d_landscape_is_kept_in_the_record(cache, tmp_path):
    g = GeometryConfig(
        num_batches=1,
        batch_size=2,
        seq_len=32,
        estimators=[],
        drift_layers=[],
        landscape_alphas=[],
        landscape_2d_points=3,
    )
    record = cell.run_cell(tiny_cfg(cache, sharpness=g, trainer=TrainerConfig(max_steps=2, batch_size=4)), tmp_path)
    grid = record.curves["landscape2d"][0]
    assert len(grid["coords"]) == 3 and len(grid["losses"]) == 3 and len(grid["losses"][0]) == 3
    assert all(math.isfinite(v) for row in grid["losses"] for v in row)


@pytest.fixture(scope="module")
def gpt2_checkpoint(tmp_path_factory) -> Path:
    """A local checkpoint of another architecture (GPT-2: Conv1D layers, c_attn/c_fc names),
    saved with ``save_pretrained`` like any user's own model, over the byte tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from overtraining.data.tokenizer import VOCAB_SIZE, byte_tokenizer

    path = tmp_path_factory.mktemp("gpt2") / "ckpt"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB_SIZE, n_positions=256, n_embd=32, n_layer=2, n_head=4, bos_token_id=256)
    GPT2LMHeadModel(config).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_gpt2_style_local_checkpoint_runs_unchanged(cache, gpt2_checkpoint, tmp_path, method):
    cfg = tiny_cfg(
        cache,
        checkpoint=CheckpointConfig(family="local", path=str(gpt2_checkpoint), tokens=1000),
        trainer=TrainerConfig(method=method, max_steps=3, batch_size=4, lora_r=4),
        lr=1e-2,
    )
    record = cell.run_cell(cfg, tmp_path)
    assert record.status == "completed" and record.tokens == 1000
    m = record.metrics
    assert m["update/norm"] > 0 and math.isfinite(m["drift/cka_mean"])
    assert math.isfinite(m["forget/ppl/ood_prose/loss"])
    if method == "lora":  # all-linear adapts GPT-2's Conv1D layers; embeddings stay put
        assert m["update/layer=embed/norm"] == 0.0 and m["update/layer=0/norm"] > 0
