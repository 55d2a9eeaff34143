"""Perplexity of a text under a causal LM, over non-overlapping windows (pure, deterministic).

The text's first ``max_tokens`` tokens are cut into windows of ``seq_len`` tokens (the
remainder is dropped unless the text is shorter than one window); within each window
every token but the first is predicted from the ones before it. So a number is comparable
across checkpoints exactly when (tokenizer, text, seq_len, max_tokens) are equal; with
``seq_len`` fixed by the config it is. Loss is the mean NLL in nats per predicted token,
``ppl = exp(loss)``; a model that predicts uniformly over V tokens has ppl = V.

Texts: the embedded corpus's splits (offline) and ``hub_text`` for WikiText-2 (test split,
rows joined by blank lines as in the transformers perplexity guide) and C4
(``allenai/c4`` en validation, streamed, first ``max_docs`` documents), which need the Hub
and are cached as text files.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from overtraining.files import atomic_write_text

# Characters kept before tokenizing: no tokenizer averages more than 16 characters per
# token, so max_tokens * 16 characters always yield max_tokens tokens, fast.
_CHARS_PER_TOKEN_BOUND = 16
HUB_SOURCES = {
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "test", False),
    "c4": ("allenai/c4", "en", "validation", True),
}


@contextlib.contextmanager
def scoring_mode(model) -> Iterator[None]:
    """Eval mode without a KV cache for the duration; restores train mode and ``use_cache``.

    A plain ``model(input_ids)`` also builds a KV cache that scoring never reads (measured:
    ~20% of a tiny model's forward time on CPU).
    """
    config = getattr(model, "config", None)
    was_training, use_cache = model.training, getattr(config, "use_cache", None)
    model.eval()
    if config is not None:
        config.use_cache = False
    try:
        yield
    finally:
        model.train(was_training)
        if config is not None:
            config.use_cache = use_cache


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless stub)."""
    return next(model.parameters(), torch.empty(0)).device


def windows(ids: list[int], seq_len: int, max_tokens: int) -> torch.Tensor:
    """The non-overlapping windows scored: ``(n_windows, seq_len)``, or one shorter window."""
    ids = ids[:max_tokens]
    n = len(ids) // seq_len
    if n == 0:
        return torch.tensor([ids], dtype=torch.long)
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


@torch.no_grad()
def perplexity(model, tokenizer, text: str, seq_len: int, max_tokens: int, batch_size: int) -> dict[str, float]:
    """Mean next-token loss and perplexity of ``text`` over non-overlapping windows.

    Args:
        model: a causal LM; ``model(input_ids=...).logits`` is ``(B, T, V)``.
        tokenizer: its tokenizer (no special tokens are added).
        text: the text to score.
        seq_len: window length in tokens.
        max_tokens: tokens of the text scored (its first ones).
        batch_size: windows per forward pass.

    Returns:
        ``{"loss": nats per token, "ppl": exp(loss), "tokens": predicted tokens}``.

    Raises:
        ValueError: if the text has fewer than two tokens.
    """
    ids = tokenizer(text[: max_tokens * _CHARS_PER_TOKEN_BOUND], add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) < 2:
        raise ValueError(f"perplexity needs a text of at least 2 tokens, got {len(ids)}")
    batches = windows(ids, seq_len, max_tokens).split(batch_size)
    total, count = 0.0, 0
    with scoring_mode(model):
        for batch in batches:
            batch = batch.to(model_device(model))  # (B, T)
            logits = model(input_ids=batch).logits[:, :-1].float()  # (B, T-1, V)
            total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
            count += batch[:, 1:].numel()
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss), "tokens": float(count)}


def hub_text(name: str, cache_dir: str | os.PathLike | None = None, max_docs: int = 2000) -> str:
    """WikiText-2 (test) or C4 (en validation, first ``max_docs`` docs) as one text; needs the Hub.

    Args:
        name: wikitext2 | c4.
        cache_dir: if given, the text is kept in ``<cache_dir>/eval_data/hub_<name>.txt``
            (written atomically) and read from there next time.
        max_docs: documents of a streamed data set (C4) taken, in order.

    Returns:
        The documents joined by blank lines.
    """
    path = Path(cache_dir) / "eval_data" / f"hub_{name}.txt" if cache_dir is not None else None
    if path is not None and path.exists():
        return path.read_text(encoding="utf-8")
    import datasets

    repo, config, split, streaming = HUB_SOURCES[name]
    rows = datasets.load_dataset(repo, config, split=split, streaming=streaming)
    texts = [row["text"] for row in (itertools.islice(rows, max_docs) if streaming else rows)]
    text = "\n\n".join(texts)  # as in the transformers perplexity guide
    if path is not None:
        atomic_write_text(path, text)
    return text
