"""The evaluation config (the ``eval`` group, ``conf/eval/*.yaml``).

Presets::

    python -m overtraining.run                    # eval=embedded (default): local lm-eval tasks, offline
    python -m overtraining.run eval=standard      # arc/hellaswag/piqa/... + WikiText-2/C4 perplexity (Hub)
    python -m overtraining.run eval=quick         # embedded, few examples per task (smoke runs)
    python -m overtraining.run eval=none          # no evaluation beyond timings

Names are checked when the dataclass is built (Hydra's ``OmegaConf.to_object``), so a typo
fails before any work with a one-line message that suggests the nearest valid name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from overtraining.data.corpus import SPLITS
from overtraining.evaluation.embedded_tasks import EMBEDDED_TASKS

SUITES = ("embedded", "standard", "none")
# The standard suite (Springer et al.'s zero-shot benchmarks), as lm-eval names them.
STANDARD_TASKS = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "boolq",
    "winogrande",
    "openbookqa",
    "social_iqa",
)
HUB_TEXTS = ("wikitext2", "c4")
# Batch size of this package's own loops (perplexity, ID loss, generation) when
# ``batch_size`` is "auto" (lm-eval searches for the largest batch; we do not).
AUTO_LOOP_BATCH_SIZE = 16


def check_name(kind: str, value: str, options: tuple[str, ...] | list[str]) -> None:
    """Raises a one-line ValueError naming the nearest option if ``value`` is not one of ``options``.

    Args:
        kind: what the value names, for the message (e.g. ``eval.suite``).
        value: the name to check.
        options: the valid names.

    Raises:
        ValueError: ``unknown eval.suite 'embeded' (did you mean 'embedded'?); choose embedded, ...``.
    """
    if value in options:
        return
    near = difflib.get_close_matches(value, list(options), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    listing = ", ".join(options) if len(options) <= 20 else f"one of {len(options)} names (`lm-eval ls tasks`)"
    raise ValueError(f"unknown {kind} {value!r}{hint}; choose {listing}")


@dataclass
class EvalConfig:
    """What to evaluate on a base or fine-tuned model.

    Attributes:
        suite: embedded (local lm-eval tasks from the embedded corpus, offline) | standard
            (``STANDARD_TASKS``, needs the Hub) | none (no lm-eval).
        tasks: overrides the suite's task list (embedded names, or any lm-eval task name
            for the standard suite, checked against lm-eval's registry when it runs).
        limit: examples per lm-eval task (quick runs); None = all.
        batch_size: lm-eval's HFLM batch size, an int or "auto" (GPU); this package's own
            loops use the int, or ``AUTO_LOOP_BATCH_SIZE`` for "auto".
        max_length: HFLM's context length; fixed across checkpoints because
            ``loglikelihood_rolling`` perplexities depend on it.
        ppl_splits: embedded-corpus splits whose perplexity is measured (``ppl/<split>/*``).
        ppl_hub: Hub texts for perplexity, wikitext2 | c4 (real runs; need the internet).
        ppl_max_tokens: tokens of each text scored (the first ones, deterministic).
        ppl_seq_len: window length of the non-overlapping perplexity windows.
        id_max_examples: held-out SFT examples for ``id/loss`` and ``id/accuracy``
            (the first ones); 0 disables the ID metrics.
        id_max_new_tokens: greedy generation length for ``id/accuracy`` and the probe.
        format_probe: measure ``probe/docstring_rate`` (see format_probe.py).
        format_probe_prompts: held-out prompts used by the probe.
    """

    suite: str = "embedded"
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    batch_size: str = "8"
    max_length: int = 512
    ppl_splits: list[str] = field(default_factory=lambda: ["ood_prose", "id_heldout"])
    ppl_hub: list[str] = field(default_factory=list)
    ppl_max_tokens: int = 65536
    ppl_seq_len: int = 256
    id_max_examples: int = 50
    id_max_new_tokens: int = 160
    format_probe: bool = True
    format_probe_prompts: int = 16

    def __post_init__(self) -> None:
        check_name("eval.suite", self.suite, SUITES)
        if self.suite == "embedded":
            for task in self.tasks:
                check_name("eval.tasks entry", task, EMBEDDED_TASKS)
        for split in self.ppl_splits:
            check_name("eval.ppl_splits entry", split, SPLITS)
        for name in self.ppl_hub:
            check_name("eval.ppl_hub entry", name, HUB_TEXTS)
        size = str(self.batch_size)
        if not (size.isdigit() and int(size) > 0) and not size.startswith("auto"):
            raise ValueError(f"eval.batch_size must be a positive int or 'auto', got {size!r}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"eval.limit must be > 0 or null (all examples), got {self.limit}")
        if min(self.max_length, self.ppl_seq_len, self.ppl_max_tokens) < 2:
            raise ValueError("eval.max_length, eval.ppl_seq_len and eval.ppl_max_tokens must be >= 2")

    @property
    def task_list(self) -> list[str]:
        """The lm-eval tasks to run: ``tasks`` if given, else the suite's."""
        if self.tasks:
            return list(self.tasks)
        return {"embedded": list(EMBEDDED_TASKS), "standard": list(STANDARD_TASKS), "none": []}[self.suite]

    @property
    def loop_batch_size(self) -> int:
        """Batch size of this package's own loops (perplexity, ID loss, generation)."""
        size = str(self.batch_size)
        return int(size) if size.isdigit() else AUTO_LOOP_BATCH_SIZE

    @property
    def generation_batch_size(self) -> int:
        """Prompts per greedy-generation batch: 4x the loop batch, because decoding a small
        model is per-step overhead bound (a wider batch costs about the same per step)."""
        return 4 * self.loop_batch_size
