"""The base-evaluation cache: evaluate each base checkpoint once per eval config, across jobs.

Every cell of a sweep that shares a checkpoint shares its base evaluation (OOD metrics,
and whatever else the caller computes: perturbation, sharpness). The cache is a directory
on shared disk, one JSON file per entry::

    <root>/<sha256 of the key>.json    {"key": {...}, "metrics": {...}}

The key is a dict naming everything the numbers depend on (``make_key``): the checkpoint
(name, source, revision, tokens), the eval config, the SFT held-out set's content hash and
a code version; its hash is the SHA-256 of its canonical JSON (sorted keys, no spaces), so
equal keys from separate processes or Slurm jobs find the same file, and any change of the
eval config gives a new entry (the old one stays, valid for its own key).

Concurrency: writes are atomic (a temp file in the same directory + ``os.replace``), so a
reader sees no entry or a whole one, never half. ``get_or_compute`` holds an exclusive
``fcntl.flock`` on ``<hash>.lock`` while it checks, computes and writes, so two processes
evaluating the same key compute once: the second waits, then reads the first's entry.
Where ``flock`` is not honoured across nodes (some NFS setups), both may compute, but the
atomic replace still leaves ONE valid entry. A file whose key differs (a hash collision)
or that does not parse counts as a miss and is overwritten.

Usage::

    cache = BaseEvalCache(Path(cache_dir) / "base_eval")
    key = make_key({"name": ckpt.name, "source": ckpt.source, "revision": ckpt.revision,
                    "tokens": ckpt.tokens}, eval_cfg, heldout, code_version="git:<sha>")
    metrics, hit = cache.get_or_compute(key, lambda: evaluate_model(model, tok, eval_cfg, ...))
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overtraining.files import atomic_write_text

# Bump when the evaluation code changes what a metric means (tasks, windows, metrics).
EVAL_CODE_VERSION = "eval-v2"  # v2: format probe adds probe/docstring_prob[_raw]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no spaces; dataclasses become dicts, paths strings."""

    def default(o: Any) -> Any:
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        return str(o)

    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=default, ensure_ascii=False)


def content_hash(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON (e.g. the tokenized held-out set)."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def make_key(checkpoint: dict, eval_cfg: Any, heldout: Any = None, code_version: str = EVAL_CODE_VERSION) -> dict:
    """The cache key of a base evaluation.

    Args:
        checkpoint: the checkpoint's identity, e.g. name, source (repo or path), revision, tokens.
        eval_cfg: the ``EvalConfig`` (or any dataclass / dict of settings the metrics depend on).
        heldout: the SFT held-out set (hashed by content), or None.
        code_version: a string that changes when the evaluation code changes its numbers.

    Returns:
        A JSON-able dict.
    """
    return {
        "checkpoint": checkpoint,
        "eval": json.loads(canonical_json(eval_cfg)),
        "heldout": content_hash(heldout) if heldout is not None else None,
        "code_version": code_version,
    }


class BaseEvalCache:
    """A file-based, process-safe cache of metric dicts keyed by content hash.

    Attributes:
        root: the cache directory (created on first use).
        hits: calls answered from disk by this object.
        misses: calls that computed (and wrote) an entry.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def path(self, key: dict) -> Path:
        """The entry file of a key."""
        return self.root / f"{content_hash(key)}.json"

    def get(self, key: dict) -> dict | None:
        """The cached metrics of a key, or None (missing, unreadable or another key's entry)."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        same_key = isinstance(entry, dict) and canonical_json(entry.get("key")) == canonical_json(key)
        return entry.get("metrics") if same_key else None

    def put(self, key: dict, metrics: dict) -> Path:
        """Writes an entry atomically (temp file + ``os.replace``) and returns its path."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        atomic_write_text(path, json.dumps({"key": key, "metrics": metrics}, indent=1, sort_keys=True))
        return path

    def get_or_compute(self, key: dict, compute: Callable[[], dict]) -> tuple[dict, bool]:
        """Returns the cached metrics of ``key``, computing and storing them on a miss.

        Args:
            key: a JSON-able dict (``make_key``).
            compute: called with no arguments on a miss; returns a JSON-able dict.

        Returns:
            (metrics, hit): hit is True when the metrics came from disk.
        """
        cached = self.get(key)
        if cached is not None:
            self.hits += 1
            return cached, True
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.path(key).with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            cached = self.get(key)  # another process may have written it while we waited
            if cached is not None:
                self.hits += 1
                return cached, True
            metrics = compute()
            self.put(key, metrics)
        self.misses += 1
        return metrics, False
