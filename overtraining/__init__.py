"""overtraining: an experiment pipeline for research on catastrophic overtraining."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Progress bars redraw every 0.1 s by default; in logs (Slurm, CI, pipes) that is a flood.
if not _sys.stderr.isatty():
    _os.environ.setdefault("TQDM_MININTERVAL", "10")


class _DropTorchaoImportNotices:
    """Drops the lines importing torchao logs on a CPU build of torch.

    transformers imports torchao whenever it is installed (the quantization probe needs it);
    each import logs that torchao's compiled CUDA kernels do not load and that it registers
    enums the deprecated way. Neither concerns this package, which uses torchao's pure-torch
    quantization primitives only.
    """

    @staticmethod
    def filter(record) -> bool:  # a logging.LogRecord
        message = record.getMessage()
        enum = "is an Enum subclass and is now natively supported by torch.compile" in message
        return not (enum or ("Failed to load" in message and "torchao" in message))


def _quiet_torchao_notices() -> None:
    import logging

    for name in ("torch.utils._pytree", "torchao"):
        logging.getLogger(name).addFilter(_DropTorchaoImportNotices)


_quiet_torchao_notices()
