import pytest

from overtraining.data.corpus import build_embedded_corpus, local_corpus
from overtraining.data.tokenizer import VOCAB_SIZE, byte_tokenizer, encode_bytes


def test_embedded_corpus_splits_and_determinism(corpus_cache, tmp_path):
    a = build_embedded_corpus(corpus_cache)
    assert {"train", "id_heldout", "ood_prose"} <= set(a.splits)
    assert len(a.text("train")) > 5_000_000  # megabytes of stdlib source
    assert "def " in a.text("train") and "def " not in a.text("ood_prose")[:2000]
    b = build_embedded_corpus(tmp_path)  # a second, independent build
    for split in a.splits:
        assert a.text(split) == b.text(split)
    assert a.text("id_heldout")[:1000] not in a.text("train")
    with pytest.raises(KeyError, match="has no split"):
        a.text("nope")


def test_local_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(f'{{"text": "doc {i}"}}' for i in range(100)))
    c = local_corpus(path)
    assert c.text("id_heldout").split("\n\n") == ["doc 0", "doc 50"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        local_corpus(tmp_path / "missing.txt")


def test_byte_tokenizer_is_bytes():
    tok = byte_tokenizer()
    text = 'def f(x):\n    """Doc é."""\n    return x'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(encode_bytes(text)) and len(tok) == VOCAB_SIZE
    assert tok.decode(ids) == text
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=False
    )
    assert chat == "<|user|>\nhi\n<|assistant|>\nyo<|endoftext|>\n"
