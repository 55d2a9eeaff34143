"""SFT data sets (the ``sft_data`` group): every source becomes chat messages, then one encode path.

Sources (``sft_data.name``):

=============  ==========================================================  ===============
name           source                                                      ID metric
=============  ==========================================================  ===============
embedded_math  generated word problems -> Python programs (``math_task``)  exact match
jsonl          a local file, see below                                     (SFT loss)
anthropic_hh   Anthropic/hh-rlhf ``chosen``, split into Human/Assistant    (SFT loss)
tulu3          allenai/tulu-3-sft-mixture ``messages``                     (SFT loss)
tinygsm        TinyGSM/TinyGSM question -> code (docstrings stripped)      exact match
siqa           Social IQa (context, question, options A-C -> letter)       label match
sst2           stanfordnlp/sst2 sentence -> positive / negative            label match
gsm8k          openai/gsm8k ``main`` question -> worked answer             exact match
=============  ==========================================================  ===============

Local JSONL format (``sft_data=jsonl sft_data.path=/data/my.jsonl``): one JSON object per
line, ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``,
ending with an assistant turn; other keys (e.g. ``"answer"``) are kept for scoring. The
file is shuffled with ``seed`` and its first ``num_heldout`` lines are held out.

Held-out sets come from the data set's own test/validation split where it has one
(hh-rlhf test, sst2 and siqa validation, gsm8k test), otherwise from a seeded split.
Social IQa is read from ``lighteval/siqa``: ``allenai/social_i_qa`` is a script-based data
set that ``datasets>=4`` refuses, and lighteval/siqa is its parquet mirror (verified equal
row for row in lm-eval PR #3943). TinyGSM (12.3M rows) is streamed and sampled from a
shuffle buffer; the others are downloaded once into the datasets cache. The TinyGSM code has
its docstrings and comments removed (as in Springer et al.'s blog), so the format probe
means the same thing as on the embedded task.
"""

from __future__ import annotations

import ast
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from overtraining.config import SFTDataConfig, with_seed
from overtraining.data import math_task
from overtraining.data.chat import IGNORE_INDEX, encode_chat, pack
from overtraining.data.jsonl import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class SFTData:
    """Encoded SFT data.

    Attributes:
        name: the data set's name.
        train: encoded (or packed) training examples ``{"input_ids", "labels"[, "position_ids"]}``.
        heldout: encoded held-out examples (the held-out SFT loss).
        heldout_raw: per held-out example: ``messages`` (prompt turns, without the answer),
            ``answer`` (what ``score_fn`` compares with), ``reference`` (the reference reply).
    """

    name: str
    train: list[dict]
    heldout: list[dict]
    heldout_raw: list[dict]


def _sample(rows: list, n: int, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows if n <= 0 else rows[:n]


def _split(rows: list[dict], cfg: SFTDataConfig) -> tuple[list[dict], list[dict]]:
    """Seeded train/held-out split of one list (held-out first)."""
    rows = _sample(rows, 0, cfg.seed)
    heldout = rows[: cfg.num_heldout]
    rest = rows[cfg.num_heldout :]
    return (rest if cfg.num_train <= 0 else rest[: cfg.num_train]), heldout


def _chat(user: str, assistant: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}], **extra}


def hh_messages(text: str) -> list[dict]:
    """Splits an hh-rlhf transcript (``\\n\\nHuman: ...\\n\\nAssistant: ...``) into turns."""
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.strip())
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c.strip()} for r, c in zip(parts[1::2], parts[2::2], strict=True)]


def strip_docstrings(code: str) -> str:
    """The program without docstrings and comments (re-printed by ``ast.unparse``)."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def siqa_example(row: dict) -> dict:
    letter = "ABC"[int(row["label"]) - 1]
    prompt = (
        f"{row['context']}\nQuestion: {row['question']}\nA: {row['answerA']}\nB: {row['answerB']}\n"
        f"C: {row['answerC']}\nAnswer with A, B or C."
    )
    return _chat(prompt, letter, answer=letter)


def sst2_example(row: dict) -> dict:
    label = ("negative", "positive")[int(row["label"])]
    return _chat(f"Sentence: {row['sentence'].strip()}\nIs the sentiment positive or negative?", label, answer=label)


def gsm8k_example(row: dict) -> dict:
    worked = re.sub(r"<<[^>]*>>", "", row["answer"])  # drop the calculator annotations
    return _chat(row["question"], worked, answer=math_task.final_number(worked))


def tinygsm_example(row: dict) -> dict | None:
    try:
        return _chat(row["question"], strip_docstrings(row["code"]))
    except SyntaxError:
        return None


def _hub(path: str, split: str, n: int, seed: int, **kwargs: object) -> list[dict]:
    """``n`` seeded rows of a Hub data set split (all rows when ``n <= 0``)."""
    from datasets import load_dataset  # heavy import, only for Hub sources

    if kwargs.pop("streaming", False):
        stream = load_dataset(path, split=split, streaming=True, **kwargs).shuffle(seed=seed, buffer_size=10_000)
        return list(stream.take(n) if n > 0 else stream)
    ds = load_dataset(path, split=split, **kwargs).shuffle(seed=seed)
    return list(ds.select(range(min(n, len(ds))))) if n > 0 else list(ds)


def _two_splits(path: str, train: str, test: str, convert: Callable, cfg: SFTDataConfig, **kw: object) -> tuple:
    rows = [convert(r) for r in _hub(path, train, cfg.num_train, cfg.seed, **kw)]
    held = [convert(r) for r in _hub(path, test, cfg.num_heldout, cfg.seed, **kw)]
    return [r for r in rows if r], [r for r in held if r]


def _one_split(path: str, convert: Callable, cfg: SFTDataConfig, **kw: object) -> tuple:
    n = cfg.num_train + cfg.num_heldout if cfg.num_train > 0 else 0
    return _split([r for r in map(convert, _hub(path, "train", n, cfg.seed, **kw)) if r], cfg)


def _raw_splits(cfg: SFTDataConfig) -> tuple[list[dict], list[dict]]:
    """Train and held-out conversations of the configured source."""
    if cfg.name == "embedded_math":
        return math_task.make_splits(cfg.num_train, cfg.num_heldout, cfg.seed)
    if cfg.name == "jsonl":
        return _split(read_jsonl(cfg.path), cfg)
    if cfg.name == "anthropic_hh":
        return _two_splits("Anthropic/hh-rlhf", "train", "test", lambda r: {"messages": hh_messages(r["chosen"])}, cfg)
    if cfg.name == "tulu3":
        return _one_split("allenai/tulu-3-sft-mixture", lambda r: {"messages": r["messages"]}, cfg)
    if cfg.name == "tinygsm":
        train, held = _one_split("TinyGSM/TinyGSM", tinygsm_example, cfg, streaming=True)
        held = [{**ex, "answer": math_task.run_program(ex["messages"][-1]["content"])} for ex in held]
        return train, [ex for ex in held if ex["answer"] is not None]
    if cfg.name == "siqa":
        return _two_splits("lighteval/siqa", "train", "validation", siqa_example, cfg)
    if cfg.name == "sst2":
        return _two_splits("stanfordnlp/sst2", "train", "validation", sst2_example, cfg)
    return _two_splits("openai/gsm8k", "train", "test", gsm8k_example, cfg, name="main")


def prompt_of(example: dict) -> dict:
    """A held-out conversation as ``{"messages": prompt turns, "answer", "reference", ...}``."""
    turns = example["messages"]
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    extra = {k: v for k, v in example.items() if k != "messages"}
    return {"answer": turns[last]["content"], **extra, "messages": turns[:last], "reference": turns[last]["content"]}


def encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: list[dict], max_length: int
) -> tuple[list[dict], list[dict]]:
    """Encodes conversations, dropping those left with no assistant token after truncation.

    Returns:
        The encoded examples and the conversations they came from (same order and length).
    """
    pairs = [(encode_chat(tokenizer, ex["messages"], max_length), ex) for ex in examples]
    kept = [(enc, ex) for enc, ex in pairs if any(t != IGNORE_INDEX for t in enc["labels"])]
    if len(kept) < len(pairs):
        log.warning(
            "dropped %d of %d examples with no assistant token within max_length=%d",
            len(pairs) - len(kept),
            len(pairs),
            max_length,
        )
    return [enc for enc, _ in kept], [ex for _, ex in kept]


def load_sft_data(cfg: SFTDataConfig, tokenizer: PreTrainedTokenizerBase) -> SFTData:
    """Loads, splits and encodes the configured SFT data set.

    Raises:
        FileNotFoundError: ``name=jsonl`` and ``path`` is not a file.
        ValueError: a JSONL line is not in the documented format.
    """
    cfg = with_seed(cfg)
    train_raw, heldout_raw = _raw_splits(cfg)
    train, _ = encode_all(tokenizer, train_raw, cfg.max_length)
    if cfg.packing:
        train = pack(train, cfg.max_length, pad_id=tokenizer.pad_token_id or 0)
    heldout, heldout_raw = encode_all(tokenizer, heldout_raw, cfg.max_length)
    return SFTData(cfg.name, train, heldout, [prompt_of(ex) for ex in heldout_raw])


def label_match(completion: str, example: dict) -> bool:
    """Whether the completion's first word is the reference label (case-insensitive)."""
    match = re.match(r"\W*([A-Za-z]+)", completion)
    return bool(match) and match.group(1).lower() == str(example["answer"]).lower()


def score_fn(name: str) -> Callable[[str, dict], bool] | None:
    """The ID metric of a data set (``completion, heldout_raw item -> correct?``).

    Returns None for the chat data sets (jsonl, anthropic_hh, tulu3), whose ID measure is
    the held-out SFT loss.
    """
    scorers = {
        "embedded_math": math_task.score,
        "gsm8k": math_task.score,
        "tinygsm": math_task.score,
        "sst2": label_match,
        "siqa": label_match,
    }
    return scorers.get(name)
