"""The losses every stage shares: next-token NLL over trained labels, the held-out SFT loss,
and the mean LM loss over fixed batches. One implementation each, so the SFT probes, the ID
metric, pretraining's held-out losses and the geometry probes agree to the last digit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from overtraining.data.chat import IGNORE_INDEX, collate


def token_loss(
    model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor, sparse: bool = False
) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over the trained (unmasked) labels of a batch, and their count.

    Args:
        model: a causal LM (or a DeepSpeed engine / PeftModel around one).
        inputs: ``input_ids`` (B, T) and ``attention_mask`` or ``position_ids`` (B, T).
        labels: (B, T) token ids, ``IGNORE_INDEX`` where not trained.
        sparse: project only the trained positions onto the vocabulary (``logits_to_keep``
            as a boolean mask): the same loss, without the (B, T, V) logits of the prompts.
    """
    trained = labels[:, 1:] != IGNORE_INDEX  # (B, T-1): position t predicts token t+1
    if sparse:
        keep = F.pad(trained, (0, 1))  # (B, T)
        logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits  # (N, V)
        targets = labels[:, 1:][trained]  # (N,), the same row-major order
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1].flatten(0, 1)  # (B * (T-1), V)
        targets = labels[:, 1:].flatten()
    nll = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return nll, int(trained.sum())


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module,
    examples: Sequence[dict],
    batch_size: int,
    pad_id: int,
    device: torch.device | None = None,
    sparse: bool = False,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> float:
    """Mean NLL per trained token (the SFT objective) over encoded examples, in eval mode.

    Args:
        model: a causal LM (or a wrapper whose forward takes the same inputs).
        examples: encoded examples or packed rows (``input_ids``, ``labels``[, ``position_ids``]).
        batch_size: examples per forward pass.
        pad_id: the id padding ``input_ids`` (masked out of attention and loss).
        device: where to run; the model's first parameter's device when None.
        sparse: see ``token_loss``.
        autocast: a context factory (bf16 autocast on a GPU under the trainer).

    Returns:
        Nats per trained token; NaN when no token is trained.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            batch = collate(list(examples[i : i + batch_size]), pad_id)
            keys = ("input_ids", "attention_mask", "position_ids")
            inputs = {k: batch[k].to(device) for k in keys if k in batch}
            with autocast():
                nll, n = token_loss(model, inputs, batch["labels"].to(device), sparse)
            total, count = total + nll.item(), count + n
    finally:
        model.train(was_training)
    return total / count if count else float("nan")


@torch.no_grad()
def lm_loss(model: torch.nn.Module, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Token-weighted mean next-token loss (nats) over fixed batches (``input_ids``, ``labels``), in eval mode.

    Raises:
        ValueError: if the batches hold no target token.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # labels are shifted inside the model
            total += float(model(**batch).loss) * n
            count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("batches contain no target token (all labels are -100)")
    return total / count
