"""Every embedded preset runs with its smallest settings and writes finite, plausible numbers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from overtraining.cli import CONF_DIR
from overtraining.report import build_report
from overtraining.results import load_records
from tests.launch.conftest import TINY_PRETRAIN, run_cell

pytestmark = pytest.mark.integration

EMBEDDED = sorted(
    p.stem
    for p in (CONF_DIR / "experiment").glob("*.yaml")
    if p.stem.endswith("_embedded") or p.stem in ("demo", "rofin_sharpness_pretraining")
)
SMALL = [
    *TINY_PRETRAIN,
    "pretrain.budgets=[250K]",
    "checkpoint=embedded/tokens_250K",
    "lr=1e-3",
    "seed=0",  # one replica (presets sweep seeds)
    "sft_data.num_train=64",
    "sft_data.num_heldout=8",
    "eval.limit=20",
    "eval.id_max_examples=2",
    "eval.format_probe_prompts=2",
    "sharpness.num_batches=1",
    "sharpness.perturb_seeds=1",
    "logger=none",
]
SFT_SMALL = ["trainer.max_steps=6", "trainer.probe_every=3", "trainer.epochs=0", "trainer.target_loss=null"]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One cache for every preset: the tiny trajectories and base evaluations they share are
    computed once (presets with their own recipe write their own trajectory dirs)."""
    return tmp_path_factory.mktemp("presets-cache")


@pytest.mark.parametrize("preset", EMBEDDED)
def test_embedded_preset(preset, tmp_path_factory, shared_cache):
    work = tmp_path_factory.mktemp(preset)
    probe_only = preset in ("springer_perturbation_embedded", "rofin_sharpness_pretraining", "quantization_embedded")
    args = [f"+experiment={preset}", *SMALL, *([] if probe_only else SFT_SMALL), "sharpness.eig_max_iter=5"]
    if preset == "rofin_sharpness_pretraining":
        args.append("checkpoint=embedded/tokens_250K,embedded/tokens_250K-cooldown")
    if preset == "mitigations_embedded":  # two cells of its checkpoint x mitigation x seed grid
        args += ["mitigation=none,wise", "seed=0"]
    if preset == "springer_controlled_embedded":  # fully decayed budgets only
        args.append("checkpoint=embedded/tokens_250K-cooldown")
    out = run_cell("-m", *args, cwd=work, cache=shared_cache, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    records = load_records(work / "multirun")
    # rofin: 3 schedules x main/cooldown; quantization: 2 schedules; sam: 2 optimizers; mitigations: 2
    expected = {
        "rofin_sharpness_pretraining": 6,
        "quantization_embedded": 2,
        "sam_pretraining_embedded": 2,
        "mitigations_embedded": 2,
    }.get(preset, 1)
    assert len(records) == expected
    for r in records:
        assert r.status in ("completed", "target_reached"), r.notes
        assert r.config["experiment"] == preset
        if preset == "springer_controlled_embedded":
            assert r.config["pretrain_schedule"] == "constant+cooldown"
        for key, value in r.metrics.items():
            if isinstance(value, float):
                assert math.isfinite(value), key
        if probe_only:
            assert r.metrics["base/perturb/gamma=0.2/delta_loss_mean"] > -0.05
            if "kl" in r.config["sharpness"]["estimators"]:
                assert r.metrics["base/sharpness/kl"] > 0
        else:
            assert 0 < r.metrics["ft/ppl/ood_prose/ppl"] < 260  # below a uniform byte model's perplexity
            assert r.metrics["sft/steps"] == 6
    html = build_report([work / "multirun"], n_boot=10)  # the preset's report, its figures and findings
    page = html.read_text()
    figures = {p.name for p in html.parent.glob("*.png")}
    if preset == "mitigations_embedded":  # no geometry (sharpness=none); the frontier instead
        assert "mitigation_frontier.png" in figures and "Learning-forgetting frontier" in page
    else:
        assert "sensitivity_vs_tokens.png" in figures
        assert ("sharpness_vs_tokens.png" in figures) == ("kl" in records[0].config["sharpness"]["estimators"])
    if not probe_only:
        assert {"ood_vs_tokens.png", "forgetting_vs_tokens.png", "ood_vs_sft_loss.png"} <= figures
    if preset in ("quantization_embedded", "sam_pretraining_embedded"):  # RTN in both
        assert "quantization_vs_tokens.png" in figures
        assert all(0 < r.metrics["base/quant/bits=4/weight_rel_error"] < 1 for r in records)
    if preset == "quantization_embedded":
        assert {r.config["pretrain"]["lr_schedule"]["name"] for r in records} == {"constant", "wsd"}
    if preset == "sam_pretraining_embedded":
        assert {r.config["pretrain_schedule"] for r in records} == {"constant", "constant+sam"}
    if preset == "rofin_sharpness_pretraining":
        assert {r.config["pretrain"]["lr_schedule"]["name"] for r in records} == {"constant", "wsd", "cosine"}
        assert all(0 < r.metrics["base/sharpness/hessian_top"] < 1e4 for r in records)
