"""Human names for what the report shows: token budgets, LRs, metric names, metric choice.

Metric names follow ``overtraining.results``: ``base/<m>``, ``ft/<m>``, ``forget/<m>``. The
report's ``--metric`` takes ``<m>`` (``ppl/ood_prose``) or any prefixed form of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from overtraining.evaluation.forgetting import HIGHER_IS_BETTER, LOWER_IS_BETTER

# Searched in order when no --metric is given: the first OOD metric a sweep has.
OOD_PREFERENCE = ("ppl/ood_prose", "ppl/ood", "ood/", "loss/ood", "ppl/")
ID_PREFERENCE = ("id/accuracy", "id/exact_match", "id/acc", "id/loss", "id/")
PREFIXES = ("base/", "ft/", "forget/")
_LOWER = LOWER_IS_BETTER
_HIGHER = HIGHER_IS_BETTER


def format_tokens(n: float) -> str:
    """A token count in short form: 250K, 1M, 1.5M, 84B, 2.3T.

    Args:
        n: number of tokens.

    Returns:
        The count with a K/M/B/T suffix and at most two significant decimals.
    """
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def format_lr(lr: float) -> str:
    """A learning rate as ``1e-4`` or ``3e-5`` (mantissa kept only when it is not 1)."""
    if lr <= 0 or not math.isfinite(lr):
        return str(lr)
    exp = math.floor(math.log10(lr))
    mant = lr / 10**exp
    if math.isclose(mant, round(mant), rel_tol=1e-6):
        mant = round(mant)
        return f"{mant}e{exp}" if mant != 1 else f"1e{exp}"
    return f"{mant:.2g}e{exp}"


def base_name(metric: str) -> str:
    """``ft/ppl/ood_prose`` -> ``ppl/ood_prose``; an unprefixed name is returned as is."""
    for prefix in PREFIXES:
        if metric.startswith(prefix):
            return metric[len(prefix) :]
    return metric


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better.

    Forgetting is signed so that positive = forgot, so every ``forget/`` metric is
    lower-is-better; otherwise losses, perplexities, noise deltas and principal angles are,
    accuracies and CKA are not.

    Raises:
        ValueError: when the name says neither, naming the fix.
    """
    name = metric.lower()
    if name.startswith("forget/"):
        return True
    parts = name.split("/")
    words = set(parts) | {w for p in parts for w in p.split("_")}
    if words & _HIGHER:
        return False
    if words & _LOWER:
        return True
    raise ValueError(f"cannot tell whether {metric!r} is better high or low: put loss/ppl or acc in its name")


def pick_metric(
    columns: Iterable[str], requested: str | None, preference: tuple[str, ...], skip: Iterable[str] = ()
) -> str | None:
    """The ``<m>`` whose ``ft/<m>`` column the report centres on.

    Args:
        columns: the table's column names.
        requested: the user's ``--metric`` (with or without prefix), or None to choose.
        preference: prefixes of ``<m>`` tried in order when nothing is requested.
        skip: ``<m>`` names not to choose by preference (e.g. metrics constant over the sweep,
            such as an ID accuracy of 0 everywhere, which cannot rank LRs).

    Returns:
        ``<m>``, or None when the table has no ``ft/`` metric matching the preference.

    Raises:
        ValueError: when ``requested`` has no ``ft/`` column, listing the ones there are.
    """
    ft = sorted(base_name(c) for c in columns if c.startswith("ft/"))
    if requested:
        m = base_name(requested)
        if m in ft:
            return m
        raise ValueError(f"no column ft/{m} in the records; --metric takes one of: {', '.join(ft) or '(none)'}")
    skip = set(skip)
    for pref in preference:
        for m in ft:
            if m.startswith(pref) and m not in skip:
                return m
    return None


def metric_label(metric: str) -> str:
    """A readable axis label with units, e.g. ``ft/ppl/ood_prose`` -> ``OOD prose perplexity``."""
    m = base_name(metric)
    parts = m.split("/")
    head, tail = parts[0], " ".join(p.replace("_", " ") for p in parts[1:])
    tail = tail.replace("ood ", "OOD ").replace("id ", "ID ")
    if head == "ppl" and parts[-1] in ("loss", "ppl"):  # ppl/<text>/loss, ppl/<text>/ppl
        text = " ".join(p.replace("_", " ") for p in parts[1:-1]).replace("ood ", "OOD ").replace("id ", "ID ")
        return f"{text} loss (nats/token)" if parts[-1] == "loss" else f"{text} perplexity"
    if head == "ppl":
        return f"{tail} perplexity".strip()
    if head == "loss":
        return f"{tail} loss (nats/token)".strip()
    if head == "id":
        return {"accuracy": "ID accuracy (fraction)", "loss": "ID loss (nats/token)"}.get(tail, f"ID {tail}")
    if head == "ood" and parts[-1] == "acc":
        return f"OOD {' '.join(parts[1:-1]).replace('_', ' ')} accuracy (fraction)"
    return m.replace("/", " ").replace("_", " ")
