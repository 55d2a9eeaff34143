"""Supervised fine-tuning of one checkpoint with one learning rate and schedule (``trainer`` group).

Commands (the cell ``overtraining.run`` calls ``finetune``)::

    python -m overtraining.run trainer=cpu lr=1e-3                  # CPU, fp32
    python -m overtraining.run trainer=gpu lr=2e-5                  # one GPU, bf16 autocast
    python -m overtraining.run trainer=lora lr=1e-4                 # LoRA adapters only
    torchrun --nproc_per_node=8 -m overtraining.run trainer=deepspeed_zero2   # many GPUs
    (Slurm and multi-node: see overtraining/training/distributed.py)

Why a hand-written loop rather than ``transformers.Trainer`` or Accelerate: what the
experiments need is around the loop, not inside it -- stop when the smoothed SFT loss first
reaches a target and record the step (the same-SFT-loss comparison); treat divergence as an
outcome, not an exception (a ``diverged`` record, exit 0); probe the model every
``probe_every`` steps with the held-out SFT loss (Rofin et al.'s OOD-vs-SFT-loss curve);
resume from one atomic state file; keep LoRA base weights bit-identical. In Trainer each is
a callback plus state juggling (TrainerControl, its own checkpoint folders, NaN filtering
that hides divergence); here each is a few lines, and the loop is ~40 of them.
DeepSpeed is used directly (``deepspeed.initialize`` on the JSONs of ``conf/deepspeed/``), no
Accelerate plugin layer. Speed: ``benchmarks/bench_sft.py`` times this loop against Trainer.

What the numbers mean:

* ``step``: optimizer updates (1-based in ``history``); one update sees ``batch_size`` x
  ``grad_accum`` x world-size examples (or packed rows).
* ``loss``: mean NLL per assistant token over the whole update (all micro-batches and
  ranks, token-weighted; the gradient is that mean's), measured before the update.
* ``smoothed_loss``: EMA with ``loss_smoothing`` (started at the first loss, no bias
  correction); ``target_loss`` is compared with it.
* divergence: a non-finite loss or one above ``divergence_factor`` x the first step's loss;
  that update is not applied and the run stops with ``status="diverged"``.
* ``tokens``: real (non-padding) input tokens trained on, all ranks (cumulative in ``history``).

Data order is a pure function of (seed, step), so a resumed run sees the same batches.
Only the positions whose next token is trained are projected onto the vocabulary (a boolean
``logits_to_keep``), which skips the prompts' share of the LM head and of the (B, T, V)
logits (for Pythia-70M the LM head is over half of the forward FLOPs). Numerics: fp32 on
CPU (deterministic); on CUDA the weights stay fp32 and the forward runs under bf16 autocast
(plain path) or in DeepSpeed's bf16 mode; AdamW is fused on CUDA.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from overtraining import runtime
from overtraining.config import LRScheduleConfig, TrainerConfig, with_seed
from overtraining.data.chat import IGNORE_INDEX, collate
from overtraining.data.sft_data import SFTData
from overtraining.training import distributed
from overtraining.training.losses import heldout_loss, token_loss
from overtraining.training.schedules import build_scheduler

log = logging.getLogger(__name__)


@dataclass
class SFTOutcome:
    """What ``finetune`` returns (``history`` and ``probes`` are lists of flat dicts)."""

    model: torch.nn.Module
    steps: int
    tokens: int
    seconds: float
    history: list[dict]  # per step: step, loss, smoothed_loss, lr, tokens (cumulative)
    probes: list[dict]  # per probe: step, sft_loss (held-out), and the probe's values
    target_reached_step: int | None
    diverged: bool
    diverged_step: int | None
    resumed_from: int | None
    status: str


@dataclass
class _Progress:
    """The loop's state, saved with the model (everything but tensors)."""

    step: int = 0
    history: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    smoothed: float | None = None
    initial_loss: float | None = None
    target_reached_step: int | None = None
    diverged_step: int | None = None
    status: str = "running"
    tokens: int = 0
    seconds: float = 0.0


def ema(prev: float | None, value: float, beta: float) -> float:
    """One EMA update, started at the first value."""
    return value if prev is None else beta * prev + (1 - beta) * value


def is_diverged(loss: float, initial_loss: float, factor: float) -> bool:
    """Non-finite, or above ``factor`` x the first step's loss."""
    return not math.isfinite(loss) or loss > factor * initial_loss


def first_target_step(losses: list[float], target: float, beta: float) -> int | None:
    """The 1-based step at which the EMA of ``losses`` first reaches ``target``, else None."""
    smoothed = None
    for step, loss in enumerate(losses, 1):
        smoothed = ema(smoothed, loss, beta)
        if smoothed <= target:
            return step
    return None


def supports_sparse_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` (transformers >= 5)."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep  # noqa: F401
    except ImportError:
        return False
    base = getattr(model, "module", model)  # a DeepSpeed engine
    base = base.get_base_model() if hasattr(base, "get_base_model") else base  # a PeftModel
    return "logits_to_keep" in inspect.signature(type(base).forward).parameters


def plan_steps(cfg: TrainerConfig, num_examples: int, world_size: int) -> int:
    """Optimizer steps of the run: ``max_steps``, or ``epochs`` over the examples."""
    if cfg.epochs > 0:
        return max(1, math.ceil(cfg.epochs * num_examples / (cfg.batch_size * cfg.grad_accum * world_size)))
    return cfg.max_steps


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(n))
    random.Random(f"{seed}-{epoch}").shuffle(order)
    return tuple(order)


def micro_batch_indices(step: int, micro: int, cfg: TrainerConfig, n: int, world: int, rank: int) -> list[int]:
    """Example indices of one micro-batch: a seeded reshuffle per epoch, sliced by (step, micro, rank)."""
    start = ((step * cfg.grad_accum + micro) * world + rank) * cfg.batch_size
    return [_epoch_order(n, cfg.seed, p // n)[p % n] for p in range(start, start + cfg.batch_size)]


def resolve_device(name: str) -> torch.device:
    """The trainer's device (``runtime.device``)."""
    return runtime.device(name)


def lora_config(model: torch.nn.Module, cfg: TrainerConfig):  # -> peft.LoraConfig
    """The LoRA config of ``cfg`` for ``model``; raises before any work if it cannot apply.

    ``lora_targets=[all-linear]`` (the default) is peft's "every linear (and GPT-2 Conv1D)
    layer but the output head", so any architecture works unchanged; explicit names must
    match module names of the model.

    Raises:
        ValueError: one line naming ``trainer.lora_targets`` and the modules the model has.
    """
    from peft import LoraConfig

    if list(cfg.lora_targets) == ["all-linear"]:
        targets: str | list[str] = "all-linear"
    else:
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in names]
        if not targets:
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise ValueError(
                f"trainer.lora_targets={list(cfg.lora_targets)} names no module of this model "
                f"(its linear layers: {', '.join(linear[:12])}): pass trainer.lora_targets=[all-linear]"
            )
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


def wrap_lora(model: torch.nn.Module, cfg: TrainerConfig) -> torch.nn.Module:
    """Freezes the model and adds LoRA adapters (``lora_config``)."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, cfg))


def build_optimizer(model: torch.nn.Module, lr: float, cfg: TrainerConfig, device: torch.device):
    """AdamW over the trainable parameters; matrices decayed, vectors not; fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=device.type == "cuda")


def _build_stepper(
    model: torch.nn.Module,
    lr: float,
    schedule: LRScheduleConfig,
    cfg: TrainerConfig,
    total_steps: int,
    device: torch.device,
):
    """Plain PyTorch, or DeepSpeed when ``cfg.deepspeed`` names a config."""
    if not cfg.deepspeed:
        if distributed.world_size() > 1:
            raise ValueError("several processes need DeepSpeed: add trainer.deepspeed=zero0 (plain data parallel)")
        if device.type == "cuda":
            model.float()  # fp32 master weights; the forward runs under bf16 autocast
        model.to(device)
        optimizer = build_optimizer(model, lr, cfg, device)
        scheduler = build_scheduler(optimizer, schedule, total_steps)
        return distributed.PlainStepper(model, optimizer, scheduler, cfg.max_grad_norm, device)
    distributed.init_distributed()
    config = distributed.deepspeed_config(
        cfg.deepspeed, cfg.batch_size, cfg.grad_accum, cfg.max_grad_norm, bf16=device.type == "cuda"
    )
    optimizer = build_optimizer(model.to(device), lr, cfg, device)
    return distributed.DeepSpeedStepper(
        model, optimizer, lambda opt: build_scheduler(opt, schedule, total_steps), config
    )


@dataclass
class _Context:
    """What the loop's helpers share (built once in ``finetune``)."""

    stepper: object  # PlainStepper | DeepSpeedStepper
    data: SFTData
    cfg: TrainerConfig
    device: torch.device
    pad_id: int
    work_dir: Path
    meta: dict
    probe: Callable[[torch.nn.Module], dict[str, float]] | None
    sparse_logits: bool
    started: float = field(default_factory=time.perf_counter)


def _inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    keys = ("input_ids", "attention_mask", "position_ids")
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


def _real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["num_tokens"].sum() if "num_tokens" in batch else batch["attention_mask"].sum())


def _forward_backward(ctx: _Context, micro_batches: list[dict]) -> tuple[float, int]:
    """Forward and backward of one update's micro-batches: (global mean loss, global real tokens)."""
    local = [int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro_batches]
    count, tokens = distributed.all_sum([sum(local), sum(map(_real_tokens, micro_batches))], ctx.device)
    loss_sum = 0.0
    for k, batch in enumerate(micro_batches):
        with ctx.stepper.autocast():
            nll, _ = token_loss(
                ctx.stepper.forward_module,
                _inputs(batch, ctx.device),
                batch["labels"].to(ctx.device),
                ctx.sparse_logits,
            )
        ctx.stepper.backward(nll / max(count, 1), last=k == len(micro_batches) - 1)
        loss_sum += nll.item()
    return distributed.all_sum([loss_sum], ctx.device)[0] / max(count, 1), int(tokens)


def _heldout_loss(ctx: _Context) -> float:
    """Mean NLL per assistant token over the held-out examples (each rank computes all of it)."""
    module = ctx.stepper.forward_module
    return heldout_loss(
        module, ctx.data.heldout, ctx.cfg.batch_size, ctx.pad_id, ctx.device, ctx.sparse_logits, ctx.stepper.autocast
    )


def _probe(ctx: _Context, step: int) -> dict:
    """Held-out SFT loss plus the caller's probe (rank 0, full parameters, eval mode), as one record."""
    record = {"step": step, "sft_loss": _heldout_loss(ctx)}
    if ctx.probe is not None:
        model = ctx.stepper.unsharded_model()  # collective under ZeRO-3
        results = [None]
        if distributed.is_rank0():
            model.eval()
            results[0] = dict(ctx.probe(model))
            model.train()
        if distributed.world_size() > 1:
            torch.distributed.broadcast_object_list(results, src=0)
        record.update(results[0])
    return record


def _save(ctx: _Context, progress: _Progress) -> None:
    state = asdict(progress) | {"seconds": progress.seconds + time.perf_counter() - ctx.started}
    ctx.stepper.save(ctx.work_dir, progress.step, {"progress": state, "meta": ctx.meta})


def _resume(ctx: _Context) -> _Progress | None:
    """The progress saved in ``work_dir`` (its weights and optimizer restored), or None."""
    state = ctx.stepper.load(ctx.work_dir)
    if state is None:
        return None
    if state["meta"] != ctx.meta:
        keys = sorted(k for k in ctx.meta.keys() | state["meta"].keys() if state["meta"].get(k) != ctx.meta.get(k))
        raise ValueError(
            f"{ctx.work_dir} holds the SFT state of another run (its {', '.join(keys)} differ): "
            "delete that dir or use another run dir"
        )
    log.info("resumed from step %d", state["progress"]["step"])
    return _Progress(**state["progress"])


def _train_step(ctx: _Context, progress: _Progress, world: int, rank: int) -> dict:
    """One update (skipped on divergence); updates ``progress`` and returns the step's record."""
    step, n = progress.step + 1, len(ctx.data.train)
    micro = [
        collate([ctx.data.train[i] for i in micro_batch_indices(step - 1, k, ctx.cfg, n, world, rank)], ctx.pad_id)
        for k in range(ctx.cfg.grad_accum)
    ]
    loss, tokens = _forward_backward(ctx, micro)
    if progress.initial_loss is None:
        progress.initial_loss = loss
    smoothed = ema(progress.smoothed, loss, ctx.cfg.loss_smoothing)
    record = {
        "step": step,
        "loss": loss,
        "smoothed_loss": smoothed,
        "lr": ctx.stepper.lr(),
        "tokens": progress.tokens + tokens,
    }
    progress.history.append(record)
    if is_diverged(loss, progress.initial_loss, ctx.cfg.divergence_factor):
        progress.status, progress.diverged_step = "diverged", step
        return record
    ctx.stepper.step()
    progress.step, progress.smoothed, progress.tokens = step, smoothed, record["tokens"]
    if ctx.cfg.target_loss is not None and smoothed <= ctx.cfg.target_loss:
        progress.status, progress.target_reached_step = "target_reached", step
    if ctx.cfg.probe_every > 0 and step % ctx.cfg.probe_every == 0:
        progress.probes.append(_probe(ctx, step))
        record = {**record, **progress.probes[-1]}
    if ctx.cfg.checkpoint_every > 0 and step % ctx.cfg.checkpoint_every == 0:
        _save(ctx, progress)
    return record


def finetune(
    model: torch.nn.Module,
    tokenizer,
    data: SFTData,
    lr: float,
    schedule: LRScheduleConfig,
    cfg: TrainerConfig,
    work_dir: Path,
    probe: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    on_step: Callable[[dict], None] | None = None,
    identity: dict | None = None,
) -> SFTOutcome:
    """Fine-tunes ``model`` in place on ``data.train``, resuming from ``work_dir`` if it holds a state.

    Args:
        model: a causal LM; trained in place (under LoRA its base tensors are left untouched,
            but peft inserts the adapters into its modules).
        tokenizer: the model's tokenizer (its pad id, else its eos id, pads batches).
        data: encoded SFT data (``load_sft_data``).
        lr: peak learning rate.
        schedule: the LR schedule over the run's optimizer steps.
        cfg: the trainer settings.
        work_dir: where the resumable state goes (``sft_state.pt``, or ``sft_state_ds/``).
        probe: ``probe(model) -> {name: value}``, run on rank 0 every ``probe_every`` steps and
            at the end (not after divergence), in eval mode, on full parameters.
        on_step: called on rank 0 after every step with its history record, merged with the
            probe record on probe steps.
        identity: what a resume state must match besides the run's shape (e.g. the hash of
            the starting weights, of the data, the seed); a state written for another
            identity is refused.

    Returns:
        The outcome; its model is in eval mode (a ``PeftModel`` under LoRA unless
        ``merge_lora``). Divergence is reported in it, never raised.
    """
    cfg = with_seed(cfg)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.method == "lora":
        model = wrap_lora(model, cfg)
    total = plan_steps(cfg, len(data.train), distributed.world_size())
    stepper = _build_stepper(model, lr, schedule, cfg, total, device)
    world, rank = distributed.world_size(), distributed.rank()
    meta = {
        "lr": lr,
        "total_steps": total,
        "method": cfg.method,
        "world_size": world,
        "batch": [cfg.batch_size, cfg.grad_accum],
        "num_train": len(data.train),
        "seed": cfg.seed,
        **(identity or {}),
    }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = _Context(stepper, data, cfg, device, pad_id, work_dir, meta, probe, supports_sparse_logits(model))
    saved = _resume(ctx)
    progress = saved or _Progress()
    resumed_from = saved.step if saved else None
    ended_before = saved is not None and saved.status != "running"  # a requeued cell whose SFT had finished
    stepper.forward_module.train()
    bar = tqdm(total=total, initial=progress.step, desc="sft", disable=not distributed.is_rank0(), dynamic_ncols=True)
    while progress.status == "running" and progress.step < total:
        record = _train_step(ctx, progress, world, rank)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", refresh=False)
        if on_step is not None and distributed.is_rank0():
            on_step(record)
    bar.close()
    return _finish(ctx, progress, resumed_from, ended_before)


def _finish(ctx: _Context, progress: _Progress, resumed_from: int | None, ended_before: bool) -> SFTOutcome:
    """Final probe and state, then the outcome with an unsharded eval-mode model."""
    if progress.status == "running":
        progress.status = "completed"
    if progress.status != "diverged" and (not progress.probes or progress.probes[-1]["step"] != progress.step):
        progress.probes.append(_probe(ctx, progress.step))
    if ctx.cfg.checkpoint_every > 0 and not ended_before:
        _save(ctx, progress)  # the final state: a requeue returns at once
    progress.seconds += time.perf_counter() - ctx.started
    model = ctx.stepper.unsharded_model()
    if ctx.cfg.method == "lora" and ctx.cfg.merge_lora:
        model = model.merge_and_unload()
    model.eval()
    return SFTOutcome(
        model=model,
        steps=progress.step,
        tokens=progress.tokens,
        seconds=progress.seconds,
        history=progress.history,
        probes=progress.probes,
        target_reached_step=progress.target_reached_step,
        diverged=progress.status == "diverged",
        diverged_step=progress.diverged_step,
        resumed_from=resumed_from,
        status=progress.status,
    )
