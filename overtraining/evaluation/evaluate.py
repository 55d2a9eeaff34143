"""One call evaluates a model: lm-eval suite, perplexities, ID metrics, format probe, timings.

``evaluate_model`` is what a cell runs on the base model (through ``BaseEvalCache``) and
on the fine-tuned model (along SFT only the cheaper trajectory probe runs, see
``overtraining.cell.fine_tune``); ``forgetting(base, finetuned)`` turns two of its outputs
into the signed OOD deltas. Its output is one flat dict of floats:

    ood/<task>/<metric>        lm-eval (acc, acc_norm, word_perplexity, ...; harness.py)
    ppl/<text>/{loss,ppl,tokens} perplexity of an embedded-corpus split or a Hub text
    id/{loss,accuracy}         the SFT task (when held-out data are given; id_metrics.py)
    probe/docstring_rate[_raw], probe/docstring_prob[_raw]  the format probe (format_probe.py)
    time/eval_<part>_s         wall time of each part, and time/eval_total_s

Each part is skipped when the config turns it off or its inputs are missing: a corpus
without a configured split (a local corpus has no ``ood_prose``) skips that split with a
log line rather than failing a long run at its end. Run on rank 0 only: the metrics need
the whole model, and lm-eval treats an in-memory model as a world of size 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

from overtraining.config import EvalConfig
from overtraining.data.corpus import Corpus
from overtraining.evaluation.format_probe import format_probe
from overtraining.evaluation.harness import run_lm_eval
from overtraining.evaluation.id_metrics import ScoreFn, id_metrics
from overtraining.evaluation.perplexity import hub_text, perplexity

log = logging.getLogger(__name__)


@contextlib.contextmanager
def timed(out: dict[str, float], part: str) -> Iterator[None]:
    """Adds the wall time of the block to ``out["time/eval_<part>_s"]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        out[f"time/eval_{part}_s"] = time.perf_counter() - start


def _texts(cfg: EvalConfig, corpus: Corpus, cache_dir: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """(name, text) of every configured perplexity text that exists."""
    for split in cfg.ppl_splits:
        if split in corpus.splits:
            yield split, corpus.text(split)
        else:
            log.warning("eval: corpus %s has no split %r; skipping its perplexity", corpus.root, split)
    for name in cfg.ppl_hub:
        yield name, hub_text(name, cache_dir)


def perplexities(model, tokenizer, cfg: EvalConfig, corpus: Corpus, cache_dir: str | os.PathLike) -> dict[str, float]:
    """``ppl/<text>/{loss,ppl,tokens}`` for the configured splits and Hub texts."""
    out = {}
    for name, text in _texts(cfg, corpus, cache_dir):
        res = perplexity(model, tokenizer, text, cfg.ppl_seq_len, cfg.ppl_max_tokens, cfg.loop_batch_size)
        out.update({f"ppl/{name}/{k}": v for k, v in res.items()})
    return out


def evaluate_model(
    model,
    tokenizer,
    cfg: EvalConfig,
    corpus: Corpus,
    cache_dir: str | os.PathLike,
    heldout: list[dict] | None = None,
    heldout_raw: list[dict] | None = None,
    score_fn: ScoreFn | None = None,
) -> dict[str, float]:
    """Evaluates a model in memory; its train/eval mode is left as it was.

    Args:
        model: a causal LM on any device.
        tokenizer: its tokenizer (pad token and chat template set).
        cfg: what to evaluate.
        corpus: the pretraining corpus (perplexity splits).
        cache_dir: the project's cache dir (embedded task data, Hub texts).
        heldout: tokenized SFT held-out examples (``input_ids``, ``labels``) for ``id/loss``.
        heldout_raw: the same untokenized (``messages``), for ``id/accuracy`` and the probe.
        score_fn: the SFT task's ``score_fn(completion, example) -> bool``.

    Returns:
        One flat dict of floats (see the module docstring).
    """
    out: dict[str, float] = {}
    start = time.perf_counter()
    if cfg.task_list:
        with timed(out, "lm_eval"):
            out.update(run_lm_eval(model, tokenizer, cfg, cache_dir))
    if cfg.ppl_splits or cfg.ppl_hub:
        with timed(out, "ppl"):
            out.update(perplexities(model, tokenizer, cfg, corpus, cache_dir))
    if (heldout or heldout_raw) and cfg.id_max_examples > 0:
        with timed(out, "id"):
            out.update(id_metrics(model, tokenizer, heldout, heldout_raw, score_fn, cfg))
    if cfg.format_probe:
        with timed(out, "probe"):
            out.update(format_probe(model, tokenizer, heldout_raw, cfg))
    out["time/eval_total_s"] = time.perf_counter() - start
    return out
