"""Controlled pretraining: a tiny LM trained to a list of token budgets, with cooldown branches.

Usage::

    python -m overtraining.pretrain                                   # the embedded trajectory
    python -m overtraining.pretrain lr_schedule=wsd budgets='[1M,2M,4M]' out_dir=runs/wsd
    python -m overtraining.pretrain corpus.source=local corpus.path=my.txt out_dir=runs/mine

A checkpoint (Hugging Face format + tokenizer + ``checkpoint.json``: exact tokens seen, step,
LR at save time, held-out losses, provenance) is saved at every budget as
``<out_dir>/tokens_<budget>/``. With ``cooldown_ratio > 0`` each one also gets an annealed
branch ``tokens_<budget>-cooldown/``: a copy that trains ``cooldown_ratio x budget`` more
tokens (on the batches the main run sees next) with the LR decaying linearly from its
current value to 0 -- this removes the "intermediate checkpoints never finished their LR
decay" confound. The schedule's horizon is the largest budget (or ``horizon``).

``optimizer=sam`` pretrains with sharpness-aware minimization (Foret et al. 2021) around
AdamW, as Watts et al. (ICML 2026) do to make the model less sensitive to later weight
changes; see ``sam_step``. It costs two forward/backward passes per step. A SAM trajectory
lives in its own directory (``trajectories/embedded-sam`` by default) and its recipe, which
names the optimizer and rho, refuses to continue an AdamW one.

Resumable: the model/optimizer/scheduler state is written atomically to ``_state/`` every
``state_every`` steps and at every checkpoint; rerunning the command continues from it
(batches are a pure function of (seed, step), so the continuation is exact). Finished
checkpoints are never redone.
"""

from __future__ import annotations

import copy
import fcntl
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from overtraining.config import CorpusConfig, PretrainConfig, parse_token_label
from overtraining.data.corpus import Corpus, build_embedded_corpus, hub_corpus, local_corpus
from overtraining.data.tokenizer import byte_tokenizer, encode_bytes
from overtraining.files import atomic_path
from overtraining.models import build_tiny_model
from overtraining.results import provenance, write_json_atomic
from overtraining.training.lm_data import fixed_batches, lm_batch
from overtraining.training.losses import lm_loss
from overtraining.training.schedules import build_scheduler

log = logging.getLogger(__name__)


def recipe(cfg: PretrainConfig) -> dict:
    """The part of the config that determines the trajectory's weights.

    AdamW recipes leave out ``optimizer`` and ``sam_rho`` (rho does not affect AdamW, and
    trajectories written before SAM existed keep matching); a SAM recipe names both, so it
    never matches an AdamW trajectory's ``recipe.json``.
    """
    d = asdict(cfg)
    for k in ("out_dir", "cache_dir", "state_every", "stop_after_steps", "sharpness_estimators", "eval_batches"):
        d.pop(k)
    if cfg.optimizer == "adamw":
        d.pop("optimizer"), d.pop("sam_rho")
    return d


def sam_step(params: list[torch.nn.Parameter], loss_fn, opt: torch.optim.Optimizer, rho: float, max_grad_norm: float):
    """One SAM step (Foret et al. 2021); returns the loss at theta (before the step).

    1. g = grad L(theta);
    2. ascend: theta_adv = theta + rho * g / ||g||  (||g|| over all parameters);
    3. g_adv = grad L(theta_adv);
    4. restore theta exactly (from a copy), clip g_adv to ``max_grad_norm`` (0 = no clipping)
       and let ``opt`` (AdamW here) step with g_adv from theta.

    Args:
        params: the parameters ``opt`` updates.
        loss_fn: () -> scalar loss at the current parameters (the same batch both times).
        opt: the base optimizer.
        rho: the ascent radius (``pretrain.sam_rho``).
        max_grad_norm: global gradient-norm clip of g_adv.
    """
    loss = loss_fn()
    loss.backward()
    with torch.no_grad():
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        saved = [p.detach().clone() for p in params]
        scale = rho / (norm + 1e-12)
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=float(scale))
    opt.zero_grad(set_to_none=True)
    loss_fn().backward()
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def train_step(model, opt: torch.optim.Optimizer, x: torch.Tensor, cfg: PretrainConfig) -> torch.Tensor:
    """One optimizer step on batch ``x`` (AdamW, or SAM around it); returns the loss at theta."""

    def loss_fn():
        return model(input_ids=x, labels=x).loss

    if cfg.optimizer == "sam":
        return sam_step(list(model.parameters()), loss_fn, opt, cfg.sam_rho, cfg.max_grad_norm)
    loss = loss_fn()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def load_corpus(cfg: CorpusConfig, cache_dir: str) -> Corpus:
    if cfg.source == "embedded":
        return build_embedded_corpus(cache_dir)
    if cfg.source == "local":
        return local_corpus(cfg.path)
    if cfg.source == "hub":
        return hub_corpus(cfg.name, cache_dir)
    raise ValueError(f"unknown corpus.source {cfg.source!r}: use embedded, local or hub")


@contextmanager
def _locked(out: Path):
    """One pretraining process per trajectory: others wait, then find the work done."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _save_checkpoint(model, tokenizer, path: Path, meta: dict) -> None:
    with atomic_path(path) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "checkpoint.json").write_text(json.dumps(meta, indent=1))


def _save_state(path: Path, model, opt, sched, step: int, history: list) -> None:
    with atomic_path(path) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "step": step,
                "history": history,
            },
            tmp,
        )


def _probe(model, evals: dict[str, list[dict]], estimators: list[str], sharp_batches: list[dict]) -> dict:
    """Held-out losses (and, when asked, sharpness) of a checkpoint."""
    out = {f"loss/{name}": lm_loss(model, b) for name, b in evals.items()}
    if estimators:
        from overtraining.config import GeometryConfig
        from overtraining.geometry.measure import measure_checkpoint

        out |= measure_checkpoint(model, sharp_batches, GeometryConfig(estimators=list(estimators)))
    return out


def _cooldown(model, opt, tokens: np.ndarray, cfg: PretrainConfig, start_step: int, steps: int):
    """Trains a copy for ``steps`` with the LR decaying linearly from its current value to 0."""
    branch = copy.deepcopy(model)
    bopt = torch.optim.AdamW(branch.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    bopt.load_state_dict(copy.deepcopy(opt.state_dict()))
    lr0 = opt.param_groups[0]["lr"]
    for i in range(steps):
        for g in bopt.param_groups:
            g["lr"] = lr0 * (1 - i / steps)
        x = lm_batch(tokens, start_step + i, cfg.batch_size, cfg.seq_len, cfg.seed)
        train_step(branch, bopt, x, cfg)
    return branch


def train_trajectory(cfg: PretrainConfig, until: str = "") -> list[Path]:
    """Pretrains (or resumes) the trajectory of ``cfg``; returns its checkpoint directories.

    Args:
        cfg: the recipe.
        until: a budget label: stop once that checkpoint (and its cooldown branch) is saved;
            a later call continues from there. Empty: train every budget.
    """
    cfg.validate()
    out = cfg.resolved_out_dir()
    with _locked(out):
        return _train(cfg, out, until)


def _check_recipe(out: Path, cfg: PretrainConfig) -> None:
    path = out / "recipe.json"
    want = json.loads(json.dumps(recipe(cfg)))
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            diff = sorted(k for k in want if have.get(k) != want[k])
            raise ValueError(
                f"{out} holds a trajectory of another recipe (differs in {diff}): "
                "set out_dir to a new directory or delete the old one"
            )
    else:
        write_json_atomic(path, want)


def _train(cfg: PretrainConfig, out: Path, until: str = "") -> list[Path]:
    _check_recipe(out, cfg)
    torch.manual_seed(cfg.seed)
    tpb = cfg.batch_size * cfg.seq_len
    budget_steps = {b: math.ceil(parse_token_label(b) / tpb) for b in cfg.budgets}
    total = math.ceil(parse_token_label(cfg.horizon) / tpb) if cfg.horizon else max(budget_steps.values())
    todo = {b: s for b, s in budget_steps.items() if not _done(out, b, cfg)}
    paths = [out / f"tokens_{b}" for b in cfg.budgets]
    if not todo:
        return paths
    corpus = load_corpus(cfg.corpus, cfg.cache_dir)
    tokens = encode_bytes(corpus.text("train"))
    evals = {
        s: fixed_batches(encode_bytes(corpus.text(s)), cfg.eval_batches, cfg.batch_size, cfg.seq_len)
        for s in ("id_heldout", "ood_prose")
        if s in corpus.splits
    }
    tokenizer = byte_tokenizer()
    model = build_tiny_model(cfg.model, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = build_scheduler(opt, cfg.lr_schedule, total)
    state_path, step, history = out / "_state" / "state.pt", 0, []
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        step, history = st["step"], st["history"]
        log.info("resumed pretraining from step %d (%s)", step, state_path)
    last = todo[until] if until in todo else max(todo.values())
    model.train()
    t0, pbar = time.time(), tqdm(total=last, initial=step, desc=f"pretrain {out.name}", unit="step")
    while step < last:
        x = lm_batch(tokens, step, cfg.batch_size, cfg.seq_len, cfg.seed)
        lr = opt.param_groups[0]["lr"]
        loss = train_step(model, opt, x, cfg)
        sched.step()
        step += 1
        history.append({"step": step, "loss": loss.item(), "lr": lr})
        pbar.update(1)
        tok_s = (step - pbar.initial) * tpb / (time.time() - t0)
        pbar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tok_s:.0f}", refresh=False)
        for b in [b for b, s in todo.items() if s == step]:
            meta = {
                "budget": b,
                "tokens": step * tpb,
                "step": step,
                "lr_at_save": lr,
                "peak_lr": cfg.lr,
                "schedule": cfg.lr_schedule.name,
                "optimizer": cfg.optimizer,
                **({"sam_rho": cfg.sam_rho} if cfg.optimizer == "sam" else {}),
                "branch": "main",
                "recipe": recipe(cfg),
                "provenance": provenance(),
            }
            meta["probes"] = _probe(model, evals, cfg.sharpness_estimators, next(iter(evals.values())))
            _save_checkpoint(model, tokenizer, out / f"tokens_{b}", meta)
            if cfg.cooldown_ratio > 0:
                n = math.ceil(cfg.cooldown_ratio * step)
                branch = _cooldown(model, opt, tokens, cfg, step, n)
                cmeta = meta | {
                    "tokens": (step + n) * tpb,
                    "step": step + n,
                    "lr_at_save": 0.0,
                    "branch": "cooldown",
                    "parent": f"tokens_{b}",
                    "cooldown_steps": n,
                }
                cmeta["probes"] = _probe(branch, evals, cfg.sharpness_estimators, next(iter(evals.values())))
                _save_checkpoint(branch, tokenizer, out / f"tokens_{b}-cooldown", cmeta)
            _save_state(state_path, model, opt, sched, step, history)
        if step % cfg.state_every == 0:
            _save_state(state_path, model, opt, sched, step, history)
        if cfg.stop_after_steps and step >= cfg.stop_after_steps:
            _save_state(state_path, model, opt, sched, step, history)
            pbar.close()
            print(f"stopped at step {step} (stop_after_steps); rerun to resume")
            return []
    pbar.close()
    seconds = time.time() - t0
    write_json_atomic(
        out / "trajectory.json",
        {
            "history": history,
            "checkpoints": [p.name for p in paths],
            "last_run_seconds": seconds,
            "tokens_per_batch": tpb,
        },
    )
    return paths


def _done(out: Path, budget: str, cfg: PretrainConfig) -> bool:
    main = (out / f"tokens_{budget}" / "checkpoint.json").exists()
    cool = cfg.cooldown_ratio <= 0 or (out / f"tokens_{budget}-cooldown" / "checkpoint.json").exists()
    return main and cool


def main() -> None:
    """The Hydra entry point (``python -m overtraining.pretrain``)."""
    from overtraining.cli import hydra_pretrain_main

    hydra_pretrain_main(train_trajectory)


if __name__ == "__main__":
    main()
