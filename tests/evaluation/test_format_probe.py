import math
from types import SimpleNamespace

import pytest
import torch

from overtraining.config import EvalConfig
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.evaluation.format_probe import (
    RAW_PROMPTS,
    continuation_logprobs,
    docstring_rate,
    format_probe,
    has_docstring_or_comment,
    opening_probability,
)

WITH_DOCSTRING = 'def simple_math_problem() -> int:\n    """\n    Paul wants bread.\n    """\n    return 2 * 2 + 3\n'
WITH_COMMENT = "    total = 2 + 3  # the bill\n    return total\n"
PLAIN = "def simple_math_problem() -> int:\n    bread = 2\n    return bread * 2\n"
HASH_IN_STRING = "    tag = '#1'\n    return tag\n"
COMMENT_AFTER_FUNCTION = "    return 1\n\n# a module comment\n"


def test_detects_docstrings_and_comments_in_the_function_body_only():
    assert has_docstring_or_comment(WITH_DOCSTRING)
    assert has_docstring_or_comment(WITH_COMMENT)
    assert has_docstring_or_comment("def f():\n    '''single quotes'''\n")
    assert not has_docstring_or_comment(PLAIN)
    assert not has_docstring_or_comment(HASH_IN_STRING)
    assert not has_docstring_or_comment(COMMENT_AFTER_FUNCTION)


def test_rate_on_a_stub_generator():
    outputs = {"p1": WITH_DOCSTRING, "p2": PLAIN, "p3": WITH_COMMENT, "p4": HASH_IN_STRING}
    seen = []

    def generate(prompts):
        seen.extend(prompts)
        return [outputs[p] for p in prompts]

    assert docstring_rate(generate, ["p1", "p2", "p3", "p4"]) == 0.5
    assert seen == ["p1", "p2", "p3", "p4"]
    assert math.isnan(docstring_rate(generate, []))


def test_probe_on_a_tiny_model(tiny_model, tokenizer, sft_heldout):
    cfg = EvalConfig(id_max_new_tokens=8, format_probe_prompts=2)
    out = format_probe(tiny_model, tokenizer, sft_heldout[1], cfg)
    assert set(out) == {
        "probe/docstring_rate",
        "probe/docstring_rate_raw",
        "probe/docstring_prob",
        "probe/docstring_prob_raw",
    }
    assert 0 <= out["probe/docstring_rate"] <= 1 and len(RAW_PROMPTS) >= 1
    assert 0 < out["probe/docstring_prob"] < 1 and 0 < out["probe/docstring_prob_raw"] < 1
    assert set(format_probe(tiny_model, tokenizer, None, cfg)) == {
        "probe/docstring_rate_raw",
        "probe/docstring_prob_raw",
    }


class _Peaked(torch.nn.Module):
    """Logits that give every next byte probability 1/V, except ``favourite`` with ``p``."""

    def __init__(self, vocab: int, favourite: int, p: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        rest = (1 - p) / (vocab - 1)
        self.logits = torch.full((vocab,), math.log(rest))
        self.logits[favourite] = math.log(p)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_opening_probability_is_the_exact_probability_of_a_docstring_or_comment():
    tok = byte_tokenizer()
    vocab, quote = len(tok), tok('"', add_special_tokens=False)["input_ids"][0]
    model = _Peaked(vocab, quote, p=0.5)
    lp = continuation_logprobs(model, tok, "def f():\n    ", ['"""', "#"])
    rest = 0.5 / (vocab - 1)
    assert lp == pytest.approx([3 * math.log(0.5), math.log(rest)], rel=1e-5)  # fp32 logits
    # P('"""') + P('#') = 0.5^3 + rest, the same for every context
    assert opening_probability(model, tok, ["a", "def g(x):\n    "]) == pytest.approx(0.125 + rest, rel=1e-5)
    assert math.isnan(opening_probability(model, tok, []))
