import math

from overtraining.config import EvalConfig
from overtraining.evaluation.evaluate import evaluate_model
from overtraining.evaluation.forgetting import forgetting


def test_evaluate_model_returns_one_flat_dict_and_the_base_forgets_nothing(
    tiny_model, tokenizer, corpus, cache_dir, sft_heldout
):
    tokenized, raw = sft_heldout
    cfg = EvalConfig(
        suite="none",
        ppl_splits=["ood_prose", "id_heldout"],
        ppl_max_tokens=2048,
        ppl_seq_len=128,
        id_max_examples=4,
        id_max_new_tokens=8,
        format_probe_prompts=2,
    )
    out = evaluate_model(tiny_model, tokenizer, cfg, corpus, cache_dir, tokenized, raw, lambda c, ex: True)
    for key in (
        "ppl/ood_prose/loss",
        "ppl/id_heldout/ppl",
        "id/loss",
        "id/accuracy",
        "probe/docstring_rate",
        "probe/docstring_rate_raw",
        "time/eval_ppl_s",
        "time/eval_id_s",
        "time/eval_probe_s",
        "time/eval_total_s",
    ):
        assert math.isfinite(out[key]), key
    assert out["id/accuracy"] == 1.0 and "time/eval_lm_eval_s" not in out
    again = evaluate_model(tiny_model, tokenizer, cfg, corpus, cache_dir, tokenized, raw, lambda c, ex: True)
    forget = forgetting(out, again)
    assert forget["forget/mean_ppl_loss"] == 0.0 and all(v == 0.0 for v in forget.values())


def test_none_preset_evaluates_nothing(tiny_model, tokenizer, corpus, cache_dir):
    cfg = EvalConfig(suite="none", ppl_splits=[], id_max_examples=0, format_probe=False)
    assert set(evaluate_model(tiny_model, tokenizer, cfg, corpus, cache_dir)) == {"time/eval_total_s"}
