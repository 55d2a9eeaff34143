"""Where an SFT update runs: process groups (one process, torchrun, Slurm) and the two steppers.

``PlainStepper`` (one process, plain PyTorch) and ``DeepSpeedStepper`` (ZeRO 0/2/3 on one or
many processes) give the loop of ``overtraining.training.sft`` one interface: the module
to call, an autocast context, ``backward``/``step``, the current LR, ``save``/``load`` of the
resumable state and the model with full parameters.

Commands (``overtraining.run`` calls ``finetune``, which calls ``init_distributed`` when
``trainer.deepspeed`` is set)::

    python -m overtraining.run trainer=deepspeed_zero2                    # 1 process (CPU: gloo)
    torchrun --nproc_per_node=4 -m overtraining.run trainer=deepspeed_zero2  # 4 GPUs, one node
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \\
        -m overtraining.run trainer=deepspeed_zero2                       # 2 nodes
    srun --ntasks-per-node=4 --gpus-per-task=1 python -m overtraining.run trainer=deepspeed_zero2

torchrun exports RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; under ``srun`` they are
derived from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID (MASTER_ADDR defaults to the node that
launched srun, MASTER_PORT to 29500) because ``deepspeed.init_distributed`` reads no SLURM_*
variable. Do not use the ``deepspeed`` launcher: it appends ``--local_rank``, which Hydra
rejects (Hydra #2038). Without any of these variables the process is a world of 1. The
backend is nccl with CUDA, gloo otherwise: DeepSpeed ZeRO 0/2/3 run on CPU with gloo
(tested in ``tests/sft/test_deepspeed.py``).

The JSON files in ``conf/deepspeed/`` hold only what does not depend on the run; the micro
batch, gradient accumulation, clipping and bf16 (on CUDA only) are filled in here from
``TrainerConfig``. DeepSpeed ignores unknown top-level keys silently, so they are checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from overtraining import runtime
from overtraining.config import DS_PRESETS, check_choice, suggest

DS_CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "deepspeed"
STATE_FILE = "sft_state.pt"
# Top-level sections DeepSpeed reads that its runtime.constants module does not name.
_DS_SECTIONS = (
    "zero_optimization",
    "activation_checkpointing",
    "flops_profiler",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "comet",
    "comms_logger",
    "aio",
    "compile",
    "elasticity",
    "amp",
    "autotuning",
    "pipeline",
    "sparse_attention",
    "data_efficiency",
    "curriculum_learning",
    "compression_training",
    "hybrid_engine",
    "nebula",
    "weight_quantization",
    "monitor_config",
)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    backend: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_env() -> None:
    """Sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT when the launcher did not."""
    env = os.environ
    if "RANK" not in env and "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], env["SLURM_NTASKS"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
        env.setdefault("MASTER_PORT", "29500")
    if "RANK" not in env:  # a world of 1
        env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    env.setdefault("LOCAL_RANK", "0")


def init_distributed() -> DistInfo:
    """Joins (or creates) the default process group: nccl on CUDA, gloo on CPU."""
    export_env()
    local_rank = int(os.environ["LOCAL_RANK"])
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def rank() -> int:
    return runtime.rank()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def is_rank0() -> bool:
    """Whether this process writes files, logs and progress bars."""
    return runtime.is_rank0()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sums numbers over all ranks (no-op without a process group)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _known_keys() -> set[str]:
    from deepspeed.runtime import constants

    names = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}
    return {v for v in names if re.fullmatch(r"[a-z0-9_]+", v)} | set(_DS_SECTIONS)


def check_keys(config: dict, where: str) -> None:
    """Raises ValueError on a top-level key DeepSpeed would silently ignore (with a suggestion)."""
    known = _known_keys()
    for key in config:
        if key not in known:
            raise ValueError(f"{where}: unknown DeepSpeed key {key!r}{suggest(key, sorted(known))}")


def deepspeed_config(name: str, micro_batch: int, grad_accum: int, max_grad_norm: float, bf16: bool) -> dict:
    """Reads ``conf/deepspeed/<name>.json`` (or a ``.json`` path) and fills in the run's values.

    Raises:
        ValueError: an unknown preset name, an unknown top-level key, or an invalid
            ``zero_optimization`` section (pydantic's ValidationError is a ValueError).
    """
    path = Path(name) if name.endswith(".json") else DS_CONF_DIR / f"{name}.json"
    if not name.endswith(".json"):
        check_choice("trainer.deepspeed", name, DS_PRESETS)
    config = json.loads(path.read_text())
    check_keys(config, str(path))
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    DeepSpeedZeroConfig(**config.get("zero_optimization", {}))  # nested typos raise (pydantic, extra=forbid)
    config.update(
        train_micro_batch_size_per_gpu=micro_batch,
        gradient_accumulation_steps=grad_accum,
        gradient_clipping=max_grad_norm,
        bf16={"enabled": bf16},
    )
    config.setdefault("steps_per_print", 1 << 30)
    return config


class PlainStepper:
    """One process, plain PyTorch: clip, AdamW, scheduler; state in one atomic file."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        max_grad_norm: float,
        device: torch.device,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.max_grad_norm, self.device = max_grad_norm, device
        self.forward_module = model

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA (weights stay fp32), nothing on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        loss.backward()

    def step(self) -> None:
        if self.max_grad_norm > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, work_dir: Path, step: int, client_state: dict) -> None:
        """Writes ``work_dir/sft_state.pt`` atomically (a temporary file, then ``os.replace``).

        It holds the trainable parameters (all of them, or the LoRA adapters), the optimizer,
        the scheduler, the CPU RNG and ``client_state``.
        """
        state = {
            "model": {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            **client_state,
        }
        tmp = work_dir / f"{STATE_FILE}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, work_dir / STATE_FILE)

    def load(self, work_dir: Path) -> dict | None:
        """Restores ``work_dir/sft_state.pt`` if it exists; returns its ``client_state``."""
        path = work_dir / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        unexpected = self.model.load_state_dict(state.pop("model"), strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{path} does not match the model (e.g. {unexpected[0]}): delete it to start over")
        self.optimizer.load_state_dict(state.pop("optimizer"))
        self.scheduler.load_state_dict(state.pop("scheduler"))
        torch.set_rng_state(state.pop("rng").cpu())
        return state

    def unsharded_model(self) -> torch.nn.Module:
        return self.model


class DeepSpeedStepper:
    """DeepSpeed ZeRO 0/2/3: the same interface as ``PlainStepper`` over an engine.

    Backward does not rescale by gradient accumulation (the loop already divides by the
    step's global token count); it multiplies by the world size to undo DeepSpeed's mean
    over data-parallel ranks, so the gradient is the global token-mean's.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler_fn: Callable, config: dict):
        import deepspeed

        deepspeed.init_distributed(dist_backend=dist.get_backend())
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler_fn, config=config
        )
        self.stage = config.get("zero_optimization", {}).get("stage", 0)

    @property
    def forward_module(self) -> torch.nn.Module:
        return self.engine

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # DeepSpeed casts the module itself (bf16 section)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Backward of one micro-batch; DeepSpeed counts micro-batches, so step() follows all but the last."""
        self.engine.backward(loss * self.engine.dp_world_size, scale_wrt_gas=False)
        if not last:
            self.engine.step()

    def step(self) -> None:
        self.engine.step()  # the accumulation boundary: reduce, clip, update, schedule

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, work_dir: Path, step: int, client_state: dict) -> None:
        """Sharded checkpoint in ``work_dir/sft_state_ds/step<N>``; ``latest`` is written last.

        ZeRO partitions the optimizer state over ranks, so this is DeepSpeed's checkpoint
        folder rather than ``sft_state.pt``; the previous step's folder is then removed.
        """
        root = work_dir / "sft_state_ds"
        self.engine.save_checkpoint(str(root), tag=f"step{step}", client_state=client_state)
        dist.barrier()
        if is_rank0():
            for old in root.glob("step*"):
                if old.name != f"step{step}":
                    _rmtree(old)

    def load(self, work_dir: Path) -> dict | None:
        root = work_dir / "sft_state_ds"
        if not (root / "latest").exists():
            return None
        _, client_state = self.engine.load_checkpoint(str(root))
        return client_state

    def unsharded_model(self) -> torch.nn.Module:
        """The trained module with full parameters (a gathered copy under ZeRO-3)."""
        module = self.engine.module
        if self.stage < 3:
            return module
        import deepspeed
        from transformers import AutoModelForCausalLM

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        copy = AutoModelForCausalLM.from_config(module.config, dtype=next(iter(state.values())).dtype)
        copy.load_state_dict(state, strict=False)
        return copy.to(next(iter(state.values())).device)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
