"""lm-eval on the in-memory model: the embedded suite offline, the standard suite from the Hub.

``run_lm_eval`` wraps the model that is already in memory in lm-eval's ``HFLM`` (no reload
from disk, no Hub look-up of the model) and calls ``lm_eval.evaluate`` on the task configs.
Choices made for speed and hygiene, each against a pitfall of ``simple_evaluate``:

* ``batch_size`` and ``max_length`` go to ``HFLM`` (``simple_evaluate`` ignores its own
  ``batch_size`` for an LM object; perplexities depend on ``max_length``, so it is fixed by
  the config across checkpoints); ``tokenizer=`` is always passed.
* ``lm_eval.evaluate`` rather than ``simple_evaluate``: the latter reseeds the global
  ``random``/``numpy``/``torch`` generators (it would reset the SFT loop's RNG at every
  periodic probe), asks the Hub for the model's SHA and runs ``git``; none is needed here.
* ``bootstrap_iters=0`` (stderr bootstraps cost seconds per task) and ``log_samples=False``.
* The embedded suite loads with ``TaskManager(include_defaults=False)``: lm-eval does not
  scan its thousands of built-in YAMLs (~seconds); the standard suite needs the scan.
* lm-eval's loggers are set to ERROR and its progress bars silenced while it runs.

Cost (2 CPU cores): lm-eval's fixed overhead per call is ~0.25 s for the embedded suite
(task building, datasets' JSON loader; measured with ``limit=1``); the whole suite takes
~1 s on a 32-wide 2-layer model and ~2-3.5 s on a 96-wide 3-layer one. The standard
suite's first call also indexes lm-eval's registry (~7 s, once per process). On a shared
CPU, torch's 2 OpenMP threads can make it 20x slower (43 s vs 2 s with OMP_NUM_THREADS=1).

Usage::

    metrics = run_lm_eval(model, tokenizer, EvalConfig(suite="embedded"), cache_dir=".cache/overtraining")
    metrics["ood/embedded_prose_cloze/acc"]
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
from collections.abc import Iterator

from overtraining.config import EMBEDDED_TASKS, EvalConfig, check_choice
from overtraining.data.corpus import build_embedded_corpus
from overtraining.evaluation.embedded_tasks import task_configs
from overtraining.evaluation.perplexity import scoring_mode

_QUIET_LOGGERS = ("lm_eval", "datasets", "fsspec", "filelock", "urllib3")


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Silences lm-eval's and datasets' logging and progress bars, restoring them after."""
    import datasets

    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    bars_were_on = datasets.is_progress_bar_enabled()
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        # tqdm binds sys.stderr when a bar is created: lm-eval's bars go to the buffer.
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if bars_were_on:
            datasets.enable_progress_bars()


def _task_specs(tasks: list[str], cache_dir: str | os.PathLike) -> tuple[list, bool]:
    """lm-eval specs for ``tasks``: inline configs for embedded tasks, names for the rest.

    Returns:
        (specs, needs_registry): whether any name must be looked up in lm-eval's registry.
    """
    embedded = [t for t in tasks if t in EMBEDDED_TASKS]
    registry = [t for t in tasks if t not in EMBEDDED_TASKS]
    specs: list = task_configs(embedded, build_embedded_corpus(cache_dir), cache_dir) if embedded else []
    return specs + registry, bool(registry)


@functools.cache
def _task_manager(include_defaults: bool):
    """lm-eval's TaskManager, built once per process: indexing its ~15K built-in task YAMLs
    takes ~7 s on 2 cores (measured), and a run evaluates several times."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


def _load_tasks(specs: list, needs_registry: bool) -> dict:
    """Builds lm-eval's task dict; unknown registry names fail in one line with a suggestion."""
    manager = _task_manager(needs_registry)
    for name in (s for s in specs if isinstance(s, str)):
        check_choice("lm-eval task", name, manager.all_tasks)
    task_dict = manager.load(specs)
    for task in task_dict["tasks"].values():
        if task.get_config("num_fewshot") is None:  # what simple_evaluate does: zero-shot
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=1234)
    return task_dict


def flatten_results(results: dict) -> dict[str, float]:
    """lm-eval's ``results`` section -> ``{"ood/<task>/<metric>": value}`` (numbers only).

    lm-eval keys metrics as ``"<metric>,<filter>"``; the filter is kept as a suffix only
    when it is not ``none``. Standard errors and keys without a filter (``alias``,
    ``sample_len``) are dropped.
    """
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            metric, comma, filt = key.partition(",")
            if not comma or "_stderr" in metric or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # alias, sample_len, stderrs: not metrics
            name = metric if filt == "none" else f"{metric}_{filt}"
            flat[f"ood/{task}/{name}"] = float(value)
    return flat


def _hflm(model, tokenizer, cfg: EvalConfig):
    from lm_eval.models.huggingface import HFLM

    size = str(cfg.batch_size)
    return HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=int(size) if size.isdigit() else size,
        max_length=cfg.max_length,
    )


def run_lm_eval(model, tokenizer, cfg: EvalConfig, cache_dir: str | os.PathLike) -> dict[str, float]:
    """Runs the configured lm-eval tasks on an in-memory model.

    Args:
        model: a ``transformers`` causal LM (any device); its train/eval mode is restored.
        tokenizer: its tokenizer (with a pad token).
        cfg: the eval config (``task_list``, ``limit``, ``batch_size``, ``max_length``).
        cache_dir: the project's cache dir (embedded corpus and task data live there).

    Returns:
        ``{"ood/<task>/<metric>": value}``, e.g. ``ood/arc_easy/acc_norm``,
        ``ood/embedded_prose_ppl/word_perplexity``; empty if there are no tasks.

    Raises:
        ValueError: an unknown lm-eval task name (with the nearest registered one).
    """
    tasks = cfg.task_list
    if not tasks:
        return {}
    import lm_eval

    with quiet_lm_eval(), scoring_mode(model):
        specs, needs_registry = _task_specs(tasks, cache_dir)
        task_dict = _load_tasks(specs, needs_registry)
        out = lm_eval.evaluate(
            lm=_hflm(model, tokenizer, cfg), task_dict=task_dict, limit=cfg.limit, bootstrap_iters=0, log_samples=False
        )
    return flatten_results(out["results"]) if out else {}
