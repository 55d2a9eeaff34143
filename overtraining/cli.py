"""The command line of the entry points: Hydra glue and refusing bad input fast.

``python -m overtraining.run ...`` passes through ``check_command_line`` before torch is
imported: every YAML of ``conf/`` parses, every cell of the (multi)run composes against the
typed schemas of ``overtraining.config`` (unknown keys, wrong types, unknown options, ranges)
and passes the file checks of ``overtraining.preflight``. A single run with a bad value
exits 2 with one line naming the key and the fix; in a multirun the bad cells are reported
in one line each and skipped, and the other cells run.
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from overtraining.checkpoints import UnknownCheckpointError, check_option, checkpoint_names, register_options
from overtraining.config import (
    CellConfig,
    ConfigError,
    EvalConfig,
    GeometryConfig,
    LoggerConfig,
    LRScheduleConfig,
    MitigationConfig,
    ModelConfig,
    PretrainConfig,
    SFTDataConfig,
    TrainerConfig,
    suggest,
)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Command-line flags of Hydra that take no ``key=value`` and need no composition check.
_INFO_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--version", "--shell-completion", "-sc")
_REGISTERED: set[str] = set()


class CommandLineError(Exception):
    """A command line that cannot run; ``str(err)`` is the one-line message."""


def register_schemas(argv: list[str] | None = None) -> None:
    """Registers every group's schema and the checkpoint options in Hydra's ConfigStore (idempotent).

    Args:
        argv: the command line; the checkpoints it names (and those of ``conf/``) become
            options of the ``checkpoint`` group.
    """
    if _REGISTERED:
        return
    _REGISTERED.add("cell")
    from hydra.core.config_store import ConfigStore

    if not OmegaConf.has_resolver("short_dirname"):
        OmegaConf.register_new_resolver("short_dirname", short_dirname)
    cs = ConfigStore.instance()
    cs.store(name="pretrain_schema", node=PretrainConfig)
    cs.store(name="cell_schema", node=CellConfig)
    for group, node in (
        ("model", ModelConfig),
        ("lr_schedule", LRScheduleConfig),
        ("eval", EvalConfig),
        ("sft_data", SFTDataConfig),
        ("trainer", TrainerConfig),
        ("sharpness", GeometryConfig),
        ("logger", LoggerConfig),
        ("mitigation", MitigationConfig),
    ):
        cs.store(group=group, name=f"{group}_schema", node=node)
    text = " ".join(sys.argv[1:] if argv is None else argv)
    text += " ".join(p.read_text() for p in CONF_DIR.rglob("*.yaml"))
    register_options(cs, checkpoint_names(text))


def short_dirname(name: str, limit: int = 120) -> str:
    """A sweep subdir from Hydra's override_dirname, shortened with a hash when too long."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def precheck_yaml(conf_dir: Path = CONF_DIR) -> None:
    """Parses every YAML of the config tree, so broken YAML fails in one line, naming the file."""
    for path in sorted(conf_dir.rglob("*.yaml")):
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise CommandLineError(f"broken YAML at {where}: {problem} -- fix the file's syntax") from None


@dataclass
class CheckedCell:
    """One cell of a command line: its overrides, and the typed config or why it cannot run."""

    overrides: list[str]
    config: CellConfig | None = None
    error: str = ""


@dataclass
class CheckedCommandLine:
    """The cells of a (multi)run command line after every check that needs no model."""

    multirun: bool
    cells: list[CheckedCell] = field(default_factory=list)

    @property
    def bad(self) -> list[CheckedCell]:
        return [c for c in self.cells if c.error]


def check_command_line(argv: list[str], config_name: str = "config") -> CheckedCommandLine:
    """Composes and checks every cell of ``argv`` (no torch, no model).

    Raises:
        CommandLineError: a problem common to all cells (broken YAML, a bad sweep syntax),
            or a single run whose cell is bad.
    """
    precheck_yaml()
    register_schemas(argv)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = _overrides_only(argv)
    _precheck_values(overrides)
    result = CheckedCommandLine(multirun=multirun)
    for cell_overrides in _expand(overrides, config_name) if multirun else [overrides]:
        result.cells.append(_check_cell(cell_overrides, config_name, multirun))
    if not multirun and result.bad:
        raise CommandLineError(result.bad[0].error)
    return result


# Hydra's flags that take a value (``--cfg job``), whose value is not an override.
_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")  # fmt: skip


def _overrides_only(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line, without Hydra's flags and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _VALUE_FLAGS
        else:
            out.append(arg)
    return out


def _precheck_values(overrides: list[str]) -> None:
    """Checks ``checkpoint=`` and group options by name, before composition (better messages)."""
    cache_dir = next((a.partition("=")[2] for a in overrides if a.lstrip("+").startswith("cache_dir=")), None)
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if not sep or "(" in value or "$" in value:
            continue
        values = [v.strip() for v in value.split(",")]
        group = key.lstrip("+~")
        try:
            if group == "checkpoint":
                for v in values:
                    check_option(v, cache_dir)
            elif "/" not in group and (CONF_DIR / group).is_dir():
                names = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
                for v in values:
                    if v not in names and v != "null":
                        raise ConfigError(f"unknown {group} option {v!r}{suggest(v, names)}: choose {', '.join(names)}")
        except (UnknownCheckpointError, ConfigError) as err:
            raise CommandLineError(str(err)) from None


def _compose(overrides: list[str], config_name: str, hydra_config: bool = False):  # -> DictConfig
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra_config)


def _expand(overrides: list[str], config_name: str) -> list[list[str]]:
    """The cells of a multirun: command-line sweeps x the preset's ``hydra.sweeper.params``."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except Exception as err:  # hydra's OverrideParseException and friends
        raise CommandLineError(f"cannot parse the command line: {_one_line(err)}") from None
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        hcfg = _compose(fixed, config_name, hydra_config=True)
    except Exception as err:
        raise CommandLineError(_one_line(err)) from None
    params = OmegaConf.select(hcfg, "hydra.sweeper.params") or {}
    given = {o.key_or_group for o in parsed}
    extra = [f"{k}={v}" for k, v in params.items() if k not in given]
    every = parser.parse_overrides(overrides + extra)
    return [list(cell) for batch in BasicSweeper.split_arguments(every, None) for cell in batch]


def _check_cell(overrides: list[str], config_name: str, multirun: bool) -> CheckedCell:
    from overtraining.preflight import check_cell

    cell = CheckedCell(overrides=overrides)
    try:
        dcfg = _compose(overrides, config_name, hydra_config=True)
        run_dir = Path(dcfg.hydra.sweep.dir if multirun else dcfg.hydra.run.dir)
        if "${" in str(run_dir):
            run_dir = None
        OmegaConf.set_struct(dcfg, False)
        dcfg.pop("hydra")
        cell.config = OmegaConf.to_object(dcfg)
        check_cell(cell.config, run_dir)
    except Exception as err:  # composition, validation and file checks alike
        cell.error = _one_line(err)
    return cell


def _one_line(err: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line errors reduced to one line naming the key and the fix."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    if isinstance(err, (ConfigError, UnknownCheckpointError, FileNotFoundError, PermissionError)):
        return str(err)
    chain, cause = [err], err
    while (cause := cause.__cause__ or cause.__context__) is not None and len(chain) < 10:
        chain.append(cause)
    for cause in chain:
        if isinstance(cause, (ConfigError, UnknownCheckpointError)):
            return str(cause)
        key = getattr(cause, "full_key", None)
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
            hint = suggest(key, _config_keys())
            return f"unknown key {key!r}{hint}: fix the spelling (python -m overtraining.run --cfg job lists every key)"
        if isinstance(cause, ValidationError) and key:
            m = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", str(cause))
            if m:
                example = OmegaConf.select(_defaults(), key, default=None)
                fix = f": pass e.g. {key}={example}" if example is not None else ""
                return f"{key}={m.group(1)} is not of type {m.group(3).lower()}{fix}"
            return f"{key}: {str(cause).splitlines()[0]}"
    text = str(err).strip()
    m = re.search(r"Could not append to config. An item is already at '([^']+)'", text)
    if m:
        return f"key {m.group(1)!r} exists already: drop the leading + (write {m.group(1)}=...)"
    m = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if m:
        names = sorted(p.stem for p in (CONF_DIR / m.group(1)).glob("*.yaml"))
        return f"unknown {m.group(1)} option {m.group(2)!r}{suggest(m.group(2), names)}: choose {', '.join(names)}"
    lines = [ln for ln in text.splitlines() if ln.strip() and "HYDRA_FULL_ERROR" not in ln]
    return " ".join(ln.strip() for ln in lines[:2]) or type(err).__name__


def _defaults():  # -> DictConfig of CellConfig's defaults
    return OmegaConf.structured(CellConfig)


def _config_keys() -> list[str]:
    """Every dotted key of a cell's config (for "did you mean")."""
    keys: list[str] = []

    def walk(node, prefix: str) -> None:  # node: a DictConfig
        for k in node:
            path = f"{prefix}{k}"
            keys.append(path)
            child = node._get_node(k)
            if OmegaConf.is_dict(child):
                walk(child, f"{path}.")

    walk(_defaults(), "")
    return keys


def exit_with(message: str) -> None:
    """Prints ``error: <message>`` to stderr and exits 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def hydra_pretrain_main(task) -> None:  # task: Callable[[PretrainConfig], list[Path]]
    """Runs ``task`` under ``@hydra.main`` with the ``pretrain`` primary config."""
    import hydra

    try:
        precheck_yaml()
    except CommandLineError as err:
        exit_with(str(err))
    register_schemas()

    @hydra.main(config_path=str(CONF_DIR), config_name="pretrain", version_base="1.3")
    def _main(cfg) -> None:  # a DictConfig
        try:
            typed = OmegaConf.to_object(cfg)
            typed.validate()
        except (ConfigError, FileNotFoundError) as err:
            exit_with(str(err))
        quiet_libraries()
        for p in task(typed) or []:
            print(p)

    _main()


class _ConsoleFilter:
    """Lets through the project's own log lines, the launchers' (Hydra's sweep lines, submitit's
    requeue messages in Slurm logs) and anyone's errors; the rest goes to the log file."""

    def filter(self, record) -> bool:  # a logging.LogRecord
        ours = record.name.startswith(("overtraining", "__main__", "hydra", "HYDRA", "submitit"))
        return ours or record.levelno >= 40


def quiet_libraries(run_dir: Path | None = None) -> None:
    """Keeps library chatter off the console; it stays in the run's log file (Hydra's ``<job>.log``).

    Call before importing transformers or DeepSpeed, after the command line was checked
    (it imports torch): the environment switches (progress bars of weight loading, advisory
    warnings) are read at their import.
    """
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    if not any(Path("/dev").glob("nvidia[0-9]*")):  # no NVIDIA GPU: spare DeepSpeed's detection warning
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the log file
    root = logging.getLogger()
    if not any(isinstance(h, logging.FileHandler) for h in root.handlers) and run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "cell.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    for handler in root.handlers:
        if type(handler) is logging.StreamHandler:
            handler.addFilter(_ConsoleFilter())
    import torch  # noqa: F401  (torch installs its own console handler at import; filter it before
    # peft/torchao import and log their notices through it)

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for lib in loggers:
        for handler in getattr(lib, "handlers", []):  # libraries that bring their own console handler
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_ConsoleFilter())
