"""The report's quantization figure and findings, on frames and records with known answers."""

from __future__ import annotations

import pandas as pd
import pytest

from overtraining.report import build_report
from overtraining.report.quantization import (
    bit_columns,
    cooldown_pairs,
    growth_findings,
    quantization_findings,
    quantization_vs_tokens,
)
from overtraining.results import write_record
from tests.report.conftest import make_record

BUDGETS = (250_000, 500_000, 1_000_000, 2_000_000, 4_000_000)
Q4, Q8 = "base/quant/bits=4/delta_loss", "base/quant/bits=8/delta_loss"


def _frame(seeds=(0,), noise: float = 0.0, cooldown: float | None = None) -> pd.DataFrame:
    """int4 rise 0.1, 0.2, 0.3, 0.4, 0.5 (+ noise * seed); int8 flat-ish; optional cooldown branches."""
    rows = []
    for i, tokens in enumerate(BUDGETS):
        for seed in seeds:
            q4 = 0.1 * (i + 1) + noise * seed
            rows.append({"branch": "constant", "checkpoint": f"embedded/tokens_{i}", "tokens": tokens, "seed": seed,
                         Q4: q4, Q8: 0.01 * (-1) ** i, "base/perturb/gamma=0.1/delta_loss_mean": 0.05 * (i + 1),
                         "base/perturb/gamma=0.1/delta_loss_std": 0.01})  # fmt: skip
            if cooldown is not None:
                rows.append({"branch": "constant+cooldown", "checkpoint": f"embedded/tokens_{i}-cooldown",
                             "tokens": int(tokens * 1.1), "seed": seed, Q4: q4 * cooldown, Q8: 0.02})  # fmt: skip
    return pd.DataFrame(rows)


def test_bit_columns_widest_first():
    assert list(bit_columns(_frame())) == [8, 4]


def test_single_seed_growth_is_a_heuristic_verdict():
    by_effect = {f.effect: f for f in growth_findings(_frame())}
    int4 = by_effect["Quantization sensitivity grows with tokens (int4)"]
    assert int4.appears == "yes (single seed, untested)"
    assert "0.1 at 250K -> 0.5 at 4M tokens, x5; Spearman rho = 1.00" in int4.numbers
    assert by_effect["Quantization sensitivity grows with tokens (int8)"].appears.startswith("no")  # alternating


def test_identical_seed_values_count_once_and_say_so():
    f = growth_findings(_frame(seeds=(0, 1, 2)))[1]  # RTN ignores the seed: three equal values per budget
    assert f.appears == "yes (seeds agree, untested)" and f.seeds == "1 distinct value (3 seeds agree)"


def test_distinct_seed_replicas_get_the_spearman_test():
    f = growth_findings(_frame(seeds=(0, 1), noise=0.01))[1]
    assert f.appears == "yes" and "replicas: rho = 0.98, p < 1e-4" in f.numbers  # 10 replicas, x tied in pairs
    assert f.seeds == "2"


def test_cooldown_jump_pairs_each_branch_with_its_parent():
    df = _frame(cooldown=1.5)
    pairs = cooldown_pairs(df, "constant", Q4)
    assert pairs["tokens"].tolist() == list(BUDGETS)
    assert pairs["cooldown"].tolist() == pytest.approx([0.15, 0.3, 0.45, 0.6, 0.75])
    jumps = {f.effect: f for f in quantization_findings(df) if "cooldown (" in f.effect}
    int4 = jumps["[constant] Quantization sensitivity jumps on cooldown (int4)"]
    assert int4.appears == "yes (single draw per checkpoint)"
    assert "5/5 budgets; sign test p = 0.031" in int4.numbers and int4.interval == "median relative change +50%"
    lower = {f.effect: f for f in quantization_findings(_frame(cooldown=0.5))}
    assert lower["[constant] Quantization sensitivity jumps on cooldown (int4)"].appears.startswith("reversed")


def test_figure_and_report_page(tmp_path):
    assert quantization_vs_tokens(_frame(cooldown=1.5), tmp_path).name == "quantization_vs_tokens.png"
    assert quantization_vs_tokens(_frame().drop(columns=[Q4, Q8]), tmp_path / "none") is None
    for i, (name, tokens) in enumerate([("tokens_250K", 250_000), ("tokens_1M", 1_000_000), ("tokens_4M", 4_000_000)]):
        record = make_record(name, tokens, 1e-3, 0)
        record.metrics |= {Q4: 0.1 * (i + 1), "base/quant/bits=4/loss": 2.0, "base/quant/base_loss": 1.9}
        write_record(record, tmp_path / "sweep" / str(i))
    html = build_report([tmp_path / "sweep"], tmp_path / "report", n_boot=10)
    page = html.read_text()
    assert "Quantization sensitivity grows with tokens (int4)" in page and "Sensitivity to weight quantization" in page
    assert (html.parent / "quantization_vs_tokens.png").exists()
    table = pd.read_csv(html.parent / "findings.csv")
    row = table[table["effect"] == "Quantization sensitivity grows with tokens (int4)"].iloc[0]
    assert row["appears?"] == "yes (single seed, untested)"
