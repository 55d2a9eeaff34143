"""Building the tiny models and loading any checkpoint (Hub revision or local directory).

The same ``from_pretrained`` path serves Pythia/OLMo revisions and the checkpoints that
``overtraining.pretrain`` writes, so the code tested offline is the code used on a cluster.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXConfig, LlamaConfig, PreTrainedModel

from overtraining.checkpoints import ResolvedCheckpoint
from overtraining.config import ModelConfig
from overtraining.data.tokenizer import VOCAB_SIZE, byte_tokenizer


def torch_dtype(cfg: ModelConfig, device: torch.device) -> torch.dtype:
    """bf16 on a GPU, fp32 on the CPU, unless the config says otherwise."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def build_tiny_model(cfg: ModelConfig, seed: int) -> PreTrainedModel:
    """A freshly initialised causal LM over the byte vocabulary."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_seq_len,
        bos_token_id=256,
        eos_token_id=256,
        pad_token_id=257,
    )
    if cfg.arch == "gpt_neox":
        config = GPTNeoXConfig(**common, use_parallel_residual=True, tie_word_embeddings=False)
    else:
        config = LlamaConfig(**common, num_key_value_heads=cfg.num_heads, tie_word_embeddings=True)
    config._attn_implementation = cfg.attn_implementation
    return AutoModelForCausalLM.from_config(config)


def load_tokenizer(ckpt: ResolvedCheckpoint, trust_remote_code: bool = False):
    """The checkpoint's tokenizer, with a pad token (Pythia/OLMo have none)."""
    tok = AutoTokenizer.from_pretrained(ckpt.source, revision=ckpt.revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None:
        tok.chat_template = byte_tokenizer().chat_template
    return tok


def load_model(ckpt: ResolvedCheckpoint, cfg: ModelConfig, device: torch.device) -> PreTrainedModel:
    """Loads a checkpoint by Hub repo + revision or local path, in the configured dtype."""
    model = AutoModelForCausalLM.from_pretrained(
        ckpt.source,
        revision=ckpt.revision,
        dtype=torch_dtype(cfg, device),
        attn_implementation=cfg.attn_implementation,
        trust_remote_code=cfg.trust_remote_code,
    )
    return model.to(device)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
