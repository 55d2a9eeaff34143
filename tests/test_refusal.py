"""Bad input through the real CLI: exit 2, one line naming the key and the fix, no torch imported.

Each case runs ``python -m overtraining.run`` in a subprocess whose wrapper reports, at exit,
whether torch was imported: a refusal must come before any model code loads.
``benchmarks/bench_refusal.py`` times the same battery.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Runs the CLI and prints a marker saying whether torch got imported before it exited.
WRAPPER = (
    "import sys\n"
    "try:\n"
    "    from overtraining.run import main; main(sys.argv[1:])\n"
    "finally:\n"
    "    print('TORCH_IMPORTED=' + str('torch' in sys.modules), file=sys.stdout, flush=True)\n"
)


def make_files(root: Path) -> dict[str, Path]:
    """The bad files the battery points at: empty/broken JSONL, a corrupt checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.jsonl").write_text("\n")
    (root / "broken.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}\n')
    (root / "noanswer.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    ckpt = root / "corrupt_ckpt"
    ckpt.mkdir(exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (ckpt / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 100)  # truncated
    (ckpt / "checkpoint.json").write_text(json.dumps({"tokens": 1000}))
    garbage = root / "garbage_ckpt"
    garbage.mkdir(exist_ok=True)
    (garbage / "config.json").write_text("{not json")
    return {"dir": root}


# (arguments, a string the one-line message must contain: the key or the value it names)
BATTERY: list[tuple[list[str], str]] = [
    (["trainer.max_steps=-5"], "trainer.max_steps"),
    (["lr_schedule=wsd", "lr_schedule.decay_ratio=2"], "lr_schedule.decay_ratio"),
    (["lr_schedule.warmup_ratio=1.5"], "lr_schedule.warmup_ratio"),
    (["sharpness.kl_sigma=-1"], "sharpness.kl_sigma"),
    (["sharpness.num_batches=0"], "sharpness.num_batches"),
    (["sharpness.perturb_gammas=[0.1,-0.2]"], "sharpness.perturb_gammas"),
    (["foo=1"], "'foo'"),
    (["trainer.max_stps=3"], "trainer.max_steps"),  # the suggestion names the right key
    (["seed=-1.5"], "seed"),
    (["+seed=3"], "seed"),
    (["lr=-1"], "lr="),
    (["lr=abc"], "lr="),
    (["lr=5"], "lr="),
    (["checkpoint=pythia-70m/step1001"], "pythia-70m/step1000"),
    (["checkpoint=pythia-70m/step3000"], "step3000"),
    (["checkpoint=pythai-70m/step1000"], "pythia-70m"),
    (["checkpoint=olmo-1b/step20001"], "olmo-1b/step20000 (step20000-tokens83B"),  # nearest step of the branch list
    (["checkpoint=olmo-1b/step20000-tokens84B"], "step20000-tokens83B"),  # the original repo's name, not the -hf one
    (["checkpoint=olmo-2-7b/step5000"], "--online"),  # not in the partial seed: how to list the repo
    (["checkpoint=olmo-1b/step20000", "checkpoint.repo=org/copy"], "org/copy"),  # no branch list offline
    (["sft_data=sst3"], "sst2"),
    (["eval=embeded"], "embedded"),
    (["sft_data=jsonl", "sft_data.path=/nonexistent/data.jsonl"], "sft_data.path"),
    (["sft_data=jsonl", "sft_data.path={dir}/empty.jsonl"], "sft_data.path"),
    (["sft_data=jsonl", "sft_data.path={dir}/broken.jsonl"], "sft_data.path"),
    (["sft_data=jsonl", "sft_data.path={dir}/noanswer.jsonl"], "assistant turn"),
    (["checkpoint=local", "checkpoint.path={dir}/corrupt_ckpt"], "corrupt"),
    (["checkpoint=local", "checkpoint.path={dir}/garbage_ckpt"], "config.json"),
    (["checkpoint=local", "checkpoint.path=/nonexistent/ckpt"], "checkpoint.path"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["trainer=lora", "trainer.lora_r=0"], "trainer.lora_r"),
    (["trainer.deepspeed=zero5"], "trainer.deepspeed"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.loss_smoothing=1"], "trainer.loss_smoothing"),
    (["eval.limit=0"], "eval.limit"),
    (["model.dtype=fp8"], "model.dtype"),
    (["pretrain.budgets=[]"], "pretrain.budgets"),
    (["pretrain.budgets=[1M,lots]"], "lots"),
    (["hydra.run.dir=/proc/forbidden"], "hydra.run.dir"),
    (["mitigation=repaly"], "replay"),
    (["mitigation=l2", "trainer=lora"], "trainer.method=lora"),
    (["mitigation=ewc", "trainer=deepspeed_zero3"], "ZeRO-3"),
    (["mitigation=sam", "trainer=deepspeed_zero2"], "mitigation=sam"),
    (["mitigation=replay", "mitigation.strength=1"], "mitigation.strength"),
    (["mitigation=wise", "mitigation.alphas=[0,1.5]"], "mitigation.alphas"),
]


def run_cli(args: list[str], cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "OVERTRAINING_CACHE": str(cwd / "cache"), "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(("args", "names"), BATTERY, ids=[" ".join(a)[:60] for a, _ in BATTERY])
def test_bad_input_is_refused_in_one_line_before_torch(tmp_path, args, names):
    files = make_files(tmp_path / "files")
    proc = run_cli([a.format(dir=files["dir"]) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert "TORCH_IMPORTED=False" in proc.stdout  # refused before any model code loaded
    assert not (tmp_path / "cache" / "trajectories").exists()


def test_battery_is_large_enough():
    assert len(BATTERY) >= 25


def test_a_bad_cell_of_a_multirun_is_skipped_and_the_others_run(tmp_path):
    proc = run_cli(["-m", "lr=1e-3,-1,3e-3", "launch.dry_run=true", "sweep_name=t", "logger=none"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "error in cell [lr=-1" in proc.stderr and "lr=-1.0 must be in (0, 1]" in proc.stderr
    assert proc.stdout.count("would run cell") == 2


def test_all_cells_bad_exits_2(tmp_path):
    proc = run_cli(["-m", "lr=-1,-2", "logger=none"], cwd=tmp_path)
    assert proc.returncode == 2 and "all 2 cells are invalid" in proc.stderr
    assert "TORCH_IMPORTED=False" in proc.stdout
