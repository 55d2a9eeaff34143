"""The ``embedded`` lm-eval suite: tasks as data, generated from the embedded corpus.

Three tasks, each a YAML in ``overtraining/evaluation/tasks/`` over a JSONL file that this
module writes deterministically (fixed seeds, fixed order) into ``<cache_dir>/eval_data/``:

* ``embedded_prose_cloze`` (multiple_choice, OOD prose): the first half of a sentence from
  the pydoc reference topics; choices are its true second half and the second halves of
  three other sentences. Random = 0.25.
* ``embedded_code_mc`` (multiple_choice, OOD code): four lines of the stdlib test suite;
  choices are the true next line and three lines from elsewhere, re-indented like the true
  one (so indentation gives nothing away). Skipped where the corpus has no ``ood_tests``.
* ``embedded_prose_ppl`` (loglikelihood_rolling): prose paragraphs of the reference topics;
  lm-eval reports word/byte perplexity and bits per byte.

How the YAML finds its file: the YAML in the package carries a placeholder
``dataset_kwargs.data_files.test``; ``task_configs`` loads it, puts the resolved path in,
and returns the config as a dict, which ``TaskManager.load`` accepts as an inline task
(``harness.py``). No YAML is written at run time and no lm-eval registry scan is needed.

A file's name carries ``TASKS_VERSION`` and the SHA-256 of its source split, so a change of
generator or corpus (another Python version) gives a new file, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from pathlib import Path

import yaml

from overtraining.data.corpus import Corpus

EMBEDDED_TASKS = ("embedded_prose_cloze", "embedded_code_mc", "embedded_prose_ppl")
TASKS_VERSION = 1
TASK_DIR = Path(__file__).resolve().parent / "tasks"
N_DOCS = {"embedded_prose_cloze": 100, "embedded_code_mc": 100, "embedded_prose_ppl": 100}
_SOURCE = {"embedded_prose_cloze": "ood_prose", "embedded_code_mc": "ood_tests", "embedded_prose_ppl": "ood_prose"}
_N_CHOICES = 4
_CODE_CONTEXT_LINES = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")


def prose_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs of running prose (no code, grammar or header blocks)."""
    out = []
    for para in text.split("\n\n"):
        lines = para.strip("\n").splitlines()
        if not lines or any(ln[:1].isspace() or set(ln.strip()) <= set("*=-~^") for ln in lines):
            continue
        joined = " ".join(ln.strip() for ln in lines)
        if len(joined) >= 80:
            out.append(joined)
    return out


def _sentences(text: str) -> list[list[str]]:
    """Sentences of 10-40 words from the prose paragraphs, as word lists."""
    sents = (s.split() for para in prose_paragraphs(text) for s in _SENTENCE_END.split(para))
    return [w for w in sents if 10 <= len(w) <= 40]


def _mc_doc(context: str, true: str, others: list[str], rng: random.Random) -> dict:
    """A multiple-choice doc with the true choice at a seeded random position."""
    label = rng.randrange(_N_CHOICES)
    choices = others[: _N_CHOICES - 1]
    choices.insert(label, true)
    return {"context": context, "choices": choices, "label": label}


def prose_cloze_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Sentence-completion docs: first half of a sentence vs four candidate second halves."""
    rng = random.Random(f"embedded_prose_cloze-{seed}")
    sents = _sentences(text)
    halves = [(" ".join(w[: len(w) // 2]), " ".join(w[len(w) // 2 :])) for w in sents]
    docs = []
    for i in sorted(rng.sample(range(len(halves)), min(n, len(halves)))):
        context, true = halves[i]
        others = [halves[j][1] for j in rng.sample(range(len(halves)), 8) if halves[j][1] != true]
        docs.append(_mc_doc(context, true, others, rng))
    return docs


def _is_code_target(line: str) -> bool:
    body = line.strip()
    return 16 <= len(body) <= 80 and not body.startswith(("#", '"""', "'''"))


def code_mc_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Next-line docs: four lines of code vs four candidate next lines at the same indentation."""
    rng = random.Random(f"embedded_code_mc-{seed}")
    lines = text.splitlines()
    k = _CODE_CONTEXT_LINES
    targets = [
        i for i in range(k, len(lines))
        if _is_code_target(lines[i]) and sum(bool(ln.strip()) for ln in lines[i - k : i]) >= k - 1
    ]
    docs = []
    for i in sorted(rng.sample(targets, min(n, len(targets)))):
        true = lines[i]
        indent = true[: len(true) - len(true.lstrip())]
        others = [indent + lines[j].strip() for j in rng.sample(targets, 8) if lines[j].strip() != true.strip()]
        docs.append(_mc_doc("\n".join(lines[i - k : i]) + "\n", true, others, rng))
    return docs


def prose_ppl_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Perplexity docs: prose paragraphs of 200-600 characters, in corpus order."""
    rng = random.Random(f"embedded_prose_ppl-{seed}")
    paras = [p for p in prose_paragraphs(text) if 200 <= len(p) <= 600]
    return [{"text": paras[i]} for i in sorted(rng.sample(range(len(paras)), min(n, len(paras))))]


_BUILDERS = {
    "embedded_prose_cloze": prose_cloze_docs, "embedded_code_mc": code_mc_docs, "embedded_prose_ppl": prose_ppl_docs,
}


def _source_sha(corpus: Corpus, split: str) -> str:
    """SHA-256 of a split, from the corpus manifest when it has one (no need to read the text)."""
    manifest = corpus.root / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["splits"][split]["sha256"]
    return hashlib.sha256(corpus.text(split).encode("utf-8")).hexdigest()


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    """Writes a JSONL file atomically (tmp file + os.replace), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    os.replace(tmp, path)


def task_data(task: str, corpus: Corpus, cache_dir: str | os.PathLike) -> Path | None:
    """Generates (once) the JSONL file of one embedded task and returns its path.

    Args:
        task: one of ``EMBEDDED_TASKS``.
        corpus: the embedded corpus (``build_embedded_corpus``).
        cache_dir: the project's cache directory; files go to ``<cache_dir>/eval_data/``.

    Returns:
        The file's path, or None when the corpus lacks the task's source split.
    """
    split = _SOURCE[task]
    if split not in corpus.splits:
        return None
    sha = _source_sha(corpus, split)
    path = Path(cache_dir) / "eval_data" / f"{task}-v{TASKS_VERSION}-{sha[:12]}.jsonl"
    if not path.exists():
        _write_jsonl(path, _BUILDERS[task](corpus.text(split), N_DOCS[task]))
    return path


def task_config(task: str, data_file: Path) -> dict:
    """The task's YAML from the package, as an inline lm-eval config pointing at ``data_file``."""
    cfg = yaml.safe_load((TASK_DIR / f"{task}.yaml").read_text())
    cfg["dataset_kwargs"] = {"data_files": {"test": str(data_file)}}
    return cfg


def task_configs(tasks: list[str], corpus: Corpus, cache_dir: str | os.PathLike) -> list[dict]:
    """Inline lm-eval configs of the embedded tasks whose data exist in this corpus."""
    out = []
    for task in tasks:
        path = task_data(task, corpus, cache_dir)
        if path is not None:
            out.append(task_config(task, path))
    return out
