"""Every config group option composes against its schema; bad input fails early, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from overtraining.checkpoints import register_options
from overtraining.cli import CONF_DIR, CommandLineError, precheck_yaml, register_schemas
from tests.conftest import run_module

GROUPS = ["model", "sft_data", "lr_schedule", "trainer", "eval", "sharpness", "logger"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(cfg)


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    assert getattr(cfg, group) is not None


@pytest.mark.parametrize(
    "option",
    [
        "embedded/tokens_250K-cooldown",
        "pythia-70m/step1000",
        "pythia-1.4b-deduped/step0",
        "olmo-1b/step20000",
        "olmo-1b/step20000-tokens83B",
        "olmo-2-1b/step140000",
        "amber/ckpt_100",
    ],
)
def test_checkpoint_options_compose(option):
    from hydra.core.config_store import ConfigStore

    register_options(ConfigStore.instance(), [option])  # the CLI registers the names it is given
    cfg = _compose([f"checkpoint={option}"])
    assert f"{cfg.checkpoint.family}/{cfg.checkpoint.revision}" == option


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = _compose([f"+experiment={experiment}"])
    assert cfg.lr > 0


def test_typo_and_wrong_type_fail_at_compose():
    with pytest.raises(Exception, match="lrr"):
        _compose(["lrr=1"])
    with pytest.raises(Exception, match="max_stepz"):
        _compose(["trainer.max_stepz=5"])
    with pytest.raises(Exception, match="trainer.max_steps"):
        _compose(["trainer.max_steps=lots"])


def test_broken_yaml_is_one_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(CommandLineError, match=r"broken YAML at .*bad.yaml:\d+"):
        precheck_yaml(tmp_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["checkpoint=pythia-70m/step1001"], "did you mean pythia-70m/step1000"),
        (["lr=-1e-4"], "lr=-0.0001 must be in (0, 1]"),
        (["lr=0"], "lr=0.0 must be in (0, 1]"),
        (["sft_data=sst3"], "sst2"),
        (["sft_data=jsonl", "sft_data.path=/nonexistent/data.jsonl"], "not found"),
        (["hydra.run.dir=/proc/forbidden"], "not writable"),
    ],
)
def test_bad_input_fails_fast_with_the_fix(tmp_path, args, message):
    proc = run_module(
        "overtraining.run",
        *args,
        "logger=none",
        cwd=tmp_path,
        env={"OVERTRAINING_CACHE": str(tmp_path / "cache")},
        timeout=300,
    )
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (tmp_path / "cache" / "trajectories").exists()  # failed before any pretraining/model load


def test_cfg_job_and_help(tmp_path):
    proc = run_module("overtraining.run", "--cfg", "job", cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "lr: 0.001" in proc.stdout and "checkpoint:" in proc.stdout and "family: embedded" in proc.stdout
    helped = run_module("overtraining.run", "--help", cwd=tmp_path, timeout=300)
    assert helped.returncode == 0 and "== Config groups ==" in helped.stdout
    assert len(helped.stdout.splitlines()) < 400  # the thousands of checkpoint options are not listed
    assert Path(tmp_path / "outputs").exists() is False
