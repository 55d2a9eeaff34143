"""Typed config schemas of every group, and their validation. Nothing else.

Every config group is backed by a dataclass here, registered in Hydra's ConfigStore by
``overtraining.cli``; an unknown key or a wrong type fails when Hydra composes the config,
and each ``__post_init__`` checks ranges and choices when the entry point converts the
DictConfig (``OmegaConf.to_object``). This module imports neither torch nor transformers,
so a bad command line is refused in well under a second, before any model code loads.

Every error is a ``ConfigError`` (a ``ValueError``) whose one-line message names the key,
the value and the fix: ``trainer.max_steps=-5 must be >= 0: pass e.g. trainer.max_steps=200``.

Groups mirror modules: ``model`` -> overtraining/models.py, ``checkpoint`` ->
overtraining/checkpoints.py, ``sft_data`` -> overtraining/data/sft_data.py, ``lr_schedule``
-> overtraining/training/schedules.py, ``trainer`` -> overtraining/training/sft.py, ``eval``
-> overtraining/evaluation/, ``sharpness`` -> overtraining/geometry/, ``logger`` ->
overtraining/tracking.py, ``pretrain`` -> overtraining/pretrain.py, ``mitigation`` ->
overtraining/training/mitigations.py.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A config value that cannot run; the message is one line naming the key and the fix."""


def suggest(name: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest option, or ''."""
    near = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def check_choice(key: str, value: str, options: Sequence[str]) -> None:
    """Raises ``ConfigError`` naming the nearest option when ``value`` is not one of ``options``.

    >>> check_choice("eval.suite", "embeded", ("embedded", "none"))
    Traceback (most recent call last):
    ...
    overtraining.config.ConfigError: unknown eval.suite 'embeded' (did you mean 'embedded'?): choose embedded, none
    """
    if value in options:
        return
    listing = ", ".join(map(str, options)) if len(options) <= 20 else f"one of {len(options)} names"
    raise ConfigError(f"unknown {key} {value!r}{suggest(value, options)}: choose {listing}")


def check_range(
    key: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    example: object = None,
) -> None:
    """Raises ``ConfigError`` unless ``lo <= value <= hi`` (``lo < value`` when ``lo_open``); None passes.

    ``example`` is a valid value shown in the fix (``pass e.g. key=example``).
    """
    if value is None:
        return
    bad = isinstance(value, float) and not math.isfinite(value)
    if lo is not None:
        bad = bad or (value <= lo if lo_open else value < lo)
    if hi is not None:
        bad = bad or value > hi
    if not bad:
        return
    if lo is not None and hi is not None:
        need = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    elif lo is not None:
        need = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        need = f"<= {hi:g}"
    fix = f": pass e.g. {key}={example}" if example is not None else ""
    raise ConfigError(f"{key}={value} must be {need}{fix}")


def with_seed(cfg):  # a group config with a ``seed`` field
    """``cfg`` with ``seed`` 0 when it is None (a group used outside a cell); else ``cfg`` itself."""
    import dataclasses

    return dataclasses.replace(cfg, seed=0) if cfg.seed is None else cfg


def parse_token_label(label: str) -> int:
    """``"250K"`` -> 250_000, ``"4M"`` -> 4_000_000, ``"84B"`` -> 84_000_000_000, ``"123"`` -> 123."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMBT]?)", str(label))
    if not m:
        raise ConfigError(f"bad token count {label!r}: write e.g. 500K, 4M or 84B")
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[m.group(2)]
    return int(round(float(m.group(1)) * scale))


# ---------------------------------------------------------------------------------------
# choices shared with the modules that do the work
ARCHS = ("gpt_neox", "llama")
DTYPES = ("auto", "float32", "bfloat16")
SCHEDULES = ("constant", "cosine", "linear", "wsd")
WSD_DECAY_TYPES = ("linear", "cosine", "1-sqrt")
SFT_DATASETS = ("embedded_math", "jsonl", "anthropic_hh", "tulu3", "tinygsm", "siqa", "sst2", "gsm8k")
SPLITS = ("train", "id_heldout", "ood_prose", "ood_tests")
EMBEDDED_TASKS = ("embedded_prose_cloze", "embedded_code_mc", "embedded_prose_ppl")
SUITES = ("embedded", "standard", "none")
HUB_TEXTS = ("wikitext2", "c4")
ESTIMATORS = ("perturbation", "kl", "hessian_top", "hessian_trace", "quantization")
PERTURB_MODES = ("std", "norm")
QUANT_METHODS = ("rtn", "gptq")  # overtraining/geometry/quantization.py
QUANT_BITS = (2, 3, 4, 5, 6, 7, 8)  # weight bit widths of the quantization probe
OPTIMIZERS = ("adamw", "sam")  # pretraining optimizers (overtraining/pretrain.py)
METHODS = ("full", "lora")
DS_PRESETS = ("zero0", "zero2", "zero3")
LOGGER_KINDS = ("wandb", "none")
LOGGER_MODES = ("auto", "offline", "online", "disabled")
CORPUS_SOURCES = ("embedded", "local", "hub")
# SFT mitigations of forgetting (``mitigation`` group; docs/mitigations.md).
MITIGATIONS = ("none", "replay", "l2", "ewc", "sam", "wise")
REPLAY_SOURCES = ("auto", "embedded", "hub")
# The embedded trajectory's default token budgets (PretrainConfig.budgets).
EMBEDDED_BUDGETS = ("250K", "500K", "1M", "2M", "4M")
# The standard suite (Springer et al.'s zero-shot benchmarks), as lm-eval names them.
STANDARD_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "winogrande", "openbookqa", "social_iqa")
# Batch size of this package's own loops (perplexity, ID loss, generation) when
# ``batch_size`` is "auto" (lm-eval searches for the largest batch; we do not).
AUTO_LOOP_BATCH_SIZE = 16


@dataclass
class ModelConfig:
    """Architecture of models pretrained here, and how to load any model (``model`` group).

    Attributes:
        name: a label for the record.
        arch: gpt_neox | llama (used by ``overtraining.pretrain`` only).
        hidden_size, num_layers, num_heads, intermediate_size, max_seq_len: tiny-model shape.
        dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16.
        attn_implementation: sdpa | eager.
        trust_remote_code: passed to from_pretrained; off unless a model needs it.
    """

    name: str = "tiny"
    arch: str = "gpt_neox"
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    max_seq_len: int = 512
    dtype: str = "auto"
    attn_implementation: str = "sdpa"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        check_choice("model.arch", self.arch, ARCHS)
        check_choice("model.dtype", self.dtype, DTYPES)
        check_choice("model.attn_implementation", self.attn_implementation, ("sdpa", "eager"))
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_seq_len"):
            check_range(f"model.{key}", getattr(self, key), 1, example=getattr(ModelConfig, key))
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.hidden_size={self.hidden_size} is not a multiple of model.num_heads={self.num_heads}: "
                "pick sizes that divide"
            )


@dataclass
class CheckpointConfig:
    """One checkpoint (the ``checkpoint`` config group).

    Attributes:
        family: embedded | a Hub family of ``overtraining/checkpoint_families.yaml``
            (pythia-<size>[-deduped], olmo-1b, olmo-2-1b, olmo-2-7b, amber) | hub | local.
        revision: a Hub family's ``stepN`` or exact branch (resolved against the repo's branch
            list), or the local trajectory's checkpoint name.
        repo: Hub repo id (hub families); derived for pythia/olmo.
        path: a local checkpoint directory (family local).
        tokens: pretraining tokens; derived from the name or checkpoint.json when None.
    """

    family: str = "embedded"
    revision: str = "tokens_4M"
    repo: str = ""
    path: str = ""
    tokens: int | None = None

    def __post_init__(self) -> None:
        check_range("checkpoint.tokens", self.tokens, 0, example="2000000")


@dataclass
class SFTDataConfig:
    """Which SFT data set, how much of it, and how it is encoded.

    Attributes:
        name: one of ``SFT_DATASETS``.
        path: the JSONL file (``name=jsonl`` only).
        max_length: tokens per example (truncated); also the packed row length.
        packing: pack training examples into ``max_length`` rows (see ``chat.pack``).
        num_train: training examples (0 = all the source has).
        num_heldout: held-out examples (SFT loss and ID score), at least 1.
        seed: sampling and generation seed; None: the cell's ``seed`` (0 outside a cell).
    """

    name: str = "embedded_math"
    path: str = ""
    max_length: int = 512
    packing: bool = False
    num_train: int = 2000
    num_heldout: int = 200
    seed: int | None = None

    def __post_init__(self) -> None:
        check_choice("sft_data.name", self.name, SFT_DATASETS)
        check_range("sft_data.max_length", self.max_length, 8, example=512)
        check_range("sft_data.num_train", self.num_train, 0, example=2000)
        check_range("sft_data.num_heldout", self.num_heldout, 1, example=200)


@dataclass
class LRScheduleConfig:
    """One learning-rate schedule (``lr_schedule`` group).

    Attributes:
        name: constant | cosine | linear | wsd.
        warmup_ratio: fraction of the steps spent in linear warmup from 0.
        warmup_steps: warmup length in steps; overrides ``warmup_ratio`` when > 0.
        decay_ratio: wsd only: fraction of the steps in the final decay.
        min_lr_ratio: floor of the decay as a fraction of the peak LR (cosine, wsd).
        decay_type: wsd only: shape of the decay, cosine | linear | 1-sqrt.
    """

    name: str = "constant"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    decay_ratio: float = 0.2
    min_lr_ratio: float = 0.0
    decay_type: str = "linear"

    def __post_init__(self) -> None:
        check_choice("lr_schedule.name", self.name, SCHEDULES)
        check_choice("lr_schedule.decay_type", self.decay_type, WSD_DECAY_TYPES)
        for key in ("warmup_ratio", "decay_ratio", "min_lr_ratio"):
            check_range(f"lr_schedule.{key}", getattr(self, key), 0, 1, example=getattr(LRScheduleConfig, key))
        check_range("lr_schedule.warmup_steps", self.warmup_steps, 0, example=0)
        if self.name == "wsd" and self.warmup_ratio + self.decay_ratio > 1:
            raise ConfigError(
                f"lr_schedule.warmup_ratio + decay_ratio = {self.warmup_ratio + self.decay_ratio:g} > 1: "
                "shorten one of them"
            )


@dataclass
class TrainerConfig:
    """How to fine-tune (``trainer`` group); the LR and its schedule are separate axes.

    Attributes:
        method: full | lora.
        lora_r, lora_alpha, lora_dropout: the LoRA adapters (``method=lora``).
        lora_targets: module names to adapt; ``[all-linear]`` (peft: every linear layer but
            the output head) works on any architecture.
        merge_lora: return the base model with the adapters merged into its weights (this
            changes the base tensors in place); by default the ``PeftModel`` is returned and
            the base weights stay bit-identical.
        max_steps: optimizer steps (ignored when ``epochs > 0``).
        epochs: passes over the training examples; overrides ``max_steps`` when > 0.
        batch_size: examples (or packed rows) per micro-batch per process.
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW decay of matrices (biases and norms are not decayed).
        max_grad_norm: clip the global gradient norm (0 = off).
        target_loss: stop when the smoothed training loss first reaches it (None = off).
        loss_smoothing: EMA coefficient of the smoothed loss.
        probe_every: held-out SFT loss + the probe every N steps, and at the end (0 = end only).
        checkpoint_every: resumable state every N steps and at the end (0 = never).
        divergence_factor: loss above this x the first loss counts as divergence.
        deepspeed: "" (plain PyTorch) | zero0 | zero2 | zero3 | a path to a DeepSpeed JSON.
        keep_model: the cell saves the fine-tuned model (or the LoRA adapters) to its run dir.
        seed: data order, LoRA init, dropout; None: the cell's ``seed`` (0 outside a cell).
        device: auto (cuda:LOCAL_RANK if available, else cpu) | cpu | cuda | cuda:N.
    """

    method: str = "full"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["all-linear"])
    merge_lora: bool = False
    max_steps: int = 200
    epochs: float = 0
    batch_size: int = 8
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    target_loss: float | None = None
    loss_smoothing: float = 0.9
    probe_every: int = 25
    checkpoint_every: int = 50
    divergence_factor: float = 10.0
    deepspeed: str = ""
    keep_model: bool = False
    seed: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check_choice("trainer.method", self.method, METHODS)
        if self.deepspeed and not self.deepspeed.endswith(".json"):
            check_choice("trainer.deepspeed", self.deepspeed, ("",) + DS_PRESETS)
        if self.deepspeed.endswith(".json") and not Path(self.deepspeed).is_file():
            raise ConfigError(f"trainer.deepspeed={self.deepspeed} does not exist: pass zero2 or a DeepSpeed JSON path")
        if self.method == "lora" and self.deepspeed == "zero3":
            raise ConfigError("trainer.method=lora with trainer.deepspeed=zero3 is not supported: use zero2")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"unknown trainer.device {self.device!r}: choose auto, cpu, cuda or cuda:N")
        check_range("trainer.lora_r", self.lora_r, 1, example=8)
        check_range("trainer.lora_alpha", self.lora_alpha, 0, lo_open=True, example=16)
        check_range("trainer.lora_dropout", self.lora_dropout, 0, 1, example=0.0)
        if self.method == "lora" and not self.lora_targets:
            raise ConfigError("trainer.lora_targets is empty: pass trainer.lora_targets=[all-linear]")
        check_range("trainer.max_steps", self.max_steps, 0, example=200)
        check_range("trainer.epochs", self.epochs, 0, example=1)
        check_range("trainer.batch_size", self.batch_size, 1, example=8)
        check_range("trainer.grad_accum", self.grad_accum, 1, example=1)
        check_range("trainer.weight_decay", self.weight_decay, 0, example=0.0)
        check_range("trainer.max_grad_norm", self.max_grad_norm, 0, example=1.0)
        check_range("trainer.target_loss", self.target_loss, 0, lo_open=True, example=0.9)
        check_range("trainer.loss_smoothing", self.loss_smoothing, 0, 0.999, example=0.9)
        check_range("trainer.probe_every", self.probe_every, 0, example=25)
        check_range("trainer.checkpoint_every", self.checkpoint_every, 0, example=50)
        check_range("trainer.divergence_factor", self.divergence_factor, 1, lo_open=True, example=10)


@dataclass
class EvalConfig:
    """What to evaluate on a base or fine-tuned model (``eval`` group).

    Attributes:
        suite: embedded (local lm-eval tasks from the embedded corpus, offline) | standard
            (``STANDARD_TASKS``, needs the Hub) | none (no lm-eval).
        tasks: overrides the suite's task list (embedded names, or any lm-eval task name
            for the standard suite, checked against lm-eval's registry when it runs).
        limit: examples per lm-eval task (quick runs); None = all.
        batch_size: lm-eval's HFLM batch size, an int or "auto" (GPU); this package's own
            loops use the int, or ``AUTO_LOOP_BATCH_SIZE`` for "auto".
        max_length: HFLM's context length; fixed across checkpoints because
            ``loglikelihood_rolling`` perplexities depend on it.
        ppl_splits: embedded-corpus splits whose perplexity is measured (``ppl/<split>/*``).
        ppl_hub: Hub texts for perplexity, wikitext2 | c4 (real runs; need the internet).
        ppl_max_tokens: tokens of each text scored (the first ones, deterministic); also
            caps the probe text scored along SFT (at most 8192 tokens).
        ppl_seq_len: window length of the non-overlapping perplexity windows.
        id_max_examples: held-out SFT examples for ``id/loss`` and ``id/accuracy``
            (the first ones); 0 disables the ID metrics.
        id_max_new_tokens: greedy generation length for ``id/accuracy`` and the probe.
        format_probe: measure the format probe (see format_probe.py).
        format_probe_prompts: held-out prompts used by the probe.
        probe_text: the OOD text whose loss is probed along the SFT trajectory: an embedded
            split, a Hub text (wikitext2, c4), or auto (ood_prose for the project's own and
            local checkpoints, wikitext2 for Hub checkpoints).
    """

    suite: str = "embedded"
    tasks: list[str] = field(default_factory=list)
    limit: int | None = None
    batch_size: str = "8"
    max_length: int = 512
    ppl_splits: list[str] = field(default_factory=lambda: ["ood_prose", "id_heldout"])
    ppl_hub: list[str] = field(default_factory=list)
    ppl_max_tokens: int = 65536
    ppl_seq_len: int = 256
    id_max_examples: int = 50
    id_max_new_tokens: int = 160
    format_probe: bool = True
    format_probe_prompts: int = 16
    probe_text: str = "auto"

    def __post_init__(self) -> None:
        check_choice("eval.probe_text", self.probe_text, ("auto",) + SPLITS + HUB_TEXTS)
        check_choice("eval.suite", self.suite, SUITES)
        if self.suite == "embedded":
            for task in self.tasks:
                check_choice("eval.tasks entry", task, EMBEDDED_TASKS)
        for split in self.ppl_splits:
            check_choice("eval.ppl_splits entry", split, SPLITS)
        for name in self.ppl_hub:
            check_choice("eval.ppl_hub entry", name, HUB_TEXTS)
        size = str(self.batch_size)
        if not (size.isdigit() and int(size) > 0) and not size.startswith("auto"):
            raise ConfigError(f"eval.batch_size={size} must be a positive int or 'auto': pass e.g. eval.batch_size=8")
        check_range("eval.limit", self.limit, 1, example=100)
        for key in ("max_length", "ppl_seq_len", "ppl_max_tokens"):
            check_range(f"eval.{key}", getattr(self, key), 2, example=getattr(EvalConfig, key))
        check_range("eval.id_max_examples", self.id_max_examples, 0, example=50)
        check_range("eval.id_max_new_tokens", self.id_max_new_tokens, 1, example=160)
        check_range("eval.format_probe_prompts", self.format_probe_prompts, 1, example=16)

    @property
    def task_list(self) -> list[str]:
        """The lm-eval tasks to run: ``tasks`` if given, else the suite's."""
        if self.tasks:
            return list(self.tasks)
        return {"embedded": list(EMBEDDED_TASKS), "standard": list(STANDARD_TASKS), "none": []}[self.suite]

    @property
    def loop_batch_size(self) -> int:
        """Batch size of this package's own loops (perplexity, ID loss, generation)."""
        size = str(self.batch_size)
        return int(size) if size.isdigit() else AUTO_LOOP_BATCH_SIZE

    @property
    def generation_batch_size(self) -> int:
        """Prompts per greedy-generation batch: 4x the loop batch, because decoding a small
        model is per-step overhead bound (a wider batch costs about the same per step)."""
        return 4 * self.loop_batch_size


@dataclass
class GeometryConfig:
    """Geometry probes of a checkpoint (Hydra group ``sharpness``).

    Attributes:
        estimators: subset of ESTIMATORS run by ``measure_checkpoint``.
        num_batches: fixed batches built from ``text``.
        batch_size: sequences per batch.
        seq_len: tokens per sequence.
        perturb_gammas: relative Gaussian noise magnitudes.
        perturb_seeds: noise draws per gamma.
        perturb_mode: "std" (gamma * std(theta_i)) or "norm" (gamma * ||theta_i|| / sqrt(n)).
        kl_sigma: absolute noise std of the KL proxy.
        kl_samples: noise draws per batch for the KL proxy.
        eig_tol: relative Ritz-residual tolerance of Lanczos.
        eig_max_iter: most HVPs Lanczos may use.
        trace_probes: Rademacher probes of Hutchinson's estimator.
        hvp_cache_graph: keep the first-order graph between HVPs (faster, more memory).
        drift_layers: hidden-state indices for drift (0 = embeddings, -1 = last).
        drift_k: PCA subspace dimension of the mean principal angle.
        landscape_alphas: interpolation coefficients base -> fine-tuned.
        landscape_2d_points: grid points per axis of a 2D slice around the base (0 = off).
        landscape_2d_span: the 2D grid spans [-span, span] in filter-normalised units.
        quant_bits: weight bit widths of the ``quantization`` probe (``quant/bits=B/...``).
        quant_group_size: weights per quantization group along a row's input dimension
            (one scale per group); 0 = one group per output row (per channel).
        quant_method: rtn (round to nearest, CPU) | gptq (GPU only; see
            overtraining/geometry/quantization.py).
        seed: seed of every noise draw, probe and direction; None: the cell's ``seed`` (0
            outside a cell).
        on_finetuned: the cell also runs ``measure_checkpoint`` on the fine-tuned model.
        text: the text the batches come from: an embedded corpus split (ood_prose,
            id_heldout, ...), a Hub text (wikitext2, c4; the Pythia-70M reproduction
            measured perturbation on WikiText-2), or auto (ood_prose for the project's own
            and local checkpoints, wikitext2 for Hub checkpoints).
    """

    estimators: list[str] = field(default_factory=lambda: ["perturbation", "kl", "quantization"])
    num_batches: int = 4
    batch_size: int = 8
    seq_len: int = 128
    perturb_gammas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    perturb_seeds: int = 3
    perturb_mode: str = "std"
    kl_sigma: float = 1e-5
    kl_samples: int = 10
    eig_tol: float = 1e-3
    eig_max_iter: int = 30
    trace_probes: int = 20
    hvp_cache_graph: bool = True
    drift_layers: list[int] = field(default_factory=lambda: [-1])
    drift_k: int = 16
    landscape_alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    landscape_2d_points: int = 0
    landscape_2d_span: float = 1.0
    quant_bits: list[int] = field(default_factory=lambda: [8, 4, 3])
    quant_group_size: int = 64
    quant_method: str = "rtn"
    seed: int | None = None
    on_finetuned: bool = False
    text: str = "auto"

    def __post_init__(self) -> None:
        for name in self.estimators:
            check_choice("sharpness.estimators entry", name, ESTIMATORS)
        check_choice("sharpness.perturb_mode", self.perturb_mode, PERTURB_MODES)
        check_choice("sharpness.text", self.text, ("auto",) + SPLITS + HUB_TEXTS)
        for key in ("num_batches", "batch_size", "seq_len", "perturb_seeds", "kl_samples", "eig_max_iter", "drift_k"):
            check_range(f"sharpness.{key}", getattr(self, key), 1, example=getattr(GeometryConfig, key))
        check_range("sharpness.trace_probes", self.trace_probes, 2, example=20)  # 2 for a standard error
        check_range("sharpness.kl_sigma", self.kl_sigma, 0, lo_open=True, example="1e-5")
        check_range("sharpness.eig_tol", self.eig_tol, 0, lo_open=True, example="1e-3")
        for gamma in self.perturb_gammas:
            check_range("sharpness.perturb_gammas entry", gamma, 0, lo_open=True, example="[0.05,0.1]")
        check_range("sharpness.landscape_2d_points", self.landscape_2d_points, 0, example=11)
        check_range("sharpness.landscape_2d_span", self.landscape_2d_span, 0, lo_open=True, example=1.0)
        for bits in self.quant_bits:
            check_range("sharpness.quant_bits entry", bits, min(QUANT_BITS), max(QUANT_BITS), example="[8,4,3]")
        if "quantization" in self.estimators and not self.quant_bits:
            raise ConfigError("sharpness.quant_bits is empty: pass e.g. sharpness.quant_bits=[8,4,3]")
        check_range("sharpness.quant_group_size", self.quant_group_size, 0, example=64)
        check_choice("sharpness.quant_method", self.quant_method, QUANT_METHODS)


@dataclass
class LoggerConfig:
    """The ``logger`` config group (``conf/logger/{wandb,none}.yaml``)."""

    kind: str = "wandb"  # wandb | none
    project: str = "overtraining"
    entity: str = ""  # W&B team or user; "" = the key's default entity
    mode: str = "auto"  # auto | offline | online | disabled
    dir: str = ""  # where W&B writes its run folder; "" = the cell's run dir

    def __post_init__(self) -> None:
        check_choice("logger.kind", self.kind, LOGGER_KINDS)
        check_choice("logger.mode", self.mode, LOGGER_MODES)


@dataclass
class CorpusConfig:
    """Pretraining text: ``embedded`` (stdlib), ``local`` (a .txt/.jsonl path) or ``hub`` (a data set)."""

    source: str = "embedded"
    path: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        check_choice("pretrain.corpus.source", self.source, CORPUS_SOURCES)


@dataclass
class PretrainConfig:
    """One controlled-pretraining recipe (the schema of ``conf/pretrain.yaml`` and ``pretrain:``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    lr: float = 3e-3
    batch_size: int = 16
    seq_len: int = 256
    budgets: list[str] = field(default_factory=lambda: list(EMBEDDED_BUDGETS))
    horizon: str = ""
    cooldown_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    out_dir: str = ""
    cache_dir: str = ".cache/overtraining"
    eval_batches: int = 4
    state_every: int = 200
    stop_after_steps: int = 0  # > 0: stop there, as a preempted job would (tests, debugging)
    sharpness_estimators: list[str] = field(default_factory=list)  # e.g. [kl]: probe every checkpoint
    optimizer: str = "adamw"  # adamw | sam (sharpness-aware minimization around AdamW; Foret et al. 2021)
    sam_rho: float = 0.05  # SAM's ascent radius: the gradient is taken at theta + rho * g / ||g||

    def __post_init__(self) -> None:
        check_range("pretrain.lr", self.lr, 0, lo_open=True, example="3e-3")
        for key in ("batch_size", "seq_len", "eval_batches", "state_every"):
            check_range(f"pretrain.{key}", getattr(self, key), 1, example=getattr(PretrainConfig, key))
        check_range("pretrain.cooldown_ratio", self.cooldown_ratio, 0, 1, example=0.1)
        check_range("pretrain.weight_decay", self.weight_decay, 0, example=0.0)
        check_range("pretrain.stop_after_steps", self.stop_after_steps, 0, example=0)
        check_choice("pretrain.optimizer", self.optimizer, OPTIMIZERS)
        check_range("pretrain.sam_rho", self.sam_rho, 0, 1, lo_open=True, example=0.05)
        if not self.budgets:
            raise ConfigError("pretrain.budgets is empty: pass e.g. pretrain.budgets='[1M,2M]'")
        for b in [*self.budgets, *([self.horizon] if self.horizon else [])]:
            parse_token_label(b)
        for name in self.sharpness_estimators:
            check_choice("pretrain.sharpness_estimators entry", name, ESTIMATORS)

    def resolved_out_dir(self) -> Path:
        """``out_dir``, else ``<cache_dir>/trajectories/embedded`` (``embedded-sam`` for SAM pretraining)."""
        if self.out_dir:
            return Path(self.out_dir)
        return Path(self.cache_dir) / "trajectories" / ("embedded" if self.optimizer == "adamw" else "embedded-sam")

    def validate(self) -> None:
        """Checks what needs the file system: a local corpus file must exist."""
        if self.corpus.source == "local" and not Path(self.corpus.path).is_file():
            raise FileNotFoundError(
                f"pretrain.corpus.path={self.corpus.path!r} does not exist: point it at a .txt or .jsonl file"
            )


@dataclass
class MitigationConfig:
    """One mitigation of forgetting applied in SFT (``mitigation`` group; docs/mitigations.md).

    Attributes:
        name: none | replay | l2 | ewc | sam | wise.
        strength: the mitigation's knob: replay: the fraction f of every update's trained
            tokens that are pretraining-like text (0 <= f < 1); l2: lambda of
            lambda * ||theta - theta_base||^2; ewc: lambda of
            lambda * sum_i F_i (theta_i - theta_base,i)^2; sam: the ascent radius rho.
            none and wise take no strength (a given one is set to 0).
        alphas: wise only: the interpolation grid theta_base + alpha (theta_ft - theta_base),
            each alpha evaluated with the cell's eval group.
        fisher_batches: ewc only: batches of pretraining-like text the diagonal Fisher averages.
        fisher_normalize: ewc only: divide F by its mean over all parameters, so that a
            lambda weighs the average parameter as L2-SP's does.
        batch_size: sequences per Fisher batch.
        seq_len: tokens per replay row and per Fisher sequence.
        replay_source: the pretraining-like text of replay and of the Fisher: auto (the
            embedded corpus's train split for the project's own and local checkpoints,
            ``hub_corpus`` for Hub checkpoints) | embedded | hub.
        hub_corpus: a Hub data set with a ``text`` column (replay_source hub, or auto with a
            Hub checkpoint); NeelNanda/pile-10k is a 10K-document sample of the Pile, the
            pretraining data of Pythia.
    """

    name: str = "none"
    strength: float = 0.0
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    fisher_batches: int = 8
    fisher_normalize: bool = True
    batch_size: int = 8
    seq_len: int = 128
    replay_source: str = "auto"
    hub_corpus: str = "NeelNanda/pile-10k"

    def __post_init__(self) -> None:
        check_choice("mitigation.name", self.name, MITIGATIONS)
        check_choice("mitigation.replay_source", self.replay_source, REPLAY_SOURCES)
        check_range("mitigation.fisher_batches", self.fisher_batches, 1, example=8)
        check_range("mitigation.batch_size", self.batch_size, 1, example=8)
        check_range("mitigation.seq_len", self.seq_len, 2, example=128)
        for alpha in self.alphas:
            check_range("mitigation.alphas entry", alpha, 0, 1, example="[0,0.5,1]")
        if self.name in ("none", "wise"):
            # no knob: a strength swept across mitigations (-m mitigation=none,l2 mitigation.strength=0.1)
            # is ignored here, so the plain-SFT baseline runs in the same sweep
            self.strength = 0.0
        if self.name == "replay":
            check_range("mitigation.strength", self.strength, 0, 0.99, example=0.05)
        elif self.name in ("l2", "ewc", "sam"):
            check_range("mitigation.strength", self.strength, 0, example={"sam": 0.05}.get(self.name, 0.1))
        if self.name == "wise" and not self.alphas:
            raise ConfigError("mitigation.alphas is empty: pass e.g. mitigation.alphas=[0,0.25,0.5,0.75,1]")

    @property
    def label(self) -> str:
        """``none``, ``wise`` or ``<name> <strength>`` (e.g. ``replay 0.05``), for records and the report."""
        return self.name if self.name in ("none", "wise") else f"{self.name} {self.strength:g}"


@dataclass
class LaunchConfig:
    """How a sweep runs its cells (not part of a cell's identity)."""

    skip_done: bool = True  # a cell whose record exists is not run again
    rerun_failed: bool = False  # rerun cells whose record says failed/diverged
    dry_run: bool = False  # only list the cells that would run


@dataclass
class CellConfig:
    """One cell: one checkpoint x one SFT recipe (``python -m overtraining.run``).

    ``seed`` governs every random choice of the cell: the groups' own seeds
    (``trainer.seed``, ``sharpness.seed``, ``sft_data.seed``) left at None take it, so
    ``seed=1`` alone gives a replica, and ``trainer.seed=5`` still overrides one group.
    ``pretrain.seed`` is the trajectory's and stays apart (another value is another
    trajectory, pretrained into its own directory).
    """

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
    mitigation: MitigationConfig = field(default_factory=MitigationConfig)
    lr: float = 1e-3
    seed: int = 0
    cache_dir: str = ".cache/overtraining"
    experiment: str = ""  # set by experiment presets, for the report
    sweep_name: str = "default"  # names multirun/<sweep_name>/ and the W&B group

    def __post_init__(self) -> None:
        check_range("lr", self.lr, 0, 1, lo_open=True, example="1e-4")
        check_range("seed", self.seed, 0, example=0)
        for group in (self.trainer, self.sharpness, self.sft_data):
            if group.seed is None:
                group.seed = self.seed
        check_mitigation(self.mitigation, self.trainer)

    def seeds(self) -> dict[str, int]:
        """Every seed the cell uses, for the record."""
        return {
            "seed": self.seed,
            "trainer.seed": self.trainer.seed,
            "sharpness.seed": self.sharpness.seed,
            "sft_data.seed": self.sft_data.seed,
            "pretrain.seed": self.pretrain.seed,
        }


def check_mitigation(m: MitigationConfig, trainer: TrainerConfig) -> None:
    """Refuses a mitigation that cannot run with this trainer, before any work, with the reason.

    - l2 / ewc with ``trainer.method=lora``: LoRA trains adapters and never moves the base
      weights, so theta - theta_base is not a parameter the penalty could pull back;
    - l2 / ewc with ZeRO-3: each rank holds a shard of theta, the penalty needs all of it;
    - sam with DeepSpeed: the two-pass step reads the full gradient between backward and
      step, which ZeRO reduces and partitions inside its own step.
    """
    ds = trainer.deepspeed
    zero3 = ds == "zero3" or (ds.endswith(".json") and _zero_stage(Path(ds)) == 3)
    if m.name in ("l2", "ewc") and trainer.method == "lora":
        raise ConfigError(
            f"mitigation={m.name} with trainer.method=lora is meaningless: LoRA leaves the base weights where they "
            "are, so there is no theta - theta_base to penalise; use trainer.method=full (LoRA is its own mitigation)"
        )
    if m.name in ("l2", "ewc") and zero3:
        raise ConfigError(
            f"mitigation={m.name} with ZeRO-3 is not supported: the penalty needs every parameter, which ZeRO-3 "
            "shards over ranks; use trainer.deepspeed=zero2"
        )
    if m.name == "sam" and ds:
        raise ConfigError(
            "mitigation=sam with trainer.deepspeed is not supported: SAM's two-pass step needs the full gradient "
            "between backward and step, which DeepSpeed reduces and partitions inside its own step; use the plain "
            "trainer (trainer=cpu or trainer=gpu)"
        )


def _zero_stage(path: Path) -> int | None:
    """The ZeRO stage of a DeepSpeed JSON file (None when unreadable)."""
    import json

    try:
        return int(json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
