"""Chat formatting for SFT: messages -> ``input_ids`` + ``labels`` with the loss on assistant tokens.

One encode path serves every SFT data set (the embedded math task, local JSONL, the Hub
loaders): a conversation is a list of ``{"role": "user"|"assistant"|"system", "content": str}``
and ``encode_chat`` renders it with the tokenizer's chat template.

Which tokens carry the loss (``labels != -100``): the content of every assistant turn plus
the end-of-turn token(s) the template puts inside the turn (the papers' template: the eos),
so the fine-tuned model learns to stop. The ``<|assistant|>`` header, user and system turns
are masked. Two ways to find the assistant spans:

* the template marks them with ``{% generation %}`` (our byte tokenizer's template does):
  ``apply_chat_template(..., return_assistant_tokens_mask=True)`` returns the mask;
* otherwise (most Hub templates) by rendering prefixes: the span of assistant turn k runs
  from the end of ``render(messages[:k], add_generation_prompt=True)`` to the end of
  ``render(messages[:k + 1])``. This assumes a rendered prefix tokenizes to a prefix of the
  whole, true at the special-token boundaries templates place there. The span also takes
  whatever the template writes after the turn's end token (ChatML's and our ``\n``), one
  token more than the markers give.

A tokenizer with no template (base Pythia/OLMo) gets ``FALLBACK_CHAT_TEMPLATE``: the papers'
``<|user|>\\n...\\n<|assistant|>\\n...<eos>`` format (Springer et al. fine-tune base models with
it). On a BPE tokenizer that lacks the ``<|user|>`` tokens they are spelled out in pieces;
the format is still the same for every checkpoint of a family. The tokenizer is not modified.

Packing (``pack``) concatenates examples into rows of ``seq_len`` with ``position_ids`` that
restart at 0 for every example. Given position ids and *no* attention mask, transformers
(>= 4.56, ``masking_utils.find_packed_sequence_indices``) builds a block-diagonal causal mask
for SDPA/eager/flash attention, so attention does not cross example boundaries; the training
forward must also pass ``use_cache=False`` (a cache disables the detection). Tested in
``tests/sft/test_chat.py``.
"""

from __future__ import annotations

import re

import torch
from transformers import PreTrainedTokenizerBase

from overtraining.data.tokenizer import FALLBACK_CHAT_TEMPLATE

IGNORE_INDEX = -100
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


def chat_template_of(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template, or the papers' fallback when it has none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    return template or FALLBACK_CHAT_TEMPLATE


def _render_ids(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], template: str, generation_prompt: bool
) -> list[int]:
    text = tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _mask_by_prefixes(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], template: str
) -> tuple[list[int], list[int]]:
    """Assistant mask for templates without ``{% generation %}`` markers, from rendered prefixes."""
    ids = _render_ids(tokenizer, messages, template, generation_prompt=False)
    mask = [0] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:k], template, generation_prompt=True))
        end = len(_render_ids(tokenizer, messages[: k + 1], template, generation_prompt=False))
        mask[start:end] = [1] * (min(end, len(ids)) - start)
    return ids, mask


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_length: int) -> dict:
    """Tokenizes one conversation for SFT, with the loss on assistant tokens only.

    Args:
        tokenizer: a Hugging Face tokenizer (its chat template is used when it has one).
        messages: ``[{"role": ..., "content": ...}, ...]``.
        max_length: the encoding is truncated to this many tokens (from the right).

    Returns:
        ``{"input_ids": list[int], "labels": list[int]}`` of equal length, where labels
        are the input ids on assistant tokens (their end-of-turn token included) and
        ``IGNORE_INDEX`` elsewhere. The model shifts labels by one internally; so does
        ``overtraining.training.sft.token_loss``.
    """
    template = chat_template_of(tokenizer)
    if _GENERATION_TAG.search(template):
        out = tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    else:
        ids, mask = _mask_by_prefixes(tokenizer, messages, template)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    return {"input_ids": ids[:max_length], "labels": labels[:max_length]}


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of the prompt turns followed by the assistant header, ready for ``generate``."""
    return _render_ids(tokenizer, messages, chat_template_of(tokenizer), generation_prompt=True)


def pack(examples: list[dict], seq_len: int, pad_id: int = 0) -> list[dict]:
    """Greedily packs encoded examples, in order, into rows of exactly ``seq_len`` tokens.

    An example never straddles two rows (one longer than ``seq_len`` is truncated); a row
    that cannot take the next example is filled with a padding segment (labels ignored).
    ``position_ids`` restart at 0 for each example and for the padding, which keeps the
    attention block-diagonal (see the module docstring).

    Returns:
        Rows ``{"input_ids", "labels", "position_ids"}``, each a list of ``seq_len`` ints, and
        ``num_tokens``, the row's real (non-padding) token count.
    """
    rows: list[dict] = []
    row = _empty_row()
    for ex in examples:
        ids, labels = ex["input_ids"][:seq_len], ex["labels"][:seq_len]
        if len(row["input_ids"]) + len(ids) > seq_len:
            rows.append(_pad_row(row, seq_len, pad_id))
            row = _empty_row()
        row["input_ids"] += ids
        row["labels"] += labels
        row["position_ids"] += list(range(len(ids)))
    if row["input_ids"]:
        rows.append(_pad_row(row, seq_len, pad_id))
    return rows


def _empty_row() -> dict[str, list[int]]:
    return {"input_ids": [], "labels": [], "position_ids": []}


def _pad_row(row: dict[str, list[int]], seq_len: int, pad_id: int) -> dict[str, list[int]]:
    """Fills a packed row up to ``seq_len`` with a padding segment of its own positions."""
    free = seq_len - len(row["input_ids"])
    return {
        "input_ids": row["input_ids"] + [pad_id] * free,
        "labels": row["labels"] + [IGNORE_INDEX] * free,
        "position_ids": row["position_ids"] + list(range(free)),
        "num_tokens": seq_len - free,
    }


def collate(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Stacks encoded examples (or packed rows) into a batch.

    Unpacked examples are right-padded to the longest one and get an ``attention_mask``;
    packed rows (which carry ``position_ids``) are stacked as they are, without a mask.

    Returns:
        ``input_ids`` and ``labels`` (B, T) int64, plus ``attention_mask`` (B, T), or
        ``position_ids`` (B, T) and ``num_tokens`` (B,) for packed rows.
    """
    if "position_ids" in examples[0]:
        keys = ("input_ids", "labels", "position_ids", "num_tokens")
        return {k: torch.tensor([ex[k] for ex in examples]) for k in keys}
    width = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        ids[i, :n] = torch.tensor(ex["input_ids"])
        labels[i, :n] = torch.tensor(ex["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
