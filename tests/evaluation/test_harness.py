import math

import pytest
import torch

from overtraining.config import EvalConfig
from overtraining.evaluation.harness import flatten_results, run_lm_eval


def test_embedded_suite_runs_through_lm_eval_offline(tiny_model, tokenizer, cache_dir):
    tiny_model.train()
    rng = torch.get_rng_state()
    metrics = run_lm_eval(tiny_model, tokenizer, EvalConfig(limit=20), cache_dir)
    for task in ("embedded_prose_cloze", "embedded_code_mc"):
        for name in ("acc", "acc_norm"):
            assert 0.0 <= metrics[f"ood/{task}/{name}"] <= 1.0
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert math.isfinite(metrics[f"ood/embedded_prose_ppl/{name}"])
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["ood/embedded_prose_ppl/byte_perplexity"] == pytest.approx(260, rel=0.2)  # untrained ~ uniform
    assert tiny_model.training and tiny_model.config.use_cache  # state restored
    assert torch.equal(torch.get_rng_state(), rng)  # lm-eval did not reseed torch


def test_no_tasks_is_a_no_op(tiny_model, tokenizer, cache_dir):
    assert run_lm_eval(tiny_model, tokenizer, EvalConfig(suite="none"), cache_dir) == {}


def test_flatten_keeps_metrics_and_drops_the_rest():
    results = {
        "arc_easy": {
            "alias": "arc_easy",
            "sample_len": 10,
            "acc,none": 0.5,
            "acc_stderr,none": "N/A",
            "exact_match,strict-match": 0.25,
        }
    }
    assert flatten_results(results) == {"ood/arc_easy/acc": 0.5, "ood/arc_easy/exact_match_strict-match": 0.25}


def test_standard_task_names_are_in_lm_evals_registry_and_a_typo_is_named(tiny_model, tokenizer, cache_dir):
    """Indexes lm-eval's built-in tasks (~7 s, no download): the standard suite's names exist."""
    from overtraining.config import STANDARD_TASKS
    from overtraining.evaluation.harness import _task_manager

    assert set(STANDARD_TASKS) <= set(_task_manager(True).all_tasks)
    with pytest.raises(ValueError, match="did you mean 'arc_easy'") as err:
        run_lm_eval(tiny_model, tokenizer, EvalConfig(suite="standard", tasks=["arc_esy"]), cache_dir)
    assert len(str(err.value)) < 200
