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
GPU target is a ratio >= 1.3.

    python benchmarks/bench_sft.py                                   # CPU, tiny model
    python benchmarks/bench_sft.py --vocab 50304 --steps 20          # CPU, Pythia-sized vocabulary
    python benchmarks/bench_sft.py --device cuda --hidden 512 --layers 8 --batch 16 --steps 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

from overtraining.config import LRScheduleConfig, ModelConfig, SFTDataConfig, TrainerConfig
from overtraining.data.sft_data import load_sft_data
from overtraining.data.tokenizer import byte_tokenizer
from overtraining.models import build_tiny_model
from overtraining.training.sft import finetune


def _model(args: argparse.Namespace) -> torch.nn.Module:
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


def bench_finetune(args: argparse.Namespace, packing: bool) -> tuple[float, float]:
    tok = byte_tokenizer()
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
    tok = byte_tokenizer()
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

    print(
        f"device={args.device} hidden={args.hidden} layers={args.layers} vocab={args.vocab or 260} "
        f"batch={args.batch} steps={args.steps} repeats={args.repeats} (best of)"
    )
    examples = load_sft_data(
        SFTDataConfig(num_train=args.num_train, num_heldout=1, max_length=args.max_length), byte_tokenizer()
    ).train
    args.mean_example_tokens = sum(len(ex["input_ids"]) for ex in examples) / len(examples)
    runs = {"trainer": [], "padded": [], "packed": []}
    for _ in range(args.repeats):  # interleaved; the best of each, against noise from shared cores
        runs["trainer"].append(bench_trainer(args))
        runs["padded"].append(bench_finetune(args, packing=False))
        runs["packed"].append(bench_finetune(args, packing=True))
    (hf, hf_step), (plain, plain_step), (packed, packed_step) = (max(r) for r in runs.values())
    print(f"{'':32}{'tokens/s':>12}{'tokens/step':>13}{'ratio':>8}")
    print(f"{'transformers.Trainer (padded)':32}{hf:12,.0f}{hf_step:13,.0f}")
    print(f"{'finetune (padded)':32}{plain:12,.0f}{plain_step:13,.0f}{plain / hf:8.2f}")
    print(f"{'finetune (packed)':32}{packed:12,.0f}{packed_step:13,.0f}{packed / hf:8.2f}")


if __name__ == "__main__":
    main()
