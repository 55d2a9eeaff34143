"""overtraining: an experiment pipeline for research on catastrophic overtraining."""

__version__ = "0.1.0"
