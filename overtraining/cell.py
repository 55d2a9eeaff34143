"""One cell as a recipe: prepare -> measure the base -> fine-tune -> measure the change -> record.

``run_cell(cfg, run_dir)`` reads top to bottom; each step is a short function of the typed
``CellConfig`` and what the previous step returned:

1. ``prepare``: resolve the checkpoint (pretraining the embedded trajectory first if it is
   not on disk), load tokenizer, model, SFT data, corpus and the geometry batches;
2. ``measure_base``: the eval group's metrics and the sharpness group's probes of the base
   model, from the base-evaluation cache when another cell already paid for them;
3. ``fine_tune``: SFT with trajectory probes (resumable; divergence is an outcome), with
   the ``mitigation`` group's replay, L2-SP, EWC or SAM applied in every update
   (``build_mitigation``; the EWC Fisher is cached per checkpoint like the base evaluation);
4. ``measure_finetuned``: the same evaluation of the fine-tuned model, in the same dtype;
   with ``mitigation=wise`` also every weight interpolation base -> fine-tuned
   (``measure_wise``, metrics ``wise/alpha=<a>/...``);
5. ``measure_change``: update size, representation drift and the loss landscape between
   the base weights (a CPU copy) and the fine-tuned ones (LoRA adapters merged);
6. ``finish``: ``record.json`` (atomic) and the W&B summary.

The record composes the metric prefixes (``base/``, ``ft/``, ``forget/``, ``update/``, ...)
in one place, ``CellRecord.add``; each stage's module owns its metric names.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from overtraining import runtime
from overtraining.checkpoints import ResolvedCheckpoint, resolve, weights_identity
from overtraining.config import CellConfig
from overtraining.data.corpus import Corpus, build_embedded_corpus, hub_corpus
from overtraining.data.sft_data import SFTData, load_sft_data, score_fn
from overtraining.evaluation.cache import EVAL_CODE_VERSION, BaseEvalCache, content_hash
from overtraining.evaluation.embedded_tasks import TASKS_VERSION
from overtraining.evaluation.evaluate import evaluate_model
from overtraining.evaluation.forgetting import forgetting
from overtraining.evaluation.perplexity import hub_text, perplexity
from overtraining.geometry.measure import geometry_batches, measure_checkpoint, measure_pair, update_size
from overtraining.models import load_model, load_tokenizer, torch_dtype
from overtraining.results import CellRecord, cell_id, provenance, read_record, write_record
from overtraining.tracking import MetricsSink, NullSink, make_sink, run_id_for
from overtraining.training import mitigations as mit
from overtraining.training.lm_data import fixed_batches
from overtraining.training.sft import SFTOutcome, finetune, lora_config

CODE_VERSION = "cell-v2"  # bump when a change invalidates cached base evaluations
PROBE_CHARS = 40_000  # characters of the probe text scored along the SFT trajectory
MITIGATION_CHARS = 1_000_000  # characters of pretraining-like text for replay and the Fisher
PROBE_TOKENS = 8192  # at most this many of its tokens (eval.ppl_max_tokens when smaller)


@dataclass
class Setup:
    """What ``prepare`` loads once for the whole cell."""

    ckpt: ResolvedCheckpoint
    tokenizer: object
    model: torch.nn.Module
    data: SFTData
    corpus: Corpus
    geo_batches: list[dict]
    probe_text: str
    device: torch.device
    dtype: torch.dtype
    weights: str  # ``weights_identity`` of the checkpoint: hashed once, keys every cache


def run_cell(cfg: CellConfig, run_dir: Path, group: str = "single") -> CellRecord | None:
    """Runs one cell and writes its record; None when the cell was skipped (done, or a dry run)."""
    cid = cell_id(asdict(cfg))
    if skip_done(run_dir, cid, cfg):
        return None
    if cfg.launch.dry_run:
        print(f"would run cell {cid}: {cfg.checkpoint.family}/{cfg.checkpoint.revision} lr={cfg.lr:g} -> {run_dir}")
        return None
    started = time.time()
    ckpt = ensure_checkpoint(cfg)
    record = new_record(cfg, cid, ckpt)
    sink: MetricsSink = NullSink()
    try:
        setup = timed(record, "setup_s", prepare, cfg, ckpt)
        base = timed(record, "base_s", measure_base, cfg, setup, record)
        record.add("base", base)
        if cfg.trainer.max_steps == 0 and cfg.trainer.epochs == 0:
            record.status = "completed"
            record.notes.append("probe-only cell (trainer.max_steps=0): base measurements only")
            return finish(record, run_dir, sink, setup, started)
        mitigation = timed(record, "mitigation_s", build_mitigation, cfg, setup, record)
        base_state = {k: v.detach().to("cpu", copy=True) for k, v in setup.model.state_dict().items()}
        sink = open_sink(cfg, record, run_dir, group)
        outcome = timed(record, "sft_s", fine_tune, cfg, setup, run_dir, sink, mitigation)
        if not runtime.is_rank0():
            return None
        record.add_sft(outcome)
        if outcome.diverged:
            return finish(record, run_dir, sink, setup, started)
        ft = timed(record, "ft_eval_s", measure_finetuned, cfg, setup, outcome.model)
        record.add("ft", ft)
        record.add("", forgetting(base, ft))
        if cfg.mitigation.name == "wise":
            record.add("", timed(record, "wise_s", measure_wise, cfg, setup, outcome.model, base_state, base, ft))
        if cfg.trainer.keep_model:
            outcome.model.save_pretrained(run_dir / "model")
            setup.tokenizer.save_pretrained(run_dir / "model")
        change = timed(record, "pair_s", measure_change, cfg, setup, outcome.model, base_state)
        record.curves |= change.pop("curves")
        record.add("", change)
        record.status = outcome.status
        return finish(record, run_dir, sink, setup, started)
    except Exception as err:
        record.status = "failed"
        record.notes.append(f"{type(err).__name__}: {err}")
        if runtime.is_rank0():
            write_record(record, run_dir)  # what was measured before the failure is kept
            import traceback

            (run_dir / "error.txt").write_text(traceback.format_exc())
        raise


# ---------------------------------------------------------------------------- the steps
def ensure_checkpoint(cfg: CellConfig) -> ResolvedCheckpoint:
    """Resolves the checkpoint; pretrains the embedded trajectory when it is not on disk yet."""
    ckpt = resolve(cfg.checkpoint, cfg.pretrain.resolved_out_dir(), cfg.cache_dir)
    if not ckpt.embedded or (Path(ckpt.source) / "checkpoint.json").exists():
        return ckpt
    from overtraining.pretrain import train_trajectory

    print(f"checkpoint {ckpt.name} is not on disk: pretraining the embedded trajectory first")
    budget = Path(ckpt.source).name.removeprefix("tokens_").removesuffix("-cooldown")
    train_trajectory(cfg.pretrain, until=budget)
    if not (Path(ckpt.source) / "checkpoint.json").exists():
        raise FileNotFoundError(f"pretraining did not produce {ckpt.source}: add {budget} to pretrain.budgets")
    return resolve(cfg.checkpoint, cfg.pretrain.resolved_out_dir(), cfg.cache_dir)


def prepare(cfg: CellConfig, ckpt: ResolvedCheckpoint) -> Setup:
    """Loads everything the cell measures with; seeds torch with the cell's seed."""
    torch.manual_seed(cfg.seed)
    device = runtime.device(cfg.trainer.device)
    dtype = torch_dtype(cfg.model, device)
    tokenizer = load_tokenizer(ckpt, cfg.model.trust_remote_code)
    model = load_model(ckpt, cfg.model, device)
    if cfg.trainer.method == "lora":
        lora_config(model, cfg.trainer)  # a LoRA that cannot apply fails before the base measurements
    data = load_sft_data(cfg.sft_data, tokenizer)
    corpus = build_embedded_corpus(cfg.cache_dir)
    geo_text = _text(cfg.sharpness.text, ckpt, corpus, cfg.cache_dir)
    probe_text = _text(cfg.eval.probe_text, ckpt, corpus, cfg.cache_dir)[:PROBE_CHARS]
    batches = geometry_batches(tokenizer, geo_text, cfg.sharpness)
    return Setup(ckpt, tokenizer, model, data, corpus, batches, probe_text, device, dtype, weights_identity(ckpt))


def measure_base(cfg: CellConfig, setup: Setup, record: CellRecord) -> dict:
    """The base model's evaluation and geometry, each from the cache when already computed.

    Two cache entries: the evaluation (keyed by weights, eval settings and data) and the
    geometry (keyed by weights, sharpness settings incl. its seed, and batches), so replicas
    that share their SFT data pay the evaluation once and only re-draw the noise.
    """
    if not runtime.is_rank0():  # under torchrun only rank 0 evaluates
        return {}
    cache = BaseEvalCache(Path(cfg.cache_dir) / "base_eval")
    key = base_cache_key(cfg, setup)
    evaluation, hit_eval = cache.get_or_compute(key["eval"], lambda: evaluate(cfg, setup, setup.model))
    geometry, hit_geo = cache.get_or_compute(
        key["geometry"], lambda: measure_checkpoint(setup.model, setup.geo_batches, cfg.sharpness)
    )
    said = {True: "cache hit", False: "computed"}
    both = said[hit_eval] if hit_eval == hit_geo else f"evaluation {said[hit_eval]}, geometry {said[hit_geo]}"
    record.notes.append(f"base evaluation: {both}")
    return evaluation | geometry


def build_mitigation(cfg: CellConfig, setup: Setup, record: CellRecord) -> mit.SFTMitigation | None:
    """What the SFT loop applies for the ``mitigation`` group (None for none and wise).

    Replay cuts its rows from pretraining-like text (``mitigation_tokens``); EWC's diagonal
    Fisher of the base model on that text is read from ``<cache_dir>/fisher/`` when another
    cell of the same checkpoint and settings already computed it.
    """
    m = cfg.mitigation
    if m.name in ("none", "wise"):
        return None
    if m.name in ("l2", "sam"):
        return mit.SFTMitigation(m.name, m.strength)
    tokens = mitigation_tokens(cfg, setup)
    if m.name == "replay":
        return mit.SFTMitigation("replay", m.strength, replay_tokens=tokens, seq_len=m.seq_len, seed=cfg.trainer.seed)

    def compute() -> dict:
        batches = fixed_batches(tokens, m.fisher_batches, m.batch_size, m.seq_len)
        return mit.diagonal_fisher(setup.model, batches, m.fisher_normalize)

    key = {
        "weights": setup.weights,
        "text": hashlib.sha256(tokens.tobytes()).hexdigest(),
        "settings": [m.fisher_batches, m.batch_size, m.seq_len, m.fisher_normalize],
        "dtype": str(setup.dtype),
        "device": setup.device.type,
        "code": mit.FISHER_CODE_VERSION,
    }
    path = Path(cfg.cache_dir) / "fisher" / f"{content_hash(key)}.pt"
    fisher, hit = mit.cached_fisher(path, compute)
    record.notes.append("EWC Fisher: " + ("cache hit" if hit else "computed"))
    return mit.SFTMitigation("ewc", m.strength, fisher=fisher)


def mitigation_tokens(cfg: CellConfig, setup: Setup) -> np.ndarray:
    """Pretraining-like text for replay and the Fisher, tokenized: the embedded corpus's train
    split (the project's own and local checkpoints) or ``mitigation.hub_corpus`` (Hub ones),
    ``MITIGATION_CHARS`` characters sampled in 64 evenly spaced pieces."""
    source = cfg.mitigation.replay_source
    if source == "auto":
        source = "embedded" if setup.ckpt.local else "hub"
    if source == "embedded":
        text = setup.corpus.text("train")
    else:
        text = hub_train_text(cfg.mitigation.hub_corpus, cfg.cache_dir)
    text = spaced_sample(text, MITIGATION_CHARS)
    return np.asarray(setup.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)


def hub_train_text(name: str, cache_dir: str) -> str:
    """The train split of a Hub text data set, from ``<cache_dir>/corpus/`` once another cell streamed it."""
    path = Path(cache_dir) / "corpus" / name.replace("/", "--") / "train.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return hub_corpus(name, cache_dir).text("train")


def spaced_sample(text: str, chars: int, pieces: int = 64) -> str:
    """``text`` itself when short enough, else ``pieces`` evenly spaced slices of ``chars // pieces``."""
    if len(text) <= chars:
        return text
    stride, width = len(text) // pieces, chars // pieces
    return "\n\n".join(text[i * stride : i * stride + width] for i in range(pieces))


def fine_tune(
    cfg: CellConfig, setup: Setup, run_dir: Path, sink: MetricsSink, mitigation: mit.SFTMitigation | None = None
) -> SFTOutcome:
    """SFT of the loaded model (with the mitigation, if any), probing the OOD loss along the way."""

    def probe(model: torch.nn.Module) -> dict:
        tokens = min(PROBE_TOKENS, cfg.eval.ppl_max_tokens)
        ppl = perplexity(model, setup.tokenizer, setup.probe_text, cfg.sharpness.seq_len, tokens, batch_size=8)
        return {"ppl/probe_text": ppl["ppl"], "loss/probe_text": ppl["loss"]}

    outcome = finetune(
        setup.model,
        setup.tokenizer,
        setup.data,
        cfg.lr,
        cfg.lr_schedule,
        cfg.trainer,
        run_dir / "sft",
        probe=probe,
        on_step=lambda row: sink.log(row, step=row.get("step")),
        identity=sft_identity(cfg, setup),
        mitigation=mitigation,
    )
    outcome.model.to(setup.dtype)  # the base model was evaluated in this dtype too
    return outcome


def measure_finetuned(cfg: CellConfig, setup: Setup, model: torch.nn.Module) -> dict:
    """The fine-tuned model's evaluation (and geometry, with ``sharpness.on_finetuned``)."""
    metrics = evaluate(cfg, setup, model)
    if cfg.sharpness.on_finetuned:
        metrics |= measure_checkpoint(model, setup.geo_batches, cfg.sharpness)
    return metrics


def measure_wise(cfg: CellConfig, setup: Setup, model: torch.nn.Module, base_state: dict, base: dict, ft: dict) -> dict:
    """WiSE-FT: the eval group at every ``theta_base + alpha (theta_ft - theta_base)``, alpha in ``mitigation.alphas``.

    Returns ``wise/alpha=<a>/ft/<metric>`` and ``wise/alpha=<a>/forget/<metric>`` (base
    minus interpolated, signed as ``forget/``). alpha = 0 is the base model bit for bit and
    alpha = 1 the fine-tuned one (``interpolate_state``), so their metrics are the cell's
    ``base/`` and ``ft/`` ones rather than a second evaluation.
    """
    if hasattr(model, "merge_and_unload"):  # a PeftModel: interpolate towards the merged weights
        model = copy.deepcopy(model).merge_and_unload()
    ft_state = {k: v.detach() for k, v in model.state_dict().items()}
    work = copy.deepcopy(model)
    out: dict = {}
    for alpha in cfg.mitigation.alphas:
        if alpha in (0.0, 1.0):
            metrics = {k: (base if alpha == 0 else ft)[k] for k in ft if k in base}
        else:
            work.load_state_dict(mit.interpolate_state(base_state, ft_state, alpha))
            metrics = evaluate(cfg, setup, work)
        tag = f"wise/alpha={alpha:g}"
        out |= {f"{tag}/ft/{k}": v for k, v in metrics.items()}
        out |= {f"{tag}/{k}": v for k, v in forgetting(base, metrics).items()}
    del work
    return out


def measure_change(cfg: CellConfig, setup: Setup, model: torch.nn.Module, base_state: dict) -> dict:
    """Update size, drift and landscape between base and fine-tuned weights (LoRA merged).

    The base model is rebuilt from its CPU state dict only here, after SFT freed its memory.
    """
    if hasattr(model, "merge_and_unload"):  # a PeftModel: compare the merged weights
        model = model.merge_and_unload()
    out: dict = update_size(base_state, model)
    out["curves"] = {}
    g = cfg.sharpness
    if not (g.drift_layers or g.landscape_alphas or g.landscape_2d_points):
        return out
    base = copy.deepcopy(model)
    base.load_state_dict(base_state)
    pair = measure_pair(base, model, setup.geo_batches, g)
    alphas, losses = pair.pop("landscape/alphas", None), pair.pop("landscape/losses", None)
    if alphas is not None:
        out["curves"]["landscape"] = [{"alpha": a, "loss": v} for a, v in zip(alphas, losses, strict=True)]
    coords, grid = pair.pop("landscape2d/coords", None), pair.pop("landscape2d/losses", None)
    if coords is not None:
        out["curves"]["landscape2d"] = [{"coords": coords, "losses": grid}]
    return out | pair


def finish(record: CellRecord, run_dir: Path, sink: MetricsSink, setup: Setup | None, started: float) -> CellRecord:
    """Writes the record atomically, sends the W&B summary and prints where the record is."""
    record.timings["total_s"] = time.time() - started
    if setup is not None:
        record.timings |= runtime.peak_memory_gb(setup.device)
    path = write_record(record, run_dir)
    sink.summary({k: v for k, v in record.metrics.items() if isinstance(v, (int, float))})
    sink.finish()
    print(f"[{record.status}] {record.checkpoint} lr={record.lr:g} seed={record.seed}: record written to {path}")
    return record


# ---------------------------------------------------------------------------- helpers
def evaluate(cfg: CellConfig, setup: Setup, model: torch.nn.Module) -> dict:
    """The eval group's measurements of one model (OOD suite, perplexity, ID, format probe)."""
    d = setup.data
    return evaluate_model(
        model,
        setup.tokenizer,
        cfg.eval,
        setup.corpus,
        cfg.cache_dir,
        heldout=d.heldout,
        heldout_raw=d.heldout_raw,
        score_fn=score_fn(d.name),
    )


def base_cache_key(cfg: CellConfig, setup: Setup) -> dict[str, dict]:
    """What the base numbers depend on: the weights' content, the data's content, the settings.

    Returns:
        ``{"eval": key, "geometry": key}``, the keys of the two cache entries.
    """
    d = setup.data
    common = {
        "weights": setup.weights,
        "tokens": setup.ckpt.tokens,
        "dtype": str(setup.dtype),
        "device": setup.device.type,
        "code": [CODE_VERSION, EVAL_CODE_VERSION, TASKS_VERSION],
    }
    return {
        "eval": common
        | {
            "eval": asdict(cfg.eval),
            "sft_heldout": content_hash([d.heldout_raw, [ex["input_ids"] for ex in d.heldout]]),
            "corpus": corpus_identity(setup.corpus),
        },
        "geometry": common
        | {
            "sharpness": asdict(cfg.sharpness),
            "geometry_batches": content_hash([b["input_ids"].tolist() for b in setup.geo_batches]),
        },
    }


def corpus_identity(corpus: Corpus) -> str:
    """The corpus's content: its manifest's SHA-256 per split, else the split files' sizes."""
    manifest = Path(corpus.root) / "manifest.json"
    if manifest.exists():
        return content_hash(manifest.read_text())
    return content_hash(sorted(f"{s}:{p.stat().st_size}" for s, p in corpus.splits.items()))


def sft_identity(cfg: CellConfig, setup: Setup) -> dict:
    """What an SFT resume state must match: the weights it started from, the data, the seed."""
    return {
        "weights": setup.weights,
        "data": content_hash([ex["input_ids"] for ex in setup.data.train]),
        "seed": cfg.trainer.seed,
        "mitigation": asdict(cfg.mitigation),
    }


def new_record(cfg: CellConfig, cid: str, ckpt: ResolvedCheckpoint) -> CellRecord:
    record = CellRecord(
        cell_id=cid,
        status="failed",
        checkpoint=ckpt.name,
        tokens=ckpt.tokens,
        lr=cfg.lr,
        schedule=cfg.lr_schedule.name,
        sft_data=cfg.sft_data.name,
        seed=cfg.seed,
        config=asdict(cfg),
        provenance=provenance(),
    )
    record.config["pretrain_schedule"] = pretrain_schedule(ckpt)
    if not ckpt.local:  # what the name resolved to: the Hub branch, its tokens, the branch list's source
        record.config["checkpoint_resolved"] = {
            "repo": ckpt.source, "branch": ckpt.revision, "tokens": ckpt.tokens, "branch_list": ckpt.listing,
        }  # fmt: skip
    record.config["seeds"] = cfg.seeds()
    device = runtime.device(cfg.trainer.device)
    record.config["dtypes"] = {
        "eval": str(torch_dtype(cfg.model, device)).removeprefix("torch."),
        "geometry": "float32",
        "sft": "float32 weights" + (" + bf16 autocast" if device.type == "cuda" else ""),
    }
    return record


def open_sink(cfg: CellConfig, record: CellRecord, run_dir: Path, group: str) -> MetricsSink:
    if not runtime.is_rank0():
        return NullSink()
    return make_sink(
        cfg.logger,
        {**record.config, "tokens": record.tokens, "checkpoint_name": record.checkpoint},
        group=group,
        run_id=run_id_for(f"{group}/{record.cell_id}"),
        name=f"{record.checkpoint} lr={cfg.lr:g} seed={cfg.seed}",
        run_dir=run_dir,
    )


def timed(record: CellRecord, key: str, step, *args):  # step: one of the recipe's functions
    """Runs ``step(*args)`` and records its wall time under ``record.timings[key]``."""
    t0 = time.time()
    try:
        return step(*args)
    finally:
        record.timings[key] = time.time() - t0


def _text(name: str, ckpt: ResolvedCheckpoint, corpus: Corpus, cache_dir: str) -> str:
    """A text by name; ``auto`` is the embedded OOD prose for the project's own checkpoints and
    WikiText-2 for Hub checkpoints (the papers' choice)."""
    if name == "auto":
        name = "ood_prose" if ckpt.local else "wikitext2"
    return corpus.text(name) if name in corpus.splits else hub_text(name, cache_dir)


def pretrain_schedule(ckpt: ResolvedCheckpoint) -> str:
    """The schedule a local checkpoint was pretrained with: ``constant``, ``constant+cooldown`` for
    annealed branches, ``constant+sam`` / ``constant+sam+cooldown`` when pretrained with SAM."""
    meta = Path(ckpt.source) / "checkpoint.json"
    if not ckpt.local or not meta.exists():
        return "hub"
    import json

    m = json.loads(meta.read_text())
    sam = "+sam" if m.get("optimizer") == "sam" else ""
    return m["schedule"] + sam + ("+cooldown" if m.get("branch") == "cooldown" else "")


def skip_done(run_dir: Path, cid: str, cfg: CellConfig) -> bool:
    """True when this cell already has a finished record (idempotent sweeps)."""
    path = run_dir / "record.json"
    if not path.exists() or not cfg.launch.skip_done:
        return False
    rec = read_record(path)
    if rec.cell_id != cid:
        print(f"{run_dir} holds another cell's record ({rec.cell_id} != {cid}); running this one")
        return False
    if rec.status in ("failed", "diverged") and cfg.launch.rerun_failed:
        shutil.rmtree(run_dir / "sft", ignore_errors=True)  # else SFT would resume into the same failure
        return False
    print(f"skip: cell {cid} is done ({rec.status}): {path}")
    return True
