"""overtraining: an experiment pipeline for research on catastrophic overtraining."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# Progress bars redraw every 0.1 s by default; in logs (Slurm, CI, pipes) that is a flood.
if not _sys.stderr.isatty():
    _os.environ.setdefault("TQDM_MININTERVAL", "10")
