"""The byte-level tokenizer of the embedded default.

Why bytes rather than a locally trained BPE: no training step, identical for every
trajectory and machine (a BPE trained on a different Python version's stdlib would give
different ids), a 260-row embedding that keeps the tiny models tiny, and token counts
that are simply byte counts. Token id = byte value (0..255); four special tokens follow.

It is a real ``PreTrainedTokenizerFast`` (saved beside every checkpoint, reloaded with
``AutoTokenizer.from_pretrained``) with the papers' chat template: ``<|user|>`` /
``<|assistant|>`` turns (Springer et al. fine-tune base models that have no template).
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS, PAD, USER, ASSISTANT = "<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = (EOS, PAD, USER, ASSISTANT)
VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)

# The fallback chat template (used for any tokenizer without one). `{% generation %}`
# marks the assistant spans so that `return_assistant_tokens_mask=True` masks the loss.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters (ByteLevel's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Builds the byte-level tokenizer (ids 0..255 are bytes, then the special tokens)."""
    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        bos_token=EOS,
        unk_token=None,
        additional_special_tokens=[USER, ASSISTANT],
    )
    fast.chat_template = FALLBACK_CHAT_TEMPLATE
    fast.model_max_length = 1 << 30
    return fast


def encode_bytes(text: str) -> np.ndarray:
    """Token ids of ``text`` under the byte tokenizer, fast (no special tokens): its UTF-8 bytes."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
