"""The ``embedded`` lm-eval suite: tasks as data, generated from the embedded corpus.

Three tasks, each a YAML in ``overtraining/evaluation/tasks/`` over a JSONL file that this
module writes deterministically (fixed seeds, fixed order) into ``<cache_dir>/eval_data/``:

* ``embedded_prose_cloze`` (multiple_choice, OOD prose): the first half of a sentence from
  the pydoc reference topics and four candidate second halves. Two kinds of docs,
  alternating (the ``kind`` field): ``order``, the true half vs three shuffles of its
  words; ``continuation``, the true half vs the second halves of the three nearest other
  sentences (same paragraph first) of similar length.
* ``embedded_code_mc`` (multiple_choice, OOD code): four lines of the stdlib test suite;
  choices are the true next line, two versions of it with its names (identifiers,
  numbers) permuted over the same punctuation skeleton, and the nearest line that follows
  it at the same indentation. Skipped where the corpus has no ``ood_tests`` (Debian ships the stdlib
  test suite in a separate package).
* ``embedded_prose_ppl`` (loglikelihood_rolling): prose paragraphs of the reference topics;
  lm-eval reports word/byte perplexity and bits per byte.

How the YAML finds its file: the YAML in the package carries a placeholder
``dataset_kwargs.data_files.test``; ``task_configs`` loads it, puts the resolved path in,
and returns the config as a dict, which ``TaskManager.load`` accepts as an inline task
(``harness.py``). No YAML is written at run time and no lm-eval registry scan is needed.

Why these distractors: a task must leave room both ways, for the tiny byte models the
project pretrains and for a real LM. Shuffles (same bytes, the first and last word/name in
place, so neither length nor how a choice joins the context or ends picks the answer)
test word order, which tiny models learn, but a real LM finds every same-bytes edit,
because all else cancels (SmolLM2-135M-Instruct: 1.00 on prose shuffles, 0.93 even with
single adjacent-word swaps; 0.95 on code name permutations). Nearby text of the same
document tests meaning, which a real LM half masters and tiny models do not. Prose
alternates the two kinds by doc (a tiny model is at chance on continuations, so mixing
them inside a doc would put it at chance); code mixes them inside each doc, where tiny
models still beat chance. Measured (acc; chance 0.25; tiny = the default 385K-parameter
byte model after 2M tokens; SmolLM2 on 60 docs per design): prose order 0.48 (tiny) / 1.00
(SmolLM2), prose continuation 0.27 / 0.65; code with two permutations and one following
line 0.41 (200 docs) / 0.63, with one permutation and two following lines 0.34 / 0.53,
with three permutations (version 1) 0.72 / 0.95. The files as generated, through lm-eval:
prose / code 0.32 / 0.41 for the tiny model (200 docs; random init 0.25 / 0.20), 0.82 /
0.55 for SmolLM2 (first 60 docs). The nearby choices differ in length, so
``acc`` (summed log-likelihood) and ``acc_norm`` (per byte) differ there; continuation
halves are kept within 2/3 to 3/2 of the true half's length.

A file's name carries ``TASKS_VERSION`` and the SHA-256 of its source split, so a change of
generator or corpus (another Python version) gives a new file, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from pathlib import Path

import yaml

from overtraining.data.corpus import Corpus
from overtraining.files import atomic_write_text

TASKS_VERSION = 2
TASK_DIR = Path(__file__).resolve().parent / "tasks"
N_DOCS = {"embedded_prose_cloze": 200, "embedded_code_mc": 200, "embedded_prose_ppl": 100}
_SOURCE = {"embedded_prose_cloze": "ood_prose", "embedded_code_mc": "ood_tests", "embedded_prose_ppl": "ood_prose"}
_N_CHOICES = 4
_CODE_CONTEXT_LINES = 4
_CODE_FOLLOWING_LINES = 15  # the code distractors come from the lines after the true one
_NEIGHBOUR_WINDOW = 20  # sentences on either side searched for continuation distractors
_LENGTH_RATIO = (2 / 3, 3 / 2)  # a continuation distractor's length over the true half's
_NAME = re.compile(r"\w+")  # identifiers, keywords, numbers
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
    choices = list(others)
    choices.insert(label, true)
    return {"context": context, "choices": choices, "label": label}


def _reorders(
    items: list[str], render, rng: random.Random, count: int = _N_CHOICES - 1, tries: int = 100
) -> list[str] | None:
    """``count`` distinct renderings of ``items`` with the interior (all but the first and
    last item) shuffled, each differing from the true order; None if there are not enough.

    The ends stay put so that every choice starts and ends like the true one: a model's
    bias about how a text joins its context or ends cannot pick the answer.
    """
    true, out = render(items), []
    for _ in range(tries):
        text = render(items[:1] + rng.sample(items[1:-1], len(items) - 2) + items[-1:])
        if text != true and text not in out:
            out.append(text)
        if len(out) == count:
            return out
    return None


def _nearest(true: str, candidates: list[str], count: int, ratio: tuple[float, float] = (0.0, math.inf)):
    """The first ``count`` distinct candidates (nearest first) that differ from ``true`` and
    whose length over ``true``'s lies within ``ratio``; None if there are not enough."""
    out: list[str] = []
    for text in candidates:
        if text.strip() != true.strip() and text not in out and ratio[0] <= len(text) / len(true) <= ratio[1]:
            out.append(text)
        if len(out) == count:
            return out
    return None


def _docs(candidates: list, n: int, make, rng: random.Random) -> list[dict]:
    """Up to ``n`` docs from a seeded sample of candidates (in corpus order); ``make`` may refuse one."""
    picked = sorted(rng.sample(candidates, min(2 * n, len(candidates))))
    docs = []
    for cand in picked:
        doc = make(cand)
        if doc is not None:
            docs.append(doc)
        if len(docs) == n:
            break
    return docs


def prose_cloze_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Sentence-completion docs in corpus order, alternating ``order`` and ``continuation``
    (module docstring), so that any prefix (``eval.limit``) holds both kinds."""
    rng = random.Random(f"embedded_prose_cloze-{seed}")
    sents = _sentences(text)
    made: list[str] = []  # the kinds of the docs made so far

    def second_half(words: list[str]) -> str:
        return " ".join(words[len(words) // 2 :])

    def make(i: int) -> dict | None:
        words = sents[i]
        kind = "order" if len(made) % 2 == 0 else "continuation"
        if kind == "order":
            others = _reorders(words[len(words) // 2 :], " ".join, rng)
        else:
            lo, hi = max(0, i - _NEIGHBOUR_WINDOW), min(len(sents), i + _NEIGHBOUR_WINDOW + 1)
            near = sorted((j for j in range(lo, hi) if j != i), key=lambda j: abs(j - i))
            others = _nearest(second_half(words), [second_half(sents[j]) for j in near], 3, _LENGTH_RATIO)
        if others is None:
            return None
        made.append(kind)
        return {**_mc_doc(" ".join(words[: len(words) // 2]), second_half(words), others, rng), "kind": kind}

    return _docs(list(range(len(sents))), n, make, rng)


def _is_code_target(line: str) -> bool:
    body = line.strip()
    if not 16 <= len(body) <= 80 or body.startswith(("#", '"""', "'''")):
        return False
    return len(set(_NAME.findall(body)[1:-1])) >= 3  # enough interior names to shuffle


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def code_mc_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Next-line docs: four lines of code; the next line vs two shuffles of its names and the
    nearest line that follows it at its indentation (module docstring)."""
    rng = random.Random(f"embedded_code_mc-{seed}")
    lines = text.splitlines()
    k = _CODE_CONTEXT_LINES
    targets = [
        i
        for i in range(k, len(lines))
        if _is_code_target(lines[i]) and sum(bool(ln.strip()) for ln in lines[i - k : i]) >= k - 1
    ]

    def make(i: int) -> dict | None:
        skeleton = _NAME.split(lines[i])  # the text between names: punctuation, spaces

        def render(names: list[str]) -> str:
            return "".join(part + name for part, name in zip(skeleton, names + [""], strict=True))

        shuffled = _reorders(_NAME.findall(lines[i]), render, rng, count=2)
        indent = _indent(lines[i])
        after = [ln for ln in lines[i + 1 : i + 1 + _CODE_FOLLOWING_LINES] if _indent(ln) == indent]
        following = _nearest(lines[i], [ln for ln in after if _is_code_target(ln)], 1)
        if shuffled is None or following is None or following[0] in shuffled:
            return None
        return _mc_doc("\n".join(lines[i - k : i]) + "\n", lines[i], shuffled + following, rng)

    return _docs(targets, n, make, rng)


def prose_ppl_docs(text: str, n: int, seed: int = 0) -> list[dict]:
    """Perplexity docs: prose paragraphs of 200-600 characters, in corpus order."""
    rng = random.Random(f"embedded_prose_ppl-{seed}")
    paras = [p for p in prose_paragraphs(text) if 200 <= len(p) <= 600]
    return [{"text": paras[i]} for i in sorted(rng.sample(range(len(paras)), min(n, len(paras))))]


_BUILDERS = {
    "embedded_prose_cloze": prose_cloze_docs,
    "embedded_code_mc": code_mc_docs,
    "embedded_prose_ppl": prose_ppl_docs,
}


def _source_sha(corpus: Corpus, split: str) -> str:
    """SHA-256 of a split, from the corpus manifest when it has one (no need to read the text)."""
    manifest = corpus.root / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["splits"][split]["sha256"]
    return hashlib.sha256(corpus.text(split).encode("utf-8")).hexdigest()


def _write_jsonl(path: Path, docs: list[dict]) -> None:
    """Writes a JSONL file atomically (tmp file + os.replace), so readers never see half a file."""
    atomic_write_text(path, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))


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
