"""Tiny random causal LMs, fixed batches and a bit-identity probe for the geometry tests."""

from collections.abc import Callable

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

VOCAB = 64
Batches = list[dict[str, torch.Tensor]]


def _tiny_neox(seed: int) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return GPTNeoXForCausalLM(config).eval()


def _make_batches(num: int = 2, batch: int = 4, seq: int = 24, seed: int = 0) -> Batches:
    """Random token batches; the last 4 positions of row 0 are padding (masked, label -100)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        ids = torch.randint(0, VOCAB, (batch, seq), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, -4:] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def _state_bits(model: torch.nn.Module) -> dict[str, bytes]:
    """Every tensor of the state dict as raw bytes (bit identity: -0.0 and NaN included)."""
    return {k: v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
            for k, v in model.state_dict().items()}  # fmt: skip


@pytest.fixture
def model() -> GPTNeoXForCausalLM:
    return _tiny_neox(seed=0)


@pytest.fixture
def tiny_neox() -> Callable[[int], GPTNeoXForCausalLM]:
    return _tiny_neox


@pytest.fixture
def tied_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                         tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def batches() -> Batches:
    return _make_batches()


@pytest.fixture
def make_batches() -> Callable[..., Batches]:
    return _make_batches


@pytest.fixture
def state_bits() -> Callable[[torch.nn.Module], dict[str, bytes]]:
    return _state_bits
