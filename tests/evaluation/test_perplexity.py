import math

import pytest
import torch

from overtraining.data.tokenizer import VOCAB_SIZE
from overtraining.evaluation.perplexity import perplexity, windows


def test_uniform_model_has_perplexity_equal_to_the_vocab_size(tokenizer, uniform_lm):
    res = perplexity(uniform_lm(VOCAB_SIZE), tokenizer, "hello world " * 100, seq_len=64, max_tokens=1000, batch_size=4)
    assert res["loss"] == pytest.approx(math.log(VOCAB_SIZE), rel=1e-6)
    assert res["ppl"] == pytest.approx(VOCAB_SIZE, rel=1e-6)
    assert res["tokens"] == 15 * 63  # 15 full windows of 64 in the first 1000 tokens


def test_windows_are_non_overlapping_and_a_short_text_is_one_window():
    assert windows(list(range(10)), 4, 100).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(list(range(3)), 4, 100).tolist() == [[0, 1, 2]]


def test_perplexity_is_deterministic_and_restores_train_mode(tiny_model, tokenizer):
    tiny_model.train()
    a = perplexity(tiny_model, tokenizer, "def f(x):\n    return x\n" * 40, 128, 512, 2)
    b = perplexity(tiny_model, tokenizer, "def f(x):\n    return x\n" * 40, 128, 512, 1)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and tiny_model.training
    assert tiny_model.config.use_cache is True
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(tiny_model, tokenizer, "a", 8, 8, 1)
    assert torch.is_grad_enabled()
