"""Where a process runs: its rank and its device, decided in one place.

Under ``torchrun`` (or Slurm with ``distributed.export_env``) RANK and LOCAL_RANK say which
process this is; before ``torch.distributed`` is initialised the environment is the truth,
after it the process group. Only rank 0 evaluates, writes records and logs.
"""

from __future__ import annotations

import os

import torch


def rank() -> int:
    """The global rank of this process (0 without a launcher)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_rank0() -> bool:
    """Whether this process evaluates, writes files, logs and shows progress bars."""
    return rank() == 0


def device(name: str = "auto") -> torch.device:
    """``auto``: ``cuda:LOCAL_RANK`` when a GPU is visible, else the CPU; else the named device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        return torch.device("cpu")
    return torch.device(name)


def peak_memory_gb(dev: torch.device) -> dict[str, float]:
    """Peak memory so far: CPU resident set (and CUDA max allocated on a GPU), in GiB."""
    import resource

    out = {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # KiB on Linux
    if dev.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 2**30
    return out
