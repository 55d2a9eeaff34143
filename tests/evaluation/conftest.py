"""Fixtures of the evaluation tests: a uniform stub LM, a tiny model, a toy SFT held-out set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from overtraining.config import ModelConfig
from overtraining.data.corpus import build_embedded_corpus
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model

TINY = ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_seq_len=512)


class UniformLM(torch.nn.Module):
    """A stub causal LM whose next-token distribution is uniform over ``vocab`` tokens."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(use_cache=True)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, use_cache: bool = False
    ) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) + self.bias)  # (B, T, V)


@pytest.fixture()
def uniform_lm():
    """A factory of uniform stub models: ``uniform_lm(vocab)``."""
    return UniformLM


@pytest.fixture(scope="session")
def cache_dir(corpus_cache):
    """The session's cache dir (tests/conftest.py), which already holds the embedded corpus."""
    return corpus_cache


@pytest.fixture(scope="session")
def corpus(cache_dir):
    return build_embedded_corpus(cache_dir)


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture()
def tiny_model():
    return build_tiny_model(TINY, seed=0)


@pytest.fixture(scope="session")
def sft_heldout(tokenizer):
    """(tokenized, raw) held-out examples of a toy SFT task: 'What is i+3?' -> a program."""
    raw = [{"messages": [{"role": "user", "content": f"What is {i}+3?"}], "answer": i + 3} for i in range(6)]
    tokenized = []
    for ex in raw:
        prompt = tokenizer.apply_chat_template(ex["messages"], add_generation_prompt=True, tokenize=False)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = tokenizer(f"def solution():\n    return {ex['answer']}\n", add_special_tokens=False)["input_ids"]
        a = a + [tokenizer.eos_token_id]
        tokenized.append({"input_ids": p + a, "labels": [-100] * len(p) + a})
    return tokenized, raw
