"""The embedded corpus: text every CPython install has, split by domain.

Built by code, deterministically, from the running interpreter's standard library:

* ``train``     -- stdlib Python source (non-test modules), the pretraining text;
* ``id_heldout``-- ~2% of those source files (chosen by a hash of their path), held out;
* ``ood_prose`` -- the English reference documentation in ``pydoc_data.topics``;
* ``ood_tests`` -- the stdlib test suite (``Lib/test``), code of another style
  (only where the interpreter ships it; Debian splits it into another package).

The corpus depends on the Python version; its manifest records the version and a SHA-256
of every split so that two machines can tell whether they pretrained on the same text.
Files are cached under ``<cache>/corpus/embedded-py<major.minor>/`` after the first build.

Other corpora: a local text/JSONL file (``local_corpus``) or a Hub data set
(``hub_corpus``, needs the internet).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from overtraining.config import SPLITS

_DOC_SEP = "\n\n"


@dataclass(frozen=True)
class Corpus:
    """Paths of the text splits of one corpus (UTF-8 files)."""

    root: Path
    splits: dict[str, Path]

    def text(self, split: str) -> str:
        """Returns the whole text of one split.

        Raises:
            KeyError: if the corpus has no such split (the message lists the ones it has).
        """
        if split not in self.splits:
            raise KeyError(f"corpus {self.root} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split].read_text(encoding="utf-8")


def _stdlib_sources() -> tuple[list[Path], list[Path]]:
    """Returns (module sources, test-suite sources) of the stdlib, sorted by relative path."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    modules, tests = [], []
    for path in sorted(lib.rglob("*.py"), key=lambda p: p.relative_to(lib).as_posix()):
        parts = path.relative_to(lib).parts
        if "site-packages" in parts or "dist-packages" in parts:
            continue
        (tests if ("test" in parts or "tests" in parts) else modules).append(path)
    return modules, tests


def _is_heldout(rel: str) -> bool:
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % 50 == 0


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _collect() -> dict[str, list[str]]:
    """Collects the documents of every split, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    modules, tests = _stdlib_sources()
    docs: dict[str, list[str]] = {s: [] for s in SPLITS}
    for path in modules:
        split = "id_heldout" if _is_heldout(path.relative_to(lib).as_posix()) else "train"
        docs[split].append(_read(path))
    docs["ood_tests"] = [_read(p) for p in tests]
    import pydoc_data.topics as topics

    docs["ood_prose"] = [topics.topics[k] for k in sorted(topics.topics)]
    return {k: v for k, v in docs.items() if v}


def build_embedded_corpus(cache_dir: str | os.PathLike) -> Corpus:
    """Builds (or reuses) the embedded corpus under ``cache_dir``.

    Args:
        cache_dir: the project's cache directory.

    Returns:
        The corpus; its files exist on disk.
    """
    root = Path(cache_dir) / "corpus" / f"embedded-py{sys.version_info.major}.{sys.version_info.minor}"
    manifest = root / "manifest.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        return Corpus(root, {s: root / f"{s}.txt" for s in meta["splits"]})
    root.mkdir(parents=True, exist_ok=True)
    meta = {"python": sys.version.split()[0], "splits": {}}
    for split, texts in _collect().items():
        text = _DOC_SEP.join(texts)
        tmp = root / f".{split}.txt.tmp{os.getpid()}"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(root / f"{split}.txt")
        meta["splits"][split] = {
            "documents": len(texts),
            "bytes": len(text.encode("utf-8")),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        }
    tmp = root / f".manifest.tmp{os.getpid()}"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(manifest)
    return Corpus(root, {s: root / f"{s}.txt" for s in meta["splits"]})


def local_corpus(path: str | os.PathLike, text_field: str = "text", heldout_every: int = 50) -> Corpus:
    """A corpus from one local ``.txt`` file or ``.jsonl`` file (one ``{text_field: ...}`` per line).

    Every ``heldout_every``-th document (blank-line separated for .txt) is held out as
    ``id_heldout``; the file has no OOD split of its own.

    Raises:
        FileNotFoundError: with the fix, if the file does not exist.
    """
    src = Path(path)
    if not src.is_file():
        raise FileNotFoundError(f"corpus file {src} does not exist: pass an existing .txt or .jsonl path")
    raw = src.read_text(encoding="utf-8")
    if src.suffix == ".jsonl":
        docs = [json.loads(line)[text_field] for line in raw.splitlines() if line.strip()]
    else:
        docs = [d for d in raw.split(_DOC_SEP) if d.strip()]
    root = src.parent / f".{src.stem}-splits"
    root.mkdir(exist_ok=True)
    out = {"train": [d for i, d in enumerate(docs) if i % heldout_every], "id_heldout": docs[::heldout_every]}
    for split, texts in out.items():
        (root / f"{split}.txt").write_text(_DOC_SEP.join(texts), encoding="utf-8")
    return Corpus(root, {s: root / f"{s}.txt" for s in out})


def hub_corpus(name: str, cache_dir: str | os.PathLike, config: str | None = None, max_docs: int = 100_000) -> Corpus:
    """A corpus from a Hugging Face Hub data set with a ``text`` column (needs the internet)."""
    import datasets

    ds = datasets.load_dataset(name, config, split="train", streaming=True)
    docs = [row["text"] for _, row in zip(range(max_docs), ds, strict=False)]
    root = Path(cache_dir) / "corpus" / name.replace("/", "--")
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.txt").write_text(_DOC_SEP.join(d for i, d in enumerate(docs) if i % 50), encoding="utf-8")
    (root / "id_heldout.txt").write_text(_DOC_SEP.join(docs[::50]), encoding="utf-8")
    return Corpus(root, {"train": root / "train.txt", "id_heldout": root / "id_heldout.txt"})
