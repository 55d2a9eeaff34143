"""SFT throughput: ``overtraining.training.sft.finetune`` against a plain ``transformers.Trainer``.

Same model (a fresh byte-level GPT-NeoX from one seed), same embedded-math examples, same
batch size, learning rate and hardware, in one process. Throughput is real (non-padding)
input tokens per second from the end of step ``--warmup`` to the last step (set-up and
the first steps do not count); each line is the best of ``--repeats`` interleaved runs,
against noise from shared cores.

* ``transformers.Trainer (padded)``: as people usually run it: right-padded batches
  (``DataCollatorForSeq2Seq``), ``bf16=True`` on CUDA, its default optimizer.
* ``finetune (padded)``: the same batches through our loop (fp32 weights with bf16
  autocast on CUDA, SDPA, fused AdamW on CUDA, LM head only on trained positions).
* ``finetune (packed)``: rows of ``--max-length`` with attention kept within each example,
  as many rows as hold the tokens of ``--batch`` examples, so every line trains on about
  the same tokens per step (else packing would also win by amortizing the optimizer step).

``--vocab 50304`` gives the tiny model a Pythia-sized LM head (token ids stay bytes). The
GPU target is a ratio >= 1.3. ``--model`` measures a real checkpoint instead (a Hub repo
with ``--revision``, or a local directory) with its own tokenizer. On CUDA each line also
gives the MFU: tokens/s x FLOPs per token (6 x the parameters in matmuls, LM head included,
plus the attention term 12 x layers x hidden x mean sequence length, PaLM's accounting)
over the GPU's dense bf16 peak (``--peak-tflops``, else a table of known GPUs).

    python benchmarks/bench_sft.py                                   # CPU, tiny model
    python benchmarks/bench_sft.py --vocab 50304 --steps 20          # CPU, Pythia-sized vocabulary
    python benchmarks/bench_sft.py --device cuda --hidden 512 --layers 8 --batch 16 --steps 100
    python benchmarks/bench_sft.py --device cuda --model EleutherAI/pythia-160m --revision step143000 --batch 16
    python benchmarks/bench_sft.py --model .cache/overtraining/checkpoints/smollm2-135m \
        --steps 6 --warmup 2 --batch 2 --max-length 256 --repeats 1   # CPU, SmolLM2-135M
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

from overtraining.checkpoints import ResolvedCheckpoint
from overtraining.config import LRScheduleConfig, ModelConfig, SFTDataConfig, TrainerConfig
from overtraining.data.sft_data import load_sft_data
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model, load_model, load_tokenizer
from overtraining.training.sft import finetune

# Dense bf16 peak TFLOP/s (no sparsity) of GPUs by a substring of their CUDA device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def _checkpoint(args: argparse.Namespace) -> ResolvedCheckpoint:
    """``--model`` as a checkpoint: a local directory, or a Hub repo at ``--revision``."""
    local = Path(args.model).is_dir()
    return ResolvedCheckpoint(args.model, args.model, None if local else args.revision, tokens=0)


def _tokenizer(args: argparse.Namespace):
    return load_tokenizer(_checkpoint(args)) if args.model else byte_tokenizer()


def _model(args: argparse.Namespace) -> torch.nn.Module:
    if args.model:  # fp32 weights, as finetune trains them (bf16 autocast on CUDA)
        return load_model(_checkpoint(args), ModelConfig(name="bench", dtype="float32"), torch.device("cpu"))
    cfg = ModelConfig(
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_seq_len=args.max_length,
    )
    model = build_tiny_model(cfg, seed=0)
    if args.vocab:  # a Pythia-sized LM head (ids stay bytes): what sparse logits save on real models
        model.resize_token_embeddings(args.vocab, mean_resizing=False)
    return model


def _throughput(times: list[float], tokens: list[int], warmup: int) -> float:
    """Tokens per second from the end of step ``warmup`` to the last step (1-based steps)."""
    return sum(tokens[warmup:]) / (times[-1] - times[warmup - 1])


def flops_per_token(model: torch.nn.Module, mean_seq: float) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 x layers x hidden x sequence length."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    return 6 * matmul + 12 * layers * hidden * mean_seq


def peak_flops(args: argparse.Namespace) -> float | None:
    """The device's dense bf16 peak in FLOP/s (``--peak-tflops`` or the table); None on the CPU."""
    if not args.device.startswith("cuda"):
        return None
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    name = torch.cuda.get_device_name(torch.device(args.device))
    return next((tf * 1e12 for key, tf in PEAK_BF16_TFLOPS.items() if key in name), None)


def bench_finetune(args: argparse.Namespace, packing: bool) -> tuple[float, float]:
    tok = _tokenizer(args)
    data = load_sft_data(
        SFTDataConfig(num_train=args.num_train, num_heldout=1, max_length=args.max_length, packing=packing), tok
    )
    batch = args.batch
    if packing:  # as many rows as hold the tokens of `args.batch` examples: the same tokens per step
        mean_tokens = sum(row["num_tokens"] for row in data.train) / len(data.train)
        batch = max(1, round(args.batch * args.mean_example_tokens / mean_tokens))
    cfg = TrainerConfig(
        max_steps=args.steps, batch_size=batch, probe_every=0, checkpoint_every=0, device=args.device, max_grad_norm=1.0
    )
    times, cumulative = [], []

    def on_step(record: dict) -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter())
        cumulative.append(record["tokens"])

    with tempfile.TemporaryDirectory() as work:
        finetune(_model(args), tok, data, args.lr, LRScheduleConfig(), cfg, Path(work), on_step=on_step)
    tokens = [b - a for a, b in zip([0] + cumulative[:-1], cumulative, strict=True)]
    return _throughput(times, tokens, args.warmup), sum(tokens) / len(tokens)


class _Clock(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times = device, []

    def on_step_end(self, args, state, control, **kwargs):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def bench_trainer(args: argparse.Namespace) -> tuple[float, float]:
    tok = _tokenizer(args)
    data = load_sft_data(SFTDataConfig(num_train=args.num_train, num_heldout=1, max_length=args.max_length), tok)
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
    tokens: list[int] = []

    def collate(examples: list[dict]) -> dict:
        batch = pad(examples)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    clock = _Clock(args.device)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            max_steps=args.steps,
            per_device_train_batch_size=args.batch,
            learning_rate=args.lr,
            lr_scheduler_type="constant",
            weight_decay=0.0,
            max_grad_norm=1.0,
            bf16=args.device.startswith("cuda"),
            use_cpu=args.device == "cpu",
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            remove_unused_columns=False,
            seed=0,
        )
        Trainer(
            model=_model(args), args=targs, train_dataset=data.train, data_collator=collate, callbacks=[clock]
        ).train()
    tokens = tokens[: len(clock.times)]
    return _throughput(clock.times, tokens, args.warmup), sum(tokens) / len(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="a Hub repo or local checkpoint dir (default: a tiny byte model)")
    parser.add_argument("--revision", default=None, help="Hub revision of --model (e.g. step143000)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="GPU dense bf16 peak for the MFU")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=0, help="pad the vocabulary to this size (0: 260 bytes)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    what = (
        f"model={args.model}@{args.revision or 'main'}" if args.model else f"hidden={args.hidden} layers={args.layers}"
    )
    vocab = "" if args.model else f" vocab={args.vocab or 260}"
    print(
        f"device={args.device} {what}{vocab} batch={args.batch} steps={args.steps} "
        f"repeats={args.repeats} (best of), {torch.get_num_threads()} threads"
    )
    examples = load_sft_data(
        SFTDataConfig(num_train=args.num_train, num_heldout=1, max_length=args.max_length), _tokenizer(args)
    ).train
    args.mean_example_tokens = sum(len(ex["input_ids"]) for ex in examples) / len(examples)
    model = _model(args)
    per_token, peak = flops_per_token(model, args.mean_example_tokens), peak_flops(args)
    print(
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {per_token / 1e9:.2f} GFLOP "
        f"per token, mean example {args.mean_example_tokens:.0f} tokens"
    )
    del model
    runs = {"trainer": [], "padded": [], "packed": []}
    for _ in range(args.repeats):  # interleaved; the best of each, against noise from shared cores
        runs["trainer"].append(bench_trainer(args))
        runs["padded"].append(bench_finetune(args, packing=False))
        runs["packed"].append(bench_finetune(args, packing=True))
    (hf, hf_step), (plain, plain_step), (packed, packed_step) = (max(r) for r in runs.values())

    def mfu(tokens_per_s: float) -> str:
        return f"{tokens_per_s * per_token / peak:8.1%}" if peak else f"{'-':>8}"

    print(f"{'':32}{'tokens/s':>12}{'tokens/step':>13}{'ratio':>8}{'MFU':>8}")
    print(f"{'transformers.Trainer (padded)':32}{hf:12,.0f}{hf_step:13,.0f}{'':8}{mfu(hf)}")
    print(f"{'finetune (padded)':32}{plain:12,.0f}{plain_step:13,.0f}{plain / hf:8.2f}{mfu(plain)}")
    print(f"{'finetune (packed)':32}{packed:12,.0f}{packed_step:13,.0f}{packed / hf:8.2f}{mfu(packed)}")


if __name__ == "__main__":
    main()
