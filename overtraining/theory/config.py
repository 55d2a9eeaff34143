"""Typed schemas for ``python -m overtraining.theory`` (the ``sim`` config group).

``conf/theory.yaml`` composes ``theory_schema`` with one ``sim`` option; each option file
(``conf/sim/linear.yaml``, ``conf/sim/diagonal.yaml``) starts from its schema below, so a
misspelt key (``sim.perturb_scal=0.1``) or a wrong type fails when Hydra composes the
config, before anything runs. Only ``overtraining.theory.__main__`` sees these objects; the
simulation functions take plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Schedule(str, Enum):
    """Pretraining step-size schedules of the diagonal-network simulation.

    ``constant`` keeps the peak step; ``wsd`` (stable-then-decay, no warmup) keeps it for
    the first ``1 - decay_fraction`` of the steps, then decays it linearly to zero. Member
    names equal their values because OmegaConf parses enums by name.
    """

    constant = "constant"
    wsd = "wsd"


@dataclass
class LinearSimConfig:
    """Two-layer linear network, Springer et al. (2025) section 4.

    Attributes:
        seed: seeds the target's singular vectors, the init, the perturbations.
        dim: input and output dimension of the target map ``A`` (d x d).
        hidden: width of the hidden layer (>= rank so every feature can be learned).
        rank: number of nonzero singular values of ``A``.
        top_singular_value: largest singular value of ``A``.
        spectrum_ratio: ``s_i = top * ratio**i``, a geometric spectrum.
        init_scale: std of the i.i.d. Gaussian init of both layers (small: rich regime).
        lr: gradient-descent step of pretraining (small enough to track gradient flow).
        steps: pretraining steps.
        n_checkpoints: log-spaced checkpoints at which sensitivity is measured.
        learned_fraction: a direction counts as learned once its singular value reaches
            this fraction of the target.
        perturb_scale: std of the Gaussian noise added to every weight.
        perturb_samples: Monte Carlo draws per checkpoint (the exact mean is also saved).
        finetune_angle_deg: misalignment between ``A`` and the fine-tuning target ``B``
            (0 = same task, 90 = orthogonal task of the same norm).
        finetune_lr: fixed fine-tuning step, the same for every checkpoint.
        finetune_steps: fine-tuning steps, the same for every checkpoint.
    """

    seed: int = 0
    dim: int = 20
    hidden: int = 20
    rank: int = 16
    top_singular_value: float = 1.0
    spectrum_ratio: float = 0.7
    init_scale: float = 1e-3
    lr: float = 0.2
    steps: int = 8000
    n_checkpoints: int = 30
    learned_fraction: float = 0.5
    perturb_scale: float = 0.0866
    perturb_samples: int = 128
    finetune_angle_deg: float = 30.0
    finetune_lr: float = 0.2
    finetune_steps: int = 20


@dataclass
class DiagonalSimConfig:
    """Diagonal linear network ``w = u*u - v*v``, Rofin, Varre and Flammarion (2026).

    Attributes:
        seed: seeds the tasks and every SGD run.
        replicas: independent task draws simulated side by side (results are averaged).
        dim: number of coordinates ``d``.
        init_scale: ``u = v = init_scale`` at initialisation (small: sparse, rich regime).
        pretrain_support: nonzero coordinates of the pretraining target.
        pretrain_top: magnitude of the largest pretraining coefficient.
        pretrain_ratio: magnitudes decay geometrically by this ratio (fine features last).
        pretrain_noise: label-noise std of the online pretraining stream.
        pretrain_batch: online SGD batch size in pretraining.
        pretrain_lr: peak pretraining step size.
        pretrain_steps: pretraining steps.
        decay_fraction: ``wsd`` only: fraction of steps in the final linear decay.
        schedules: pretraining schedules to compare (each is fine-tuned at every step size).
        finetune_samples: fine-tuning examples (fewer than ``dim``: many interpolators).
        finetune_support: nonzero coordinates of the fine-tuning target.
        finetune_overlap: how many of those reuse pretraining coordinates (new values).
        finetune_batch: SGD batch size in fine-tuning.
        finetune_lrs: fine-tuning step sizes, small to large.
        target_loss: every fine-tuning run stops at this fine-tuning training loss.
        max_finetune_steps: safety cap; a run that hits it is reported as not converged.
        log_every: trajectory logging interval (steps) for the loss-vs-loss figure.
    """

    seed: int = 0
    replicas: int = 8
    dim: int = 100
    init_scale: float = 0.03
    pretrain_support: int = 8
    pretrain_top: float = 2.0
    pretrain_ratio: float = 0.6
    pretrain_noise: float = 2.0
    pretrain_batch: int = 1
    pretrain_lr: float = 0.02
    pretrain_steps: int = 4000
    decay_fraction: float = 0.5
    schedules: list[Schedule] = field(default_factory=lambda: [Schedule.constant, Schedule.wsd])
    finetune_samples: int = 40
    finetune_support: int = 8
    finetune_overlap: int = 4
    finetune_batch: int = 1
    finetune_lrs: list[float] = field(default_factory=lambda: [0.005, 0.01, 0.025])
    target_loss: float = 1e-3
    max_finetune_steps: int = 100_000
    log_every: int = 10


@dataclass
class TheoryConfig:
    """Primary config of ``python -m overtraining.theory``.

    Attributes:
        sim: a ``LinearSimConfig`` or ``DiagonalSimConfig`` (chosen with ``sim=...``).
        figures: write PNG figures next to the CSV/JSON results.
    """

    sim: Any = MISSING
    figures: bool = True


def register_configs() -> None:
    """Registers the schemas in Hydra's ConfigStore (call before ``@hydra.main`` runs)."""
    cs = ConfigStore.instance()
    cs.store(name="theory_schema", node=TheoryConfig)
    cs.store(group="sim", name="linear_schema", node=LinearSimConfig)
    cs.store(group="sim", name="diagonal_schema", node=DiagonalSimConfig)
