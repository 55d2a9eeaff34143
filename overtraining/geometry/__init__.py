"""Geometry of a checkpoint: perturbation sensitivity, sharpness, drift, loss landscape.

Pure functions over a Hugging Face causal LM and a list of fixed batches (dicts with
``input_ids``, ``labels`` and optionally ``attention_mask``); none of them changes the
model it is given. The pipeline calls the two entry points of ``config``::

    from overtraining.geometry import GeometryConfig, measure_checkpoint, measure_pair
    metrics = measure_checkpoint(model, batches, GeometryConfig(estimators=["kl"]))
"""

from overtraining.config import ESTIMATORS, GeometryConfig
from overtraining.geometry.drift import drift_by_layer, linear_cka, mean_principal_angle
from overtraining.geometry.landscape import interpolation_losses, random_slice
from overtraining.geometry.measure import measure_checkpoint, measure_pair
from overtraining.geometry.perturbation import evaluate_loss, perturbation_sensitivity
from overtraining.geometry.sharpness import (
    hessian_top_eigenvalue,
    hessian_trace,
    hutchinson_trace,
    kl_sharpness,
    lanczos_top_eigenvalue,
    model_hvp,
)

__all__ = [
    "ESTIMATORS",
    "GeometryConfig",
    "drift_by_layer",
    "evaluate_loss",
    "hessian_top_eigenvalue",
    "hessian_trace",
    "hutchinson_trace",
    "interpolation_losses",
    "kl_sharpness",
    "lanczos_top_eigenvalue",
    "linear_cka",
    "mean_principal_angle",
    "measure_checkpoint",
    "measure_pair",
    "model_hvp",
    "perturbation_sensitivity",
    "random_slice",
]
