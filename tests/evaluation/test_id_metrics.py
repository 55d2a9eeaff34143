import math

import pytest

from overtraining.config import EvalConfig
from overtraining.data.tokenizer import VOCAB_SIZE
from overtraining.evaluation.id_metrics import chat_prompt, greedy_generate, heldout_loss, id_metrics


def test_heldout_loss_of_a_uniform_model_is_log_vocab_over_masked_tokens(uniform_lm, sft_heldout):
    tokenized, _ = sft_heldout
    assert heldout_loss(uniform_lm(VOCAB_SIZE), tokenized, 4, 257) == pytest.approx(math.log(VOCAB_SIZE), rel=1e-6)


def test_greedy_completions_do_not_depend_on_the_batch(tiny_model, tokenizer, sft_heldout):
    prompts = [chat_prompt(tokenizer, ex["messages"]) for ex in sft_heldout[1][:3]] + ["def solution():\n"]
    alone = [greedy_generate(tiny_model, tokenizer, [p], 12, 1)[0] for p in prompts]
    assert greedy_generate(tiny_model, tokenizer, prompts, 12, 4) == alone  # left padding is masked


def test_chat_prompt_drops_a_reference_answer(tokenizer):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ANSWER"}]
    assert chat_prompt(tokenizer, turns) == "<|user|>\nhi\n<|assistant|>\n"


def test_id_metrics_scores_greedy_completions(tiny_model, tokenizer, sft_heldout):
    tokenized, raw = sft_heldout
    cfg = EvalConfig(id_max_examples=4, id_max_new_tokens=8)
    calls = []

    def score(completion, example):
        calls.append(example["answer"])
        return example["answer"] % 2 == 0

    out = id_metrics(tiny_model, tokenizer, tokenized, raw, score, cfg)
    assert calls == [3, 4, 5, 6] and out["id/accuracy"] == 0.5
    assert math.isfinite(out["id/loss"]) and out["id/loss"] > 0
    assert set(id_metrics(tiny_model, tokenizer, tokenized, None, None, cfg)) == {"id/loss"}
