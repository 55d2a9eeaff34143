"""A synthetic-but-structurally-real sweep: records written with ``write_record``.

Eight checkpoints of a WSD trajectory (250K ... 8M tokens) plus two cooldown branches,
two LRs, two seeds, one failed and one diverged cell. The fine-tuned OOD perplexity is a
planted U: its minimum is at 2M tokens for LR 1e-3 and at 4M for LR 1e-4.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from overtraining.results import CellRecord, write_record

BUDGETS = {"250K": 250_000, "500K": 500_000, "1M": 1_000_000, "2M": 2_000_000, "4M": 4_000_000, "8M": 8_000_000}
COOLDOWNS = {"1M": 1_100_000, "4M": 4_400_000}
LRS = (1e-4, 1e-3)
SEEDS = (0, 1)
U_MIN = {1e-4: 4_000_000, 1e-3: 2_000_000}
FIGURES = (
    "ood_vs_tokens.png",
    "forgetting_vs_tokens.png",
    "id_vs_tokens.png",
    "pareto.png",
    "sensitivity_vs_tokens.png",
    "sharpness_vs_tokens.png",
    "ood_vs_sft_loss.png",
    "forgetting_vs_update.png",
    "drift.png",
    "landscape.png",
    "landscape_2d.png",
)


def _metrics(tokens: int, lr: float, seed: int, cooldown: bool) -> dict[str, float]:
    x = math.log2(tokens / 1e6)  # -2 ... 3
    base = 40.0 / (1 + 0.3 * (x + 2)) - (1.0 if cooldown else 0.0)
    ft = 30.0 + 4.0 * (math.log2(tokens / U_MIN.get(lr, 1e6))) ** 2 + 0.05 * seed - (0.5 if cooldown else 0.0)
    acc = 0.5 + 0.05 * (x + 2) + (0.08 if lr == 1e-3 else 0.0) - 0.02 * max(0.0, x - 1) * (lr == 1e-3)
    m = {
        "base/ppl/ood_prose": base,
        "ft/ppl/ood_prose": ft,
        "forget/ppl/ood_prose": ft - base,
        "base/ood/embedded_prose_cloze/acc": 0.3 + 0.02 * (x + 2),
        "ft/ood/embedded_prose_cloze/acc": 0.25,
        "ft/id/accuracy": acc,
        "ft/id/loss": 1.5 - acc,
        "sft/steps": 40.0,
        "base/sharpness/kl": 1e-9 * 2**x * (0.5 if cooldown else 1.0),
        "base/sharpness/hessian_top": 10.0 * 2 ** (x / 2),
        "base/sharpness/hessian_trace": 500.0 * 2 ** (x / 2),
        "drift/mpa_mean": 0.2 + 0.3 * math.log10(lr / 1e-5) + 0.02 * x,
        "drift/cka_mean": 0.95 - 0.2 * math.log10(lr / 1e-5),
    }
    for gamma in (0.05, 0.1, 0.2):
        m[f"base/perturb/gamma={gamma}/delta_loss_mean"] = gamma * 0.5 * 2 ** (0.5 * x) * (0.7 if cooldown else 1.0)
        m[f"base/perturb/gamma={gamma}/delta_loss_std"] = gamma * 0.05
    m.update({f"drift/mpa/layer={i}": m["drift/mpa_mean"] * (0.5 + 0.5 * i) for i in range(3)})
    m["update/rel_norm"] = lr * 10 * (1 + 0.1 * seed)
    m["update/norm"] = m["update/rel_norm"] * 100
    m.update({f"update/layer={i}/rel_norm": m["update/rel_norm"] * (1 + i) for i in range(2)})
    m.update({f"base/perturb/gamma={g}/noise_norm": g * 100 for g in (0.05, 0.1, 0.2)})
    return m


def _curves(tokens: int, lr: float, ft: float) -> dict[str, Any]:
    steps = range(0, 41, 10)
    sft = [
        {"step": s, "loss": 2.0 * math.exp(-s * lr * 50), "smoothed_loss": 2.0 * math.exp(-s * lr * 50), "lr": lr}
        for s in steps
    ]
    probes = [
        {"step": p["step"], "sft_loss": p["loss"], "ppl/ood_prose": ft * (1 + 0.3 * (2.0 - p["loss"]) * lr * 1e3)}
        for p in sft
    ]
    landscape = [
        {"alpha": a / 10, "loss": 2.0 + math.sin(math.pi * a / 10) * math.log2(tokens / 1e5) * 0.1} for a in range(11)
    ]
    coords = [-1.0, 0.0, 1.0]
    grid = [[2.0 + (a * a + 2 * b * b) * math.log2(tokens / 1e5) * 0.1 for b in coords] for a in coords]
    return {"sft": sft, "probes": probes, "landscape": landscape, "landscape2d": {"coords": coords, "losses": grid}}


def make_record(name: str, tokens: int, lr: float, seed: int, status: str = "completed") -> CellRecord:
    cooldown = name.endswith("-cooldown")
    metrics = _metrics(tokens, lr, seed, cooldown) if status != "failed" else {}
    curves = _curves(tokens, lr, metrics["ft/ppl/ood_prose"]) if metrics else {}
    config = {
        "lr": lr,
        "seed": seed,
        "lr_schedule": {"name": "cosine"},
        "pretrain_schedule": "wsd",
        "trainer": {"seed": seed, "target_loss": None, "loss_smoothing": 0.9},
        "checkpoint": {"family": "embedded", "revision": name},
    }
    return CellRecord(
        cell_id=f"{name}-{lr:g}-{seed}".replace("/", "_"),
        status=status,
        checkpoint=f"embedded/{name}",
        tokens=tokens,
        lr=lr,
        schedule="cosine",
        sft_data="tinygsm",
        seed=seed,
        metrics=metrics,
        curves=curves,
        timings={"sft_s": 1.0},
        config=config,
        provenance={"git_sha": "test"},
    )


def write_sweep(root: Path, with_extras: bool = True) -> Path:
    """Writes the synthetic sweep under ``root`` (one run dir per cell); returns ``root``."""
    ckpts = {f"tokens_{k}": v for k, v in BUDGETS.items()}
    if with_extras:
        ckpts |= {f"tokens_{k}-cooldown": v for k, v in COOLDOWNS.items()}
    i = 0
    for name, tokens in ckpts.items():
        for lr in LRS:
            for seed in SEEDS:
                write_record(make_record(name, tokens, lr, seed), root / str(i))
                i += 1
    if with_extras:
        write_record(make_record("tokens_8M", 8_000_000, 1e-2, 0, status="failed"), root / str(i))
        bad = make_record("tokens_8M", 8_000_000, 3e-2, 0, status="diverged")
        bad.metrics["ft/ppl/ood_prose"] = 1e9
        write_record(bad, root / str(i + 1))
    return root


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="session")
def report_html(sweep_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from overtraining.report import build_report

    return build_report([sweep_dir], tmp_path_factory.mktemp("report"), n_boot=200)
