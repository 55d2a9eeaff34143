"""Learning-rate schedules (the ``lr_schedule`` group), built on transformers' schedulers.

``constant``, ``cosine``, ``linear`` and ``wsd`` (warmup-stable-decay) all come from
``transformers.get_scheduler``; this module only maps our config onto its arguments, so
pretraining and SFT share one definition. ``lr_at`` evaluates a schedule at chosen steps
without training (used by tests, cooldown branches and the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_scheduler

SCHEDULES = ("constant", "cosine", "linear", "wsd")


@dataclass
class LRScheduleConfig:
    """One learning-rate schedule.

    Attributes:
        name: constant | cosine | linear | wsd.
        warmup_ratio: fraction of the steps spent in linear warmup from 0.
        warmup_steps: warmup length in steps; overrides ``warmup_ratio`` when > 0.
        decay_ratio: wsd only: fraction of the steps in the final decay.
        min_lr_ratio: floor of the decay as a fraction of the peak LR (cosine, wsd).
        decay_type: wsd only: shape of the decay, cosine | linear | 1-sqrt.
    """

    name: str = "constant"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    decay_ratio: float = 0.2
    min_lr_ratio: float = 0.0
    decay_type: str = "linear"

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.name!r}: use one of {', '.join(SCHEDULES)}")


def _warmup(cfg: LRScheduleConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else int(math.ceil(cfg.warmup_ratio * total_steps))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: LRScheduleConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Builds the transformers scheduler for ``cfg`` over ``total_steps`` optimizer steps."""
    warmup = _warmup(cfg, total_steps)
    if cfg.name == "constant":
        return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup)
    if cfg.name == "linear":
        return get_scheduler("linear", optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    if cfg.name == "cosine":
        return get_scheduler(
            "cosine_with_min_lr",
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=total_steps,
            scheduler_specific_kwargs={"min_lr_rate": cfg.min_lr_ratio},
        )
    decay = int(round(cfg.decay_ratio * total_steps))
    return get_scheduler(
        "warmup_stable_decay",
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        scheduler_specific_kwargs={
            "num_decay_steps": decay,
            "min_lr_ratio": cfg.min_lr_ratio,
            "decay_type": cfg.decay_type,
        },
    )


def lr_at(steps: list[int], cfg: LRScheduleConfig, total_steps: int, peak_lr: float) -> list[float]:
    """The learning rate used at each of ``steps`` (0-based optimizer steps) under ``cfg``."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak_lr)
    sched = build_scheduler(opt, cfg, total_steps)
    return [peak_lr * lam(s) for s in steps for lam in sched.lr_lambdas]
