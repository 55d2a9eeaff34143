"""Format probe: does the model still produce a behaviour the SFT data never shows?

The blog's TinyGSM story: Gemma-2B fine-tuned on programs *without* docstrings keeps
writing docstrings, because its pretraining data is full of them; a small format change
is not easy to fine-tune. The embedded analogue: the SFT task's programs have no
docstrings or comments, while the pretraining text (the stdlib source) is full of both.
The probe greedy-decodes from fixed prompts and reports how often the generated function
body contains a docstring (``\"\"\"`` or ``'''``) or a ``#`` comment:

* ``probe/docstring_rate``: over the chat prompts of the first ``format_probe_prompts``
  held-out SFT examples (only when they are given): after SFT, the rate that should fall
  to the SFT data's 0 and, on overtrained checkpoints, might not;
* ``probe/docstring_rate_raw``: over ``RAW_PROMPTS``, bare function headers with no chat
  template: the base model's own habit, measurable before any fine-tuning.

Prompts are fixed and decoding is greedy, so the numbers are deterministic for a model.
Detection is lexical (string literals are blanked before looking for ``#``): tiny models
write code that the ``tokenize`` module rejects.

Greedy decoding of a tiny byte-level model often collapses into a run of spaces, so the
rates above read 0 whatever the model's habit. The likelihood form does not depend on
decoding: after a function header and its indentation, the probability that the body
opens with a docstring (``\"\"\"``) or a comment (``#``), summed over the two openings and
averaged over prompts:

* ``probe/docstring_prob``: after the chat prompt + ``ANSWER_HEAD`` (the SFT answers' own
  first line), i.e. where the SFT data always continues with code;
* ``probe/docstring_prob_raw``: after ``RAW_PROMPTS`` + indentation.

Context and opening are tokenized separately and concatenated, as lm-eval scores a
continuation, so the same code serves BPE tokenizers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch

from overtraining.config import EvalConfig
from overtraining.evaluation.id_metrics import chat_prompt, greedy_generate
from overtraining.evaluation.perplexity import model_device, scoring_mode

RAW_PROMPTS = (
    "def solution():\n",
    "def total_price(price, quantity):\n",
    "def average(numbers):\n",
    "def count_words(text):\n",
)
ANSWER_HEAD = "def solution():\n"
INDENT = "    "
OPENINGS = ('"""', "#")  # a docstring, a comment: both start a line that the SFT answers never have
_STRING = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def function_body(completion: str) -> str:
    """The first function body of a completion: after a leading ``def`` line, the indented lines."""
    lines = completion.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip()), len(lines))
    if start < len(lines) and lines[start].lstrip().startswith(("def ", "async def ")):
        start += 1
    body = []
    for line in lines[start:]:
        if line.strip() and not line[:1].isspace():
            break
        body.append(line)
    return "\n".join(body)


def has_docstring_or_comment(completion: str) -> bool:
    """Whether the completion's function body has a triple-quoted string or a ``#`` comment."""
    body = function_body(completion)
    if '"""' in body or "'''" in body:
        return True
    return any("#" in _STRING.sub("''", line) for line in body.splitlines())


def docstring_rate(generate: Callable[[list[str]], list[str]], prompts: list[str]) -> float:
    """Fraction of ``generate(prompts)``'s completions with a docstring or comment (nan if none)."""
    completions = generate(prompts) if prompts else []
    if not completions:
        return float("nan")
    return sum(map(has_docstring_or_comment, completions)) / len(completions)


@torch.no_grad()
def continuation_logprobs(model, tokenizer, context: str, continuations: Sequence[str]) -> list[float]:
    """log p(continuation | context) for each continuation, in nats (one forward pass each)."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    with scoring_mode(model):
        for cont in continuations:
            tail = tokenizer(cont, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + tail], device=model_device(model))  # (1, T)
            logp = model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float().log_softmax(-1)  # (len(tail), V)
            out.append(float(logp.gather(1, ids[0, len(ctx) :, None]).sum()))
    return out


def opening_probability(model, tokenizer, contexts: Sequence[str]) -> float:
    """Mean over contexts of P(the next text is one of ``OPENINGS``) (nan without contexts)."""
    probs = [sum(math.exp(lp) for lp in continuation_logprobs(model, tokenizer, c, OPENINGS)) for c in contexts]
    return sum(probs) / len(probs) if probs else float("nan")


def format_probe(model, tokenizer, heldout_raw: list[dict] | None, cfg: EvalConfig) -> dict[str, float]:
    """Runs the probe on a model (greedy decoding, ``cfg.id_max_new_tokens`` new tokens).

    Args:
        model: the (base or fine-tuned) causal LM.
        tokenizer: its tokenizer, with a chat template.
        heldout_raw: held-out SFT examples with ``messages``; None gives only the raw rate.
        cfg: the eval config (``format_probe_prompts``, ``id_max_new_tokens``, batch size).

    Returns:
        ``probe/docstring_rate`` and ``probe/docstring_prob`` (with held-out prompts),
        ``probe/docstring_rate_raw`` and ``probe/docstring_prob_raw``.
    """

    def generate(prompts: list[str]) -> list[str]:
        return greedy_generate(model, tokenizer, prompts, cfg.id_max_new_tokens, cfg.generation_batch_size)

    out = {
        "probe/docstring_rate_raw": docstring_rate(generate, list(RAW_PROMPTS)),
        "probe/docstring_prob_raw": opening_probability(model, tokenizer, [p + INDENT for p in RAW_PROMPTS]),
    }
    if heldout_raw:
        prompts = [chat_prompt(tokenizer, ex["messages"]) for ex in heldout_raw[: cfg.format_probe_prompts]]
        out["probe/docstring_rate"] = docstring_rate(generate, prompts)
        out["probe/docstring_prob"] = opening_probability(model, tokenizer, [p + ANSWER_HEAD + INDENT for p in prompts])
    return out
