"""The report end to end on a synthetic sweep: table, every figure, a self-contained page, CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from overtraining.report import ReportError, build_report
from overtraining.report.__main__ import main
from overtraining.results import CellRecord, read_record, write_record

from .conftest import FIGURES, make_record, write_sweep


def test_every_figure_is_drawn(report_html: Path) -> None:
    out = report_html.parent
    missing = [f for f in FIGURES if not (out / f).is_file()]
    assert not missing
    assert all((out / f).stat().st_size > 10_000 for f in FIGURES)  # real plots, not empty canvases


def test_table_has_one_row_per_cell(report_html: Path) -> None:
    csv = pd.read_csv(report_html.parent / "cells.csv")
    parquet = pd.read_parquet(report_html.parent / "cells.parquet")
    assert len(csv) == len(parquet) == 8 * 2 * 2 + 2
    assert {"cell_id", "tokens", "lr", "branch", "ft/ppl/ood_prose", "drift/mpa/layer=2"} <= set(parquet.columns)
    assert set(parquet["branch"]) == {"wsd", "wsd + cooldown"}
    assert parquet.loc[parquet["status"] == "failed", "ft/ppl/ood_prose"].isna().all()


def test_html_is_self_contained(report_html: Path) -> None:
    page = report_html.read_text()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == len(FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"<link|@import|url\(|https?://", page)


def test_findings_name_the_planted_optima(report_html: Path) -> None:
    page = report_html.read_text()
    assert "[wsd] After fine-tuning at LR 1e-4, OOD prose perplexity is best at 4M pretraining tokens" in page
    assert "[wsd] After fine-tuning at LR 1e-3, OOD prose perplexity is best at 2M pretraining tokens" in page
    assert "[wsd] The U-shape of fine-tuned OOD prose perplexity (LR 1e-3) appears: best at 2M" in page
    assert "[wsd] Progressive sensitivity (noise gamma = 0.2) appears" in page


def test_partial_sweep_gives_partial_report(tmp_path: Path) -> None:
    """Cells with only an ID metric and no curves: the figures that need more are skipped."""
    for i, (tokens, lr) in enumerate([(1e6, 1e-4), (2e6, 1e-4), (4e6, 1e-4)]):
        rec = CellRecord(
            cell_id=f"c{i}",
            status="completed",
            checkpoint=f"pythia-70m/step{i}",
            tokens=int(tokens),
            lr=lr,
            schedule="constant",
            sft_data="sst2",
            seed=0,
            metrics={"ft/id/accuracy": 0.5 + i / 10},
        )
        write_record(rec, tmp_path / "sweep" / str(i))
    html = build_report([tmp_path / "sweep"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["id_vs_tokens.png"]
    assert "No fine-tuned metric spans" in html.read_text()


def test_no_records_is_a_one_line_error_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ReportError, match="no record.json under .*: pass a sweep dir"):
        build_report([tmp_path])
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no record.json") and err.count("\n") == 1
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_metric_lists_the_known_ones(sweep_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="--metric takes one of: .*ppl/ood_prose"):
        build_report([sweep_dir], tmp_path, metric="ppl/wikitext")


def test_cli_writes_the_report_and_prints_its_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    for i, tokens in enumerate((1e6, 2e6, 4e6)):
        write_record(make_record(f"tokens_{i}", int(tokens), 1e-3, 0), sweep / str(i))
    assert main([str(sweep), "--metric", "ood/embedded_prose_cloze/acc", "--bootstrap", "10"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(sweep / "report" / "report.html")
    assert Path(printed).is_file()


def test_help_explains_the_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "python -m overtraining.report" in capsys.readouterr().out


def test_write_sweep_is_reusable(tmp_path: Path) -> None:
    assert len(list(write_sweep(tmp_path, with_extras=False).rglob("record.json"))) == 6 * 2 * 2


def test_constant_id_accuracy_is_not_used_to_tune_the_lr(tmp_path: Path) -> None:
    # A tiny model's exact-match accuracy is 0 in every cell: it cannot rank LRs, the ID loss can.
    root = write_sweep(tmp_path / "sweep", with_extras=False)
    for path in root.rglob("record.json"):
        record = read_record(path)
        record.metrics["ft/id/accuracy"] = 0.0
        write_record(record, path.parent)
    page = build_report([root], n_boot=10).read_text()
    assert "ID metric: ft/id/loss. Not used: ft/id/accuracy (the same in every cell)." in page
    assert "With the LR tuned per checkpoint for the best ID loss" in page


def test_page_opens_with_the_findings_table(report_html: Path) -> None:
    page = report_html.read_text()
    table = page.index('class="dataframe findings-table"')
    assert table < page.index('<ul class="findings">') < page.index("<img")
    head = page[table : page.index("</thead>", table)]
    assert [h in head for h in ("effect", "appears?", "numbers", "interval", "seeds (n)")] == [True] * 5
    findings = pd.read_csv(report_html.parent / "findings.csv").set_index("effect")
    u = findings.loc["[wsd] U-shape of fine-tuned OOD prose perplexity (LR 1e-3)"]
    assert (u["appears?"], str(u["seeds (n)"])) == ("yes", "2")
    assert u["numbers"].startswith("best 2M (30.02) -> 8M (46.02); rise +16, one-sided Welch p < 1e-4")
    assert "Student&#x27;s t-interval across seeds (scipy.stats.t)" in page
    # the synthetic base probes do not depend on the seed: one distinct value, not a single-seed sweep
    sens = findings.loc["[wsd] Progressive sensitivity (noise gamma = 0.2)"]
    assert (sens["appears?"], sens["seeds (n)"]) == ("yes (seeds agree, untested)", "1 distinct value (2 seeds agree)")


def test_groups_hold_the_mean_and_interval_over_seeds(report_html: Path) -> None:
    groups = pd.read_csv(report_html.parent / "groups.csv")
    assert len(groups) == 8 * 2 and (groups["n_seeds"] == 2).all()
    g = groups[(groups["checkpoint"] == "embedded/tokens_2M") & (groups["lr"] == 1e-3)].iloc[0]
    # ft = 30 + 0.05 * seed: mean 30.025, sem 0.025, half-width t_{0.975,1} * 0.025
    half = 12.706204736174707 * 0.025
    assert g["ft/ppl/ood_prose"] == pytest.approx(30.025)
    assert g["ft/ppl/ood_prose ci95_lo"] == pytest.approx(30.025 - half)
    assert g["ft/ppl/ood_prose ci95_hi"] == pytest.approx(30.025 + half)
    assert "Replica groups (16): mean [95% t-interval] over seeds" in report_html.read_text()


def test_update_figure_scales_noise_and_skips_old_records(tmp_path: Path) -> None:
    from overtraining.report.figures import forgetting_vs_update, landscape_2d, relative_noise
    from overtraining.report.table import records_to_frame

    df = records_to_frame([make_record("tokens_1M", 1_000_000, lr, 0) for lr in (1e-4, 1e-3)])
    # ||theta_base|| = update/norm / update/rel_norm = 100; noise norm = gamma * 100
    assert relative_noise(df) == pytest.approx({0.05: 0.05, 0.1: 0.1, 0.2: 0.2})
    assert forgetting_vs_update(df, "ppl/ood_prose", tmp_path).name == "forgetting_vs_update.png"
    old = df.drop(columns=[c for c in df.columns if c.startswith("update/")])
    assert forgetting_vs_update(old, "ppl/ood_prose", tmp_path / "old") is None and relative_noise(old) == {}
    assert landscape_2d([("bad", {"coords": [0.0, 1.0], "losses": [[1.0]]})], tmp_path) is None


def test_cli_heldout_sft_loss_axis(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    for i, tokens in enumerate((1e6, 2e6)):
        write_record(make_record(f"tokens_{i}", int(tokens), 1e-3, 0), sweep / str(i))
    assert main([str(sweep), "--bootstrap", "10", "--sft-loss", "heldout"]) == 0
    page = Path(capsys.readouterr().out.strip()).read_text()
    assert "OOD metric against the held-out SFT loss (nats/token), measured at each probe" in page
