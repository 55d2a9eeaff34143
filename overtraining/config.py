"""Typed config schemas and the Hydra glue of the entry points.

Every config group is backed by a dataclass registered in Hydra's ConfigStore, so an
unknown key or a wrong type fails when Hydra composes the config, before any work. The
entry points convert the DictConfig once (``OmegaConf.to_object``) and pass dataclasses
down; nothing below them sees a DictConfig.

Groups mirror modules: ``model`` -> overtraining/models.py, ``checkpoint`` ->
overtraining/checkpoints.py, ``sft_data`` -> overtraining/data/sft_data.py, ``lr_schedule``
-> overtraining/training/schedules.py, ``trainer`` -> overtraining/training/sft.py, ``eval``
-> overtraining/evaluation/config.py, ``sharpness`` -> overtraining/geometry/config.py,
``logger`` -> overtraining/tracking.py.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore

from overtraining.checkpoints import CheckpointConfig, UnknownCheckpointError, check_option, register_options
from overtraining.data.sft_data import SFTDataConfig
from overtraining.evaluation.config import EvalConfig
from overtraining.geometry.config import GeometryConfig
from overtraining.models import ModelConfig
from overtraining.pretrain import PretrainConfig
from overtraining.tracking import LoggerConfig
from overtraining.training.schedules import LRScheduleConfig
from overtraining.training.sft import TrainerConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class LaunchConfig:
    """How a sweep runs its cells (not part of a cell's identity)."""

    skip_done: bool = True  # a cell whose record exists is not run again
    rerun_failed: bool = False  # rerun cells whose record says failed/diverged
    dry_run: bool = False  # only list the cells that would run


@dataclass
class CellConfig:
    """One cell: one checkpoint x one SFT recipe (``python -m overtraining.run``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sft_data: SFTDataConfig = field(default_factory=SFTDataConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sharpness: GeometryConfig = field(default_factory=GeometryConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    lr: float = 1e-3
    seed: int = 0
    cache_dir: str = ".cache/overtraining"
    experiment: str = ""  # set by experiment presets, for the report
    sweep_name: str = "default"  # names multirun/<sweep_name>/ and the W&B group


_REGISTERED: set[str] = set()


def register_schemas() -> None:
    """Registers the schema of every group and the checkpoint options (idempotent)."""
    if "base" in _REGISTERED:
        return
    _REGISTERED.add("base")
    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="lr_schedule", name="lr_schedule_schema", node=LRScheduleConfig)
    register_options(cs)


def short_dirname(name: str, limit: int = 120) -> str:
    """A sweep subdir from Hydra's override_dirname, shortened with a hash when too long."""
    import hashlib

    if len(name) <= limit:
        return name
    return f"{name[: limit - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def register_cell_schema() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("short_dirname"):
        OmegaConf.register_new_resolver("short_dirname", short_dirname)
    register_schemas()
    cs = ConfigStore.instance()
    for group, node in (
        ("eval", EvalConfig),
        ("sft_data", SFTDataConfig),
        ("trainer", TrainerConfig),
        ("sharpness", GeometryConfig),
        ("logger", LoggerConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=node)
    ConfigStore.instance().store(name="cell_schema", node=CellConfig)


def precheck_yaml(conf_dir: Path = CONF_DIR) -> None:
    """Parses every YAML of the config tree, so broken YAML fails in one line, naming the file."""
    for path in sorted(conf_dir.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise SystemExit(f"error: broken YAML at {where}: {problem} -- fix the file's syntax") from None


def precheck_overrides(argv: list[str]) -> None:
    """Checks command-line ``checkpoint=`` and ``lr=`` values before Hydra composes anything.

    Raises:
        SystemExit: with a one-line message naming the fix.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or "(" in value:
            continue
        values = [v.strip() for v in value.split(",")]
        try:
            if key in ("hydra.run.dir", "hydra.sweep.dir") and "$" not in value:
                _check_writable(Path(value))
            if key == "checkpoint":
                for v in values:
                    check_option(v)
            elif (CONF_DIR / key.lstrip("+~")).is_dir() and "/" not in key:
                for v in values:
                    _check_group_option(key.lstrip("+~"), v)
            if key == "lr":
                for v in values:
                    if float(v) <= 0:
                        raise ValueError(f"lr must be > 0, got {v}: pass e.g. lr=1e-4")
        except (UnknownCheckpointError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(
            f"output dir {path} is not writable ({err.strerror}): point hydra.run.dir (or hydra.sweep.dir) elsewhere"
        ) from None


def _check_group_option(group: str, option: str) -> None:
    names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    if option not in names and option != "null":
        raise ValueError(f"unknown {group} option {option!r}{suggest(option, names)}; options: {', '.join(names)}")


def hydra_pretrain_main(task: Callable[[PretrainConfig], object]) -> None:
    """Runs ``task`` under ``@hydra.main`` with the ``pretrain`` primary config."""
    import hydra
    from omegaconf import OmegaConf

    register_schemas()
    precheck_yaml()

    @hydra.main(config_path=str(CONF_DIR), config_name="pretrain", version_base="1.3")
    def _main(cfg) -> None:  # noqa: ANN001
        typed = OmegaConf.to_object(cfg)
        paths = task(typed)
        for p in paths or []:
            print(p)

    _main()


def suggest(name: str, options: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest option, or ''."""
    near = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def exit_on(err: Exception) -> None:
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2)
