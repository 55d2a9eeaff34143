"""Chat encoding: assistant-only labels, the template fallbacks, truncation, packing."""

import pytest
import torch

from overtraining.config import ModelConfig
from overtraining.data.chat import IGNORE_INDEX, collate, encode_chat, encode_prompt, pack
from overtraining.data.tokenizer import EOS, FALLBACK_CHAT_TEMPLATE, byte_tokenizer
from overtraining.models import build_tiny_model

CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "yo"},
    {"role": "user", "content": "more"},
    {"role": "assistant", "content": "ok!"},
]


def _trained_text(tok, enc: dict) -> str:
    return tok.decode([t for t in enc["labels"] if t != IGNORE_INDEX])


def test_only_assistant_tokens_and_their_eos_are_trained():
    tok = byte_tokenizer()
    enc = encode_chat(tok, CHAT, max_length=1000)
    assert len(enc["input_ids"]) == len(enc["labels"])
    # byte tokenizer: one token per byte, plus one eos per assistant turn
    assert sum(t != IGNORE_INDEX for t in enc["labels"]) == len("yo") + 1 + len("ok!") + 1
    assert _trained_text(tok, enc) == f"yo{EOS}ok!{EOS}"
    assert tok.decode(enc["input_ids"]).startswith("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\nyo")


def test_templates_without_generation_markers_mask_by_prefixes():
    marked = byte_tokenizer()
    plain = byte_tokenizer()
    plain.chat_template = FALLBACK_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    by_markers, by_prefixes = encode_chat(marked, CHAT, 1000), encode_chat(plain, CHAT, 1000)
    assert by_prefixes["input_ids"] == by_markers["input_ids"]
    # the prefix spans also take the newline the template writes after each assistant turn
    assert _trained_text(plain, by_prefixes) == f"yo{EOS}\nok!{EOS}\n"


def test_tokenizer_without_template_gets_the_papers_format():
    tok = byte_tokenizer()
    tok.chat_template = None
    assert encode_chat(tok, CHAT, 1000) == encode_chat(byte_tokenizer(), CHAT, 1000)
    assert tok.chat_template is None  # not modified


def test_truncation_and_prompt():
    tok = byte_tokenizer()
    enc = encode_chat(tok, CHAT, max_length=10)
    assert len(enc["input_ids"]) == len(enc["labels"]) == 10
    prompt = encode_prompt(tok, CHAT[:2])
    assert tok.decode(prompt).endswith("<|user|>\nhi\n<|assistant|>\n")


def test_collate_pads_right_and_masks():
    batch = collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}], pad_id=9)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert batch["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_packing_restarts_positions_and_isolates_examples():
    tok = byte_tokenizer()
    examples = [
        encode_chat(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}], 64)
        for q, a in [("one", "1"), ("two plus two", "4"), ("three", "3")]
    ]
    seq_len = len(examples[0]["input_ids"]) + len(examples[1]["input_ids"]) + 2
    rows = pack(examples, seq_len, pad_id=tok.pad_token_id)
    assert len(rows) == 2 and all(len(r["input_ids"]) == seq_len for r in rows)
    assert rows[0]["num_tokens"] == seq_len - 2
    n0 = len(examples[0]["input_ids"])
    assert rows[0]["position_ids"][n0 - 1 : n0 + 1] == [n0 - 1, 0]
    assert sum(t != IGNORE_INDEX for r in rows for t in r["labels"]) == sum(
        t != IGNORE_INDEX for ex in examples for t in ex["labels"]
    )

    model = build_tiny_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64), 0).eval()
    batch = collate(rows, tok.pad_token_id)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([examples[1]["input_ids"]]), use_cache=False).logits
    n1 = len(examples[1]["input_ids"])
    assert packed[0, n0 : n0 + n1] == pytest.approx(alone[0], abs=1e-5)  # no attention across the boundary
