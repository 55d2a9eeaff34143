"""W&B sinks offline: what a cell logs lands in the run's files; NullSink writes nothing."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from overtraining.tracking import (
    LoggerConfig,
    NullSink,
    WandbSink,
    make_sink,
    resolve_mode,
    run_id_for,
    upload_report,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "logger"


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """W&B offline, with its config/cache dirs inside ``tmp_path`` and no key."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    return tmp_path


def wandb_records(run_file: Path) -> Iterator[tuple[str, object]]:
    """Decodes a ``run-<id>.wandb`` file (LevelDB-style log of protobuf records).

    Layout: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    raw, block, pos, buf = run_file.read_bytes(), 32768, 7, b""
    assert raw[:4] == b":W&B"
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        buf, pos = buf + raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record.WhichOneof("record_type"), record


def _items(items) -> dict:  # repeated protobuf items
    """Protobuf key/value items as a dict; media arrive as ``nested_key`` paths (key, field)."""
    out: dict = {}
    for i in items:
        *parents, leaf = [i.key] if i.key else list(i.nested_key)
        node = out
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = json.loads(i.value_json)
    return out


def read_run(run_dir: Path) -> dict:
    """The run's id, group, config, logged history rows and summary, read back from its file."""
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    # wandb-core may still be flushing after finish() returns: wait for the exit record.
    deadline = time.monotonic() + 20
    while not any(kind == "exit" for kind, _ in wandb_records(run_file)) and time.monotonic() < deadline:
        time.sleep(0.2)
    out: dict = {"history": [], "summary": {}}
    for kind, r in wandb_records(run_file):
        if kind == "run":
            out |= {
                "id": r.run.run_id,
                "group": r.run.run_group,
                "project": r.run.project,
                "config": _items(r.run.config.update),
            }
        elif kind == "history":
            out["history"].append(_items(r.history.item))
        elif kind == "summary":
            out["summary"] |= _items(r.summary.update)
    return out


def test_wandb_sink_writes_an_offline_run(offline_env: Path) -> None:
    run_dir = offline_env / "cell"
    sink = make_sink(
        LoggerConfig(),
        {"lr": 1e-4, "seed": 0, "tokens": 4_000_000},
        group="sweep-a",
        run_id="0123abcd4567",
        name="tokens_4M lr=1e-4",
        run_dir=run_dir,
    )
    assert isinstance(sink, WandbSink)
    for step in range(3):
        sink.log({"sft/loss": 2.0 - step, "ppl/ood_prose": 30.0 + step}, step=step)
    sink.summary({"forget/ppl/ood_prose": 4.5, "ft/id/accuracy": 0.75})
    sink.finish()
    run = read_run(run_dir)
    assert (run["id"], run["group"], run["project"]) == ("0123abcd4567", "sweep-a", "overtraining")
    assert run["config"]["tokens"] == 4_000_000 and run["config"]["lr"] == 1e-4
    assert [(h["_step"], h["sft/loss"]) for h in run["history"]] == [(0, 2.0), (1, 1.0), (2, 0.0)]
    assert run["summary"]["forget/ppl/ood_prose"] == 4.5 and run["summary"]["ft/id/accuracy"] == 0.75


def test_null_sink_writes_nothing(offline_env: Path) -> None:
    run_dir = offline_env / "cell"
    for cfg in (LoggerConfig(kind="none"), LoggerConfig(mode="disabled")):
        sink = make_sink(cfg, {}, group="g", run_id="x", name="x", run_dir=run_dir)
        assert isinstance(sink, NullSink)
        sink.log({"a": 1.0}, step=0)
        sink.summary({"a": 1.0})
        sink.finish()
    assert not run_dir.exists()


def test_report_upload_holds_figures_and_table(offline_env: Path, report_html: Path) -> None:
    out = report_html.parent
    cells = pd.read_parquet(out / "cells.parquet")
    figs = {p.stem: p for p in sorted(out.glob("*.png"))[:2]}
    wandb_dir = offline_env / "upload"
    groups = pd.read_csv(out / "groups.csv")
    tables = {"groups": groups, "findings": pd.read_csv(out / "findings.csv")}
    run_dir = upload_report(LoggerConfig(dir=str(wandb_dir)), cells, figs, report_html, "sweep-a", ["/a"], tables)
    assert run_dir is not None and run_dir.is_dir()
    run = read_run(wandb_dir)
    (row,) = run["history"]
    assert {"cells", "groups", "findings", "report", *(f"figures/{n}" for n in figs)} <= set(row)
    assert (row["groups"]["nrows"], row["groups"]["ncols"]) == groups.shape
    assert (row["cells"]["_type"], row["cells"]["nrows"], row["cells"]["ncols"]) == ("table-file", *cells.shape)
    assert row["report"]["_type"] == "html-file" and row["figures/drift"]["_type"] == "image-file"
    assert run["id"].startswith("report-") and run["group"] == "sweep-a"


@pytest.mark.parametrize(
    ("mode", "env", "expected"),
    [
        ("auto", {}, "offline"),
        ("auto", {"WANDB_API_KEY": "k"}, "online"),
        ("auto", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, "disabled"),
        ("offline", {"WANDB_API_KEY": "k"}, "offline"),
        ("online", {}, "online"),
    ],
)
def test_resolve_mode(mode: str, env: dict, expected: str) -> None:
    assert resolve_mode(mode, env) == expected


def test_run_ids_are_deterministic_and_valid() -> None:
    assert run_id_for("0123abcd4567") == "0123abcd4567"
    assert run_id_for("a/b c") == run_id_for("a/b c") != run_id_for("a/b d")
    assert len(run_id_for("x" * 200)) == 16


def test_bad_mode_is_refused_with_the_options() -> None:
    with pytest.raises(ValueError, match="unknown logger.mode 'ofline' \(did you mean 'offline'\?\)"):
        LoggerConfig(mode="ofline")


@pytest.mark.parametrize("name", ["wandb", "none"])
def test_logger_yaml_has_only_logger_config_keys(name: str) -> None:
    text = (CONF / f"{name}.yaml").read_text()
    assert text.startswith("# python -m overtraining.run logger=")
    LoggerConfig(**yaml.safe_load(text))
