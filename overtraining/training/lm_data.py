"""Language-model batches from a token array, a pure function of (seed, step).

The batch at step ``s`` is drawn from ``numpy.random.default_rng([seed, s])``, so a resumed
run sees exactly the batches an uninterrupted one would, with no data-loader state to save.
"""

from __future__ import annotations

import numpy as np
import torch


def lm_batch(tokens: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int) -> torch.Tensor:
    """Random windows of ``seq_len`` tokens; (B, T) long tensor, the same for the same step."""
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, len(tokens) - seq_len, size=batch_size)
    return torch.from_numpy(np.stack([tokens[s : s + seq_len] for s in starts]).astype(np.int64))


def fixed_batches(tokens: np.ndarray, num_batches: int, batch_size: int, seq_len: int) -> list[dict]:
    """Evenly spaced, non-overlapping windows for evaluation: the same batches every time.

    Returns:
        ``num_batches`` dicts with ``input_ids`` and ``labels`` (B, T).
    """
    n = num_batches * batch_size
    if len(tokens) < n * seq_len:
        raise ValueError(f"text of {len(tokens)} tokens is too short for {n} windows of {seq_len}")
    starts = np.linspace(0, len(tokens) - seq_len, n).astype(np.int64)
    windows = torch.from_numpy(np.stack([tokens[s : s + seq_len] for s in starts]).astype(np.int64))
    return [{"input_ids": w, "labels": w} for w in windows.split(batch_size)]
