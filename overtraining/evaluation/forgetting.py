"""Forgetting: how much fine-tuning lost on out-of-distribution metrics, signed so + = forgot.

For every metric present in both the base and the fine-tuned evaluation whose name starts
with ``ood/`` or ``ppl/``::

    forget/<metric> = base - finetuned    for higher-is-better metrics
    forget/<metric> = finetuned - base    for lower-is-better metrics

The direction is read from the metric's last name component (``ood/arc_easy/acc_norm`` ->
``acc_norm``): a component in ``HIGHER_IS_BETTER`` (acc, acc_norm, f1, mcc, exact_match,
...) or in ``LOWER_IS_BETTER`` (loss, ppl, word/byte perplexity, bits_per_byte); anything
else (e.g. ``tokens``, ``sample_len``) is not a score and is skipped. Summaries:

* ``forget/mean_acc``: mean over the ``acc`` metrics (one per task; ``acc_norm`` is
  reported per task but not averaged in, so that a task is not counted twice);
* ``forget/mean_ppl_loss``: mean over the ``loss`` metrics (``ppl/<text>/loss``), in nats.

NaNs are kept per metric and left out of the means. A model identical to the base gets
exactly 0 everywhere (x - x == 0 in floating point).
"""

from __future__ import annotations

import math

# The one table of metric directions (the report's labels use it too).
HIGHER_IS_BETTER = frozenset({"acc", "acc_norm", "f1", "mcc", "exact_match", "accuracy", "em", "bleu", "cka", "score"})
LOWER_IS_BETTER = frozenset(
    {"loss", "ppl", "perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
    | {"delta", "kl", "hessian", "mpa", "sharpness"}  # geometry: larger = more sensitive / more drift
)
_PREFIXES = ("ood/", "ppl/")


def direction(metric: str) -> int:
    """+1 if higher is better, -1 if lower is better, 0 if the metric is not a score."""
    leaf = metric.rsplit("/", 1)[-1]
    return 1 if leaf in HIGHER_IS_BETTER else -1 if leaf in LOWER_IS_BETTER else 0


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def forgetting(base: dict[str, float], finetuned: dict[str, float]) -> dict[str, float]:
    """Signed OOD deltas from base to fine-tuned model (positive = forgot).

    Args:
        base: the base model's flat metrics (``evaluate_model``'s output).
        finetuned: the fine-tuned model's flat metrics.

    Returns:
        ``forget/<metric>`` for each shared ``ood/*`` and ``ppl/*`` score, plus
        ``forget/mean_acc`` and ``forget/mean_ppl_loss`` when there are such metrics.
    """
    out = {}
    for metric in sorted(base.keys() & finetuned.keys()):
        sign = direction(metric)
        if metric.startswith(_PREFIXES) and sign:
            delta = base[metric] - finetuned[metric] if sign > 0 else finetuned[metric] - base[metric]
            out[f"forget/{metric}"] = delta
    accs = [v for k, v in out.items() if k.endswith("/acc")]
    losses = [v for k, v in out.items() if k.startswith("forget/ppl/") and k.endswith("/loss")]
    if accs:
        out["forget/mean_acc"] = _mean(accs)
    if losses:
        out["forget/mean_ppl_loss"] = _mean(losses)
    return out
