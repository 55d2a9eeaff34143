"""In-distribution metrics of the SFT task: held-out loss and greedy-generation accuracy.

* ``id/loss``: mean NLL (nats) over the assistant tokens of the held-out examples, i.e.
  exactly the SFT training objective (labels = -100 are masked), averaged over tokens.
* ``id/accuracy``: the fraction of held-out prompts whose greedy completion the task's
  ``score_fn(completion, example)`` accepts (e.g. the program's answer is right).

Both use the first ``cfg.id_max_examples`` held-out examples (deterministic). Generation is
batched, left-padded and greedy (``do_sample=False``), so a completion does not depend on
the batch it was decoded in; the prompt is the chat template's rendering of the example's
prompt turns with ``add_generation_prompt=True``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import GenerationConfig

from overtraining.config import EvalConfig
from overtraining.evaluation.perplexity import model_device
from overtraining.training.losses import heldout_loss

ScoreFn = Callable[[str, dict], bool]


def _pad(seqs: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    """Pads lists of ids to one ``(B, T)`` tensor, on the right (or the left)."""
    width = max(len(s) for s in seqs)
    rows = [[value] * (width - len(s)) + s if left else s + [value] * (width - len(s)) for s in seqs]
    return torch.tensor(rows, dtype=torch.long)


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """The chat-template rendering of an example's prompt turns, ready for the assistant turn.

    Trailing assistant turns (a reference answer, if any) are dropped.
    """
    turns = list(messages)
    while turns and turns[-1]["role"] == "assistant":
        turns.pop()
    return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of text prompts, batched and left-padded.

    A prompt longer than the model's context minus ``max_new_tokens`` keeps its last tokens.

    Returns:
        The decoded new text of each prompt (special tokens, e.g. EOS, removed).
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    keep = max(1, limit - max_new_tokens) if limit else None
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"][-keep if keep else 0 :] for p in prompts]
    gen = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    was_training, device, out = model.training, model_device(model), []
    model.eval()
    try:
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            ids = _pad(chunk, tokenizer.pad_token_id, left=True).to(device)  # (B, T)
            mask = _pad([[1] * len(c) for c in chunk], 0, left=True).to(device)
            new = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1] :]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


def id_metrics(
    model,
    tokenizer,
    heldout: list[dict] | None,
    heldout_raw: list[dict] | None,
    score_fn: ScoreFn | None,
    cfg: EvalConfig,
) -> dict[str, float]:
    """The SFT task's held-out loss and (with raw examples and a scorer) its accuracy.

    Args:
        model: the (base or fine-tuned) causal LM.
        tokenizer: its tokenizer, with a chat template and a pad token.
        heldout: tokenized held-out examples (``input_ids``, ``labels``); None skips ``id/loss``.
        heldout_raw: the same examples untokenized, each with ``messages`` (the prompt
            turns) and whatever ``score_fn`` needs; None skips ``id/accuracy``.
        score_fn: ``score_fn(completion, example) -> bool``.
        cfg: the eval config (``id_max_examples``, ``id_max_new_tokens``, batch size).

    Returns:
        ``{"id/loss": ..., "id/accuracy": ...}`` (accuracy only when it can be computed).
    """
    n, size = cfg.id_max_examples, cfg.loop_batch_size
    out = {"id/loss": heldout_loss(model, heldout[:n], size, tokenizer.pad_token_id)} if heldout else {}
    if heldout_raw and score_fn is not None:
        examples = heldout_raw[:n]
        prompts = [chat_prompt(tokenizer, ex["messages"]) for ex in examples]
        completions = greedy_generate(model, tokenizer, prompts, cfg.id_max_new_tokens, cfg.generation_batch_size)
        correct = [bool(score_fn(c, ex)) for c, ex in zip(completions, examples, strict=True)]
        out["id/accuracy"] = sum(correct) / len(correct)
    return out
