"""One cell = one checkpoint x one SFT recipe: base probes -> SFT -> fine-tuned probes -> record.

Usage::

    python -m overtraining.run                                  # one cell on the embedded default
    python -m overtraining.run --cfg job                        # print the composed config
    python -m overtraining.run -m checkpoint=embedded/tokens_1M,embedded/tokens_4M lr=3e-4,1e-3
    python -m overtraining.run -m +experiment=demo              # a preset (conf/experiment/)
    python -m overtraining.run -m ... hydra/launcher=slurm      # one Slurm array job
    torchrun --nproc_per_node=4 -m overtraining.run trainer=deepspeed_zero2 model=hub \\
        checkpoint=pythia-160m/step143000 sft_data=tulu3        # one cell on 4 GPUs

Flow of a cell: resolve the checkpoint (pretraining the embedded trajectory first if it is
not on disk) -> load model + tokenizer -> SFT data -> base evaluation and geometry (cached
per checkpoint and eval config, so a sweep of N checkpoints x M LRs pays N of them) ->
fine-tune with trajectory probes -> fine-tuned evaluation, forgetting, representation drift
-> ``record.json`` in the run dir (and a W&B run). Re-running a sweep skips cells whose
record exists and resumes an interrupted one from its SFT state.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from overtraining.checkpoints import ResolvedCheckpoint, resolve
from overtraining.config import precheck_overrides, precheck_yaml, register_cell_schema
from overtraining.results import CellRecord, cell_id, provenance, read_record, write_record

log = logging.getLogger("overtraining.run")
CODE_VERSION = "cell-v1"  # bump when a change invalidates cached base evaluations


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def validate(cfg) -> None:  # noqa: ANN001 - CellConfig (built lazily)
    """Checks the inputs that would otherwise fail late; raises ValueError/FileNotFoundError."""
    if not cfg.lr > 0:
        raise ValueError(f"lr must be > 0, got {cfg.lr}: pass e.g. lr=1e-4")
    if cfg.sft_data.name == "jsonl" and not Path(cfg.sft_data.path).is_file():
        raise FileNotFoundError(f"SFT data file {cfg.sft_data.path!r} does not exist: set sft_data.path")
    if cfg.pretrain.corpus.source == "local" and not Path(cfg.pretrain.corpus.path).is_file():
        raise FileNotFoundError(f"corpus file {cfg.pretrain.corpus.path!r} does not exist: set pretrain.corpus.path")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output dir {run_dir} is not writable ({err.strerror}): set hydra.run.dir") from None


def ensure_checkpoint(cfg, ckpt: ResolvedCheckpoint) -> ResolvedCheckpoint:  # noqa: ANN001
    """Pretrains the embedded trajectory when the requested checkpoint is not on disk yet."""
    if not ckpt.embedded or (Path(ckpt.source) / "checkpoint.json").exists():
        return ckpt
    from overtraining.pretrain import train_trajectory

    print(f"checkpoint {ckpt.name} is not on disk: pretraining the embedded trajectory first")
    budget = Path(ckpt.source).name.removeprefix("tokens_").removesuffix("-cooldown")
    train_trajectory(cfg.pretrain, until=budget)
    if not (Path(ckpt.source) / "checkpoint.json").exists():
        raise FileNotFoundError(f"pretraining did not produce {ckpt.source}: is {ckpt.name} in pretrain.budgets?")
    return resolve(cfg.checkpoint, cfg.pretrain.resolved_out_dir())


def text_batches(tokenizer, text: str, num_batches: int, batch_size: int, seq_len: int) -> list[dict]:  # noqa: ANN001
    """Fixed evaluation batches from a text under the checkpoint's tokenizer."""
    from overtraining.training.lm_data import fixed_batches

    need = num_batches * batch_size * seq_len * 8  # characters; enough for any tokenizer here
    ids = np.asarray(tokenizer(text[: max(need, 4096)], add_special_tokens=False)["input_ids"], dtype=np.int64)
    return fixed_batches(ids, num_batches, batch_size, seq_len)


def evaluate(cfg, model, tokenizer, corpus, data) -> dict:  # noqa: ANN001
    """The eval group's measurements of one model (OOD suite, perplexity, ID, format probe)."""
    from overtraining.data.sft_data import score_fn
    from overtraining.evaluation.evaluate import evaluate_model

    return evaluate_model(
        model,
        tokenizer,
        cfg.eval,
        corpus,
        cfg.cache_dir,
        heldout=data.heldout,
        heldout_raw=data.heldout_raw,
        score_fn=score_fn(data.name),
    )


def base_measurements(cfg, model, tokenizer, ckpt, corpus, data, geo_batches, device) -> tuple[dict, bool]:  # noqa: ANN001
    """Base-model evaluation + geometry, from the cache when another cell already paid for it."""
    from dataclasses import asdict

    from overtraining.evaluation.cache import EVAL_CODE_VERSION, BaseEvalCache
    from overtraining.evaluation.embedded_tasks import TASKS_VERSION
    from overtraining.geometry.config import measure_checkpoint

    def compute() -> dict:
        t0 = time.time()
        out = evaluate(cfg, model, tokenizer, corpus, data)
        t1 = time.time()
        out |= measure_checkpoint(model, geo_batches, cfg.sharpness)
        return out | {"time/base_eval_s": t1 - t0, "time/base_geometry_s": time.time() - t1}

    key = {
        "checkpoint": ckpt.name,
        "source": ckpt.source,
        "revision": ckpt.revision,
        "tokens": ckpt.tokens,
        "eval": asdict(cfg.eval),
        "sharpness": asdict(cfg.sharpness),
        "sft_data": asdict(cfg.sft_data),
        "dtype": cfg.model.dtype,
        "device": device.type,
        "code": [CODE_VERSION, EVAL_CODE_VERSION, TASKS_VERSION],
    }
    return BaseEvalCache(Path(cfg.cache_dir) / "base_eval").get_or_compute(key, compute)


def run_cell(cfg, resolved: dict, run_dir: Path, group: str) -> CellRecord | None:  # noqa: ANN001
    """Runs one cell and writes its record; returns None when the cell was skipped."""
    validate(cfg)
    check_writable(run_dir)
    cid = cell_id(resolved)
    if _skip(run_dir, cid, cfg.launch):
        return None
    if cfg.launch.dry_run:
        print(f"would run cell {cid}: {cfg.checkpoint.family}/{cfg.checkpoint.revision} lr={cfg.lr} -> {run_dir}")
        return None
    t_start = time.time()
    ckpt = ensure_checkpoint(cfg, resolve(cfg.checkpoint, cfg.pretrain.resolved_out_dir()))
    record = CellRecord(
        cell_id=cid,
        status="failed",
        checkpoint=ckpt.name,
        tokens=ckpt.tokens,
        lr=cfg.lr,
        schedule=cfg.lr_schedule.name,
        sft_data=cfg.sft_data.name,
        seed=cfg.seed,
        config=resolved,
        provenance=provenance(),
    )
    record.config["pretrain_schedule"] = _pretrain_schedule(ckpt)
    try:
        _measure(cfg, ckpt, run_dir, group, record, t_start)
    except Exception as err:
        record.status = "failed"
        record.notes.append(f"{type(err).__name__}: {err}")
        if int(os.environ.get("RANK", "0")) == 0:
            write_record(record, run_dir)  # what was measured before the failure is kept
            (run_dir / "error.txt").write_text(traceback.format_exc())
        raise
    return record


def _measure(cfg, ckpt, run_dir: Path, group: str, record: CellRecord, t_start: float) -> None:  # noqa: ANN001
    from overtraining.data.corpus import build_embedded_corpus
    from overtraining.data.sft_data import load_sft_data
    from overtraining.evaluation.forgetting import forgetting
    from overtraining.evaluation.perplexity import hub_text, perplexity
    from overtraining.geometry.config import measure_checkpoint, measure_pair
    from overtraining.models import load_model, load_tokenizer
    from overtraining.tracking import NullSink, make_sink, run_id_for
    from overtraining.training.sft import finetune

    device = pick_device(cfg.trainer.device)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    tokenizer = load_tokenizer(ckpt, cfg.model.trust_remote_code)
    model = load_model(ckpt, cfg.model, device)
    data = load_sft_data(cfg.sft_data, tokenizer)
    corpus = build_embedded_corpus(cfg.cache_dir)
    g = cfg.sharpness
    geo_text = corpus.text(g.text) if g.text in corpus.splits else hub_text(g.text, cfg.cache_dir)
    geo_batches = text_batches(tokenizer, geo_text, g.num_batches, g.batch_size, g.seq_len)
    record.timings["setup_s"] = time.time() - t0

    t0 = time.time()
    rank0 = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 evaluates and writes
    base, hit = base_measurements(cfg, model, tokenizer, ckpt, corpus, data, geo_batches, device) if rank0 else ({}, 0)
    record.metrics |= {f"base/{k}": v for k, v in base.items()}
    record.notes.append("base evaluation: " + ("cache hit" if hit else "computed"))
    record.timings["base_s"] = time.time() - t0
    if cfg.trainer.max_steps == 0 and cfg.trainer.epochs == 0:  # a probe-only cell: no SFT
        record.status = "completed"
        record.notes.append("probe-only cell (trainer.max_steps=0): base measurements only")
        _finish(record, run_dir, NullSink(), t_start)
        return

    sink = (
        make_sink(
            cfg.logger,
            {**record.config, "tokens": record.tokens, "checkpoint_name": record.checkpoint},
            group=group,
            run_id=run_id_for(f"{group}/{record.cell_id}"),
            name=f"{ckpt.name} lr={cfg.lr:g}",
            run_dir=run_dir,
        )
        if rank0
        else NullSink()
    )
    probe_text = corpus.text("ood_prose")[:40_000]

    def probe(m) -> dict:  # noqa: ANN001 - the cheap OOD proxy along the SFT trajectory
        return {
            "ppl/ood_prose": perplexity(m, tokenizer, probe_text, seq_len=g.seq_len, max_tokens=8192, batch_size=8)[
                "ppl"
            ]
        }

    base_model = copy.deepcopy(model) if _needs_pair(cfg) else None
    t0 = time.time()
    outcome = finetune(
        model,
        tokenizer,
        data,
        cfg.lr,
        cfg.lr_schedule,
        cfg.trainer,
        run_dir / "sft",
        probe=probe,
        on_step=lambda row: sink.log(row, step=row.get("step")),
    )
    record.timings["sft_s"] = time.time() - t0
    if not rank0:
        return
    record.curves = {"sft": outcome.history, "probes": outcome.probes}
    record.metrics |= {
        "sft/steps": outcome.steps,
        "sft/tokens": outcome.tokens,
        "sft/target_reached_step": outcome.target_reached_step,
        "sft/resumed_from": outcome.resumed_from,
        "sft/final_loss": _last(outcome.history),
    }
    if outcome.resumed_from:
        record.notes.append(f"SFT resumed from step {outcome.resumed_from}")
    if outcome.diverged:
        record.status = "diverged"
        record.notes.append(f"SFT diverged at step {outcome.diverged_step}")
        record.metrics["sft/diverged_step"] = outcome.diverged_step
        _finish(record, run_dir, sink, t_start)
        return

    t0 = time.time()
    ft = evaluate(cfg, outcome.model, tokenizer, corpus, data)
    if g.on_finetuned:
        ft |= measure_checkpoint(outcome.model, geo_batches, g)
    record.metrics |= {f"ft/{k}": v for k, v in ft.items()}
    record.metrics |= forgetting(base, ft)
    record.timings["ft_eval_s"] = time.time() - t0
    if base_model is not None:
        t0 = time.time()
        pair = measure_pair(base_model, outcome.model, geo_batches, g)
        alphas, losses = pair.pop("landscape/alphas", None), pair.pop("landscape/losses", None)
        if alphas is not None:
            record.curves["landscape"] = [{"alpha": a, "loss": v} for a, v in zip(alphas, losses, strict=True)]
        record.metrics |= {k: v for k, v in pair.items() if not isinstance(v, list)}
        record.timings["pair_s"] = time.time() - t0
    record.status = outcome.status
    if cfg.trainer.keep_model:
        outcome.model.save_pretrained(run_dir / "model")
        tokenizer.save_pretrained(run_dir / "model")
    _finish(record, run_dir, sink, t_start)


def _finish(record: CellRecord, run_dir: Path, sink, t_start: float) -> None:  # noqa: ANN001
    record.timings["total_s"] = time.time() - t_start
    path = write_record(record, run_dir)
    sink.summary({k: v for k, v in record.metrics.items() if isinstance(v, (int, float))})
    sink.finish()
    print(f"[{record.status}] {record.checkpoint} lr={record.lr:g}: record written to {path}")


def _needs_pair(cfg) -> bool:  # noqa: ANN001
    return bool(cfg.sharpness.drift_layers) or bool(cfg.sharpness.landscape_alphas)


def _last(history: list[dict]) -> float | None:
    return history[-1]["loss"] if history else None


def _pretrain_schedule(ckpt: ResolvedCheckpoint) -> str:
    """The schedule a local checkpoint was pretrained with (``constant+cooldown`` for branches)."""
    meta = Path(ckpt.source) / "checkpoint.json"
    if not ckpt.local or not meta.exists():
        return "hub"
    import json

    m = json.loads(meta.read_text())
    return m["schedule"] + ("+cooldown" if m.get("branch") == "cooldown" else "")


def _skip(run_dir: Path, cid: str, launch) -> bool:  # noqa: ANN001
    """True when this cell already has a finished record (idempotent sweeps)."""
    path = run_dir / "record.json"
    if not path.exists() or not launch.skip_done:
        return False
    rec = read_record(path)
    if rec.cell_id != cid:
        print(f"{run_dir} holds another cell's record ({rec.cell_id} != {cid}); running this one")
        return False
    if rec.status in ("failed", "diverged") and launch.rerun_failed:
        import shutil

        shutil.rmtree(run_dir / "sft", ignore_errors=True)  # else SFT would resume into the same failure
        return False
    print(f"skip: cell {cid} is done ({rec.status}): {path}")
    return True


def main() -> None:
    """``python -m overtraining.run``: checks the command line, then hands over to Hydra."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    precheck_yaml()
    precheck_overrides(sys.argv[1:])
    register_cell_schema()

    @hydra.main(
        config_path=str(Path(__file__).resolve().parent.parent / "conf"), config_name="config", version_base="1.3"
    )
    def _cell(dcfg) -> None:  # noqa: ANN001
        hc = HydraConfig.get()
        resolved = OmegaConf.to_container(dcfg, resolve=True)
        try:
            cfg = OmegaConf.to_object(dcfg)
            validate(cfg)
        except (ValueError, FileNotFoundError) as err:
            raise SystemExit(f"error: {err}") from None
        run_dir = Path(hc.runtime.output_dir)  # shared by all ranks (pass hydra.run.dir under torchrun)
        multirun = hc.mode.name == "MULTIRUN"
        try:
            run_cell(cfg, resolved, run_dir, group=dcfg.get("sweep_name") or "single")
        except (ValueError, FileNotFoundError, PermissionError) as err:
            if multirun:
                print(f"error in cell {run_dir}: {err}", file=sys.stderr)
                return
            raise SystemExit(f"error: {err}") from None
        except Exception as err:
            if not multirun:
                raise
            print(
                f"cell {run_dir} failed: {type(err).__name__}: {err} (see error.txt; the sweep goes on)",
                file=sys.stderr,
            )

    _cell()


if __name__ == "__main__":
    main()
