"""Toy models of catastrophic overtraining, run with ``python -m overtraining.theory``.

``linear``: two-layer linear network (Springer et al. 2025, sec. 4): incremental feature
learning, progressive sensitivity to Gaussian weight noise (U-shaped perturbed loss) and
forgetting under misaligned fine-tuning. ``diagonal``: diagonal linear network (Rofin,
Varre & Flammarion 2026): fine-tuning step size and pretraining step-size decay regulate
forgetting at equal fine-tuning loss. ``config`` holds the Hydra schemas.
"""
