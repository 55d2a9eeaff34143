"""Learning-rate schedules (the ``lr_schedule`` group), built on transformers' schedulers.

``constant``, ``cosine``, ``linear`` and ``wsd`` (warmup-stable-decay) all come from
``transformers.get_scheduler``; this module only maps our config onto its arguments, so
pretraining and SFT share one definition. ``lr_at`` evaluates a schedule at chosen steps
without training (used by tests, cooldown branches and the report).
"""

from __future__ import annotations

import math

import torch
from transformers import get_scheduler

from overtraining.config import LRScheduleConfig


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
