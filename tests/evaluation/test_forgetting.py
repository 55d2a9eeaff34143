import math

import pytest

from overtraining.evaluation.forgetting import direction, forgetting

BASE = {
    "ood/arc_easy/acc": 0.60,
    "ood/arc_easy/acc_norm": 0.55,
    "ood/piqa/acc": 0.70,
    "ood/wikitext/word_perplexity": 30.0,
    "ppl/ood_prose/loss": 2.0,
    "ppl/ood_prose/ppl": 7.5,
    "ppl/ood_prose/tokens": 1000.0,
    "ppl/id_heldout/loss": 1.5,
    "id/loss": 0.9,
    "time/eval_total_s": 3.0,
}


def test_a_model_identical_to_the_base_forgets_exactly_nothing():
    out = forgetting(BASE, dict(BASE))
    assert out and all(v == 0.0 and math.copysign(1, v) == 1 for v in out.values())


def test_known_pair_gives_the_signed_deltas():
    ft = dict(BASE) | {
        "ood/arc_easy/acc": 0.50,
        "ood/arc_easy/acc_norm": 0.60,
        "ood/piqa/acc": 0.65,
        "ood/wikitext/word_perplexity": 40.0,
        "ppl/ood_prose/loss": 2.5,
        "ppl/ood_prose/ppl": 12.0,
        "ppl/id_heldout/loss": 1.25,
        "id/loss": 0.1,
    }
    out = forgetting(BASE, ft)
    expected = {
        "forget/ood/arc_easy/acc": 0.10,
        "forget/ood/arc_easy/acc_norm": -0.05,
        "forget/ood/piqa/acc": 0.05,
        "forget/ood/wikitext/word_perplexity": 10.0,
        "forget/ppl/ood_prose/loss": 0.5,
        "forget/ppl/ood_prose/ppl": 4.5,
        "forget/ppl/id_heldout/loss": -0.25,
        "forget/mean_acc": 0.075,
        "forget/mean_ppl_loss": 0.125,
    }
    assert out.keys() == expected.keys()  # no id/*, time/*, tokens
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, abs=1e-12), k


def test_direction_by_name_and_nan_left_out_of_means():
    assert (direction("ood/x/acc_norm"), direction("ppl/x/loss"), direction("ppl/x/tokens")) == (1, -1, 0)
    out = forgetting({"ood/a/acc": 0.5, "ood/b/acc": float("nan")}, {"ood/a/acc": 0.25, "ood/b/acc": 0.5})
    assert math.isnan(out["forget/ood/b/acc"]) and out["forget/mean_acc"] == 0.25
