"""SFT data: config checks, the embedded and JSONL sources, the Hub row converters, scorers."""

import json

import datasets
import pytest

from overtraining.config import SFTDataConfig
from overtraining.data import sft_data
from overtraining.data.chat import IGNORE_INDEX
from overtraining.data.sft_data import load_sft_data, score_fn
from overtraining.data.tokenizer import byte_tokenizer


def test_unknown_name_suggests_the_right_one():
    with pytest.raises(ValueError, match="did you mean 'sst2'"):
        SFTDataConfig(name="sst-2")


def test_embedded_math_is_encoded_with_prompts_for_scoring():
    data = load_sft_data(SFTDataConfig(num_train=40, num_heldout=5, max_length=512), byte_tokenizer())
    assert (data.name, len(data.train), len(data.heldout), len(data.heldout_raw)) == ("embedded_math", 40, 5, 5)
    raw = data.heldout_raw[0]
    assert [m["role"] for m in raw["messages"]] == ["user"]
    assert score_fn("embedded_math")(raw["reference"], raw)
    assert all(any(t != IGNORE_INDEX for t in ex["labels"]) for ex in data.train)


def test_packing_keeps_every_trained_token():
    tok = byte_tokenizer()
    plain = load_sft_data(SFTDataConfig(num_train=40, num_heldout=5, max_length=512), tok)
    packed = load_sft_data(SFTDataConfig(num_train=40, num_heldout=5, max_length=512, packing=True), tok)
    assert len(packed.train) < len(plain.train)
    count = lambda exs: sum(t != IGNORE_INDEX for ex in exs for t in ex["labels"])
    assert count(packed.train) == count(plain.train)


def test_jsonl_source_and_its_errors(tmp_path):
    path = tmp_path / "chat.jsonl"
    rows = [
        {
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            "answer": str(i),
        }
        for i in range(10)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    data = load_sft_data(SFTDataConfig(name="jsonl", path=str(path), num_train=0, num_heldout=3), byte_tokenizer())
    assert len(data.train) == 7 and len(data.heldout_raw) == 3
    raw = data.heldout_raw[0]
    assert raw["reference"] == f"a{raw['answer']}" and raw["messages"][-1]["role"] == "user"
    with pytest.raises(FileNotFoundError, match="sft_data.path="):
        load_sft_data(SFTDataConfig(name="jsonl", path=str(tmp_path / "missing.jsonl")), byte_tokenizer())
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "no answer"}]}))
    with pytest.raises(ValueError, match="chat.jsonl:1"):
        load_sft_data(SFTDataConfig(name="jsonl", path=str(path)), byte_tokenizer())


def test_hub_rows_become_messages():
    hh = sft_data.hh_messages("\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: Bye now.")
    assert [m["role"] for m in hh] == ["user", "assistant", "user", "assistant"] and hh[-1]["content"] == "Bye now."
    sst = sft_data.sst2_example({"sentence": "a great film ", "label": 1})
    assert sst["answer"] == "positive" and sst["messages"][1]["content"] == "positive"
    siqa = sft_data.siqa_example(
        {"context": "c", "question": "q", "answerA": "x", "answerB": "y", "answerC": "z", "label": "2"}
    )
    assert siqa["answer"] == "B" and "C: z" in siqa["messages"][0]["content"]
    gsm = sft_data.gsm8k_example({"question": "q", "answer": "2 * 3 = <<2*3=6>>6 apples\n#### 6"})
    assert gsm["answer"] == 6 and "<<" not in gsm["messages"][1]["content"]
    code = 'def simple_math_problem() -> int:\n    """Docstring."""\n    a = 2  # two\n    return a * 3\n'
    tiny = sft_data.tinygsm_example({"question": "q", "code": code})
    assert '"""' not in tiny["messages"][1]["content"] and "#" not in tiny["messages"][1]["content"]
    assert score_fn("tinygsm")(tiny["messages"][1]["content"], {"answer": 6})


def test_hub_loader_goes_through_the_same_encode_path(monkeypatch):
    rows = {
        "train": [{"idx": i, "sentence": f"film {i}", "label": i % 2} for i in range(30)],
        "validation": [{"idx": i, "sentence": f"movie {i}", "label": i % 2} for i in range(8)],
    }
    calls = []

    def fake_load_dataset(path, split, **kwargs):
        calls.append((path, split))
        return datasets.Dataset.from_list(rows[split])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_sft_data(SFTDataConfig(name="sst2", num_train=20, num_heldout=4, max_length=128), byte_tokenizer())
    assert calls == [("stanfordnlp/sst2", "train"), ("stanfordnlp/sst2", "validation")]
    assert len(data.train) == 20 and len(data.heldout_raw) == 4
    raw = data.heldout_raw[0]
    assert score_fn("sst2")(f" {raw['answer'].upper()}.", raw) and not score_fn("sst2")("neutral", raw)


def test_score_fn_names():
    assert score_fn("siqa")("B) because", {"answer": "B"})
    assert score_fn("tulu3") is None and score_fn("anthropic_hh") is None
