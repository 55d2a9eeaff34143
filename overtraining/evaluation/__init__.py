"""Evaluation: lm-eval suites on the in-memory model, perplexity, ID metrics, format probe.

Modules (import what you need; this package imports nothing eagerly, so that the cache
and the config stay cheap to import in launcher processes):

* ``config``         -- ``EvalConfig``, the ``eval`` config group;
* ``evaluate``       -- ``evaluate_model``: everything below in one call, one flat dict;
* ``harness``        -- ``run_lm_eval``: lm-eval's API on the model in memory;
* ``embedded_tasks`` -- the offline ``embedded`` suite's data, from the embedded corpus;
* ``perplexity``     -- windowed perplexity of a text; WikiText-2 / C4 texts;
* ``id_metrics``     -- the SFT task's held-out loss and greedy-generation accuracy;
* ``format_probe``   -- docstring rate of greedy completions and docstring probability (TinyGSM story);
* ``forgetting``     -- signed OOD deltas, base vs fine-tuned (positive = forgot);
* ``cache``          -- ``BaseEvalCache``: base-model evaluations shared across jobs.
"""
