"""A finding: one verdict of the report, as a row of its findings table and as a sentence.

The page opens with the findings table (effect | appears? | numbers | interval | seeds (n));
the sentences follow it. ``effects``, ``inflection``, ``tradeoff`` and ``equal_loss`` each
return findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

COLUMNS = ("effect", "appears?", "numbers", "interval", "seeds (n)")


@dataclass(frozen=True)
class Finding:
    """One verdict: a row of the findings table and its sentence.

    Attributes:
        effect: what is judged, e.g. ``U-shape of fine-tuned OOD prose perplexity (LR 1e-3)``.
        appears: the verdict, e.g. ``yes``, ``no``, ``reversed``, ``yes (single seed, untested)``.
        numbers: the values behind it (means, test statistic, p-value).
        interval: the 95% interval of the quantity the verdict rests on, or ``""``.
        seeds: replicas per budget/condition, e.g. ``2``, ``2-3``, ``1 (single seed)``.
        sentence: the verdict as one plain sentence.
    """

    effect: str
    appears: str
    numbers: str
    interval: str
    seeds: str
    sentence: str


def findings_frame(findings: Sequence[Finding]) -> pd.DataFrame:
    """The findings table: columns effect | appears? | numbers | interval | seeds (n)."""
    rows = [(f.effect, f.appears, f.numbers, f.interval, f.seeds) for f in findings]
    return pd.DataFrame(rows, columns=list(COLUMNS))
