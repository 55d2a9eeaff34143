"""Checks of a cell's files before any model code loads (torch-free).

``check_cell`` runs after the schema checks of ``overtraining.config``: it resolves the
checkpoint (names only, against the repo's branch list), reads a local checkpoint's
``config.json`` and safetensors headers (a truncated or corrupt weight file is refused here,
not after a minute of setup), reads and checks an SFT JSONL file, and checks that the output
dir is writable. Every failure is a ``ConfigError`` / ``FileNotFoundError`` /
``PermissionError`` with a one-line message naming the key and the fix.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from overtraining.checkpoints import UnknownCheckpointError, check_hub_revision, resolve
from overtraining.config import CellConfig, ConfigError
from overtraining.data.jsonl import read_jsonl


def check_cell(cfg: CellConfig, run_dir: Path | None = None) -> None:
    """Every file-system check of one cell; raises with a one-line message naming the fix."""
    if run_dir is not None:
        check_writable(run_dir, "hydra.run.dir (or hydra.sweep.dir)")
    if cfg.sft_data.name == "jsonl":
        read_jsonl(cfg.sft_data.path)
    cfg.pretrain.validate()
    local = Path(cfg.checkpoint.path)
    if cfg.checkpoint.family == "local" and (local / "config.json").exists():
        check_local_checkpoint(local)  # before resolving: a broken config.json is the first problem
    try:
        ckpt = resolve(cfg.checkpoint, cfg.pretrain.resolved_out_dir(), cfg.cache_dir)
    except UnknownCheckpointError as err:
        raise ConfigError(str(err)) from None
    if ckpt.embedded and (Path(ckpt.source) / "config.json").exists():
        check_local_checkpoint(Path(ckpt.source))
    elif not ckpt.local:
        check_hub_revision(ckpt.source, ckpt.revision)


def check_writable(path: Path, key: str) -> None:
    """``path`` can be created and written: a probe dir is made (and removed) in its nearest
    existing ancestor. Nothing is left behind (``--cfg job`` creates no output dir)."""
    import tempfile

    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=probe))
    except OSError as err:
        raise PermissionError(
            f"output dir {path} is not writable ({err.strerror} in {probe}): point {key} elsewhere"
        ) from None


def check_local_checkpoint(path: Path) -> None:
    """A local checkpoint dir: ``config.json`` parses and every weight file's header is sound.

    Raises:
        ConfigError: naming the file and what is wrong with it.
    """
    cfg_file = path / "config.json"
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"checkpoint.path={path}: config.json is unreadable ({type(err).__name__}): re-save it with save_pretrained"
        ) from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(f"checkpoint {path}: config.json names no model_type: re-save it with save_pretrained")
    weights = sorted(path.glob("*.safetensors"))
    if not weights and not list(path.glob("pytorch_model*.bin")):
        raise ConfigError(f"checkpoint {path} has no weight files (*.safetensors): re-save it with save_pretrained")
    for file in weights:
        check_safetensors(file)


def check_safetensors(file: Path) -> int:
    """Reads a safetensors header and checks the file holds every tensor it declares.

    Returns:
        The number of tensors.

    Raises:
        ConfigError: a truncated file, a bad header or tensors beyond the end of the file.
    """
    size = file.stat().st_size
    bad = f"checkpoint weights {file} are corrupt"
    with open(file, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ConfigError(f"{bad} (shorter than a header): re-save or re-download them")
        (n,) = struct.unpack("<Q", raw)
        if n > min(size - 8, 100_000_000):
            raise ConfigError(f"{bad} (header length {n} exceeds the file): re-save or re-download them")
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{bad} (header is not JSON): re-save or re-download them") from None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) > size:
        raise ConfigError(f"{bad} (truncated: tensors end past the file): re-save or re-download them")
    return len(ends)
