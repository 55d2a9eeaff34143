"""Cost of a Hessian-vector product against a gradient, and Lanczos's HVP count.

On demand, not part of the test suite::

    python benchmarks/bench_hvp.py                                # tiny byte GPT-NeoX, CPU
    python benchmarks/bench_hvp.py --costs                        # + measure_checkpoint costs
    python benchmarks/bench_hvp.py --hidden 768 --layers 12 --heads 12 --device cuda  # ~100M
    python benchmarks/bench_hvp.py --model EleutherAI/pythia-160m --revision step143000 --device cuda
    python benchmarks/bench_hvp.py --model .cache/overtraining/checkpoints/smollm2-135m \
        --batch 2 --seq 64 --repeats 3 --lanczos-max-iter 0          # CPU, SmolLM2-135M

The model is a GPT-NeoX over bytes (vocab 260) trained ``--train-steps`` AdamW steps on
the standard library's Python source (so the curvature is not that of the random init),
or, with ``--model`` (a Hub repo at ``--revision``, or a local directory), that pretrained
checkpoint in fp32, untrained here, on the same source tokenized by its own tokenizer.
Timings are medians over ``--repeats`` on one batch of ``--batch`` x ``--seq`` tokens,
all with the math SDPA kernel in fp32:

- grad: forward + backward.
- hvp double-backward: forward + backward(create_graph) + backward (``model_hvp``,
  ``cache_graph=False``); cached: the last backward only (``cache_graph=True``).
- hvp jvp(grad): torch.func forward-over-reverse, the alternative we did not pick.

Lanczos row: HVPs until the top Ritz value is within 1% of its value at a tight
tolerance (1e-6), and HVPs the default tolerance (1e-3) stops at.
"""

from __future__ import annotations

import argparse
import statistics
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call, grad, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedModel

from overtraining.checkpoints import ResolvedCheckpoint
from overtraining.config import GeometryConfig, ModelConfig
from overtraining.geometry.measure import measure_checkpoint
from overtraining.geometry.sharpness import lanczos_top_eigenvalue, model_hvp
from overtraining.models import load_model, load_tokenizer


def stdlib_bytes(n: int) -> torch.Tensor:
    """The first ``n`` bytes of the standard library's sorted ``*.py`` files."""
    chunks, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunks.append(path.read_bytes())
        total += len(chunks[-1])
        if total >= n:
            break
    return torch.frombuffer(bytearray(b"".join(chunks)[:n]), dtype=torch.uint8).long()


def stdlib_tokens(n: int, tokenizer) -> torch.Tensor:
    """The first ``n`` tokens of the same source, tokenized by a checkpoint's tokenizer."""
    text = bytes(stdlib_bytes(8 * n).tolist()).decode("utf-8", errors="replace")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return torch.tensor(ids, dtype=torch.long)


def load_checkpoint(args: argparse.Namespace) -> tuple[PreTrainedModel, object]:
    """``--model`` (local dir, or Hub repo at ``--revision``) in fp32 with eager attention, and its tokenizer."""
    local = Path(args.model).is_dir()
    ckpt = ResolvedCheckpoint(args.model, args.model, None if local else args.revision, tokens=0)
    cfg = ModelConfig(name="bench", dtype="float32", attn_implementation="eager")  # double backward: no fused SDPA
    return load_model(ckpt, cfg, torch.device(args.device)), load_tokenizer(ckpt)


def make_batches(data: torch.Tensor, num: int, batch: int, seq: int, device: str) -> list[dict[str, torch.Tensor]]:
    """Consecutive (batch, seq) windows of ``data`` as causal-LM batches."""
    ids = data[: num * batch * seq].view(num, batch, seq).to(device)
    return [{"input_ids": x, "labels": x, "attention_mask": torch.ones_like(x)} for x in ids]


def build_model(args: argparse.Namespace) -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=260, hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden, max_position_embeddings=max(args.seq, 256),
    )  # fmt: skip
    return GPTNeoXForCausalLM(config).to(args.device)


def train(model: GPTNeoXForCausalLM, batches: list[dict[str, torch.Tensor]], steps: int) -> float:
    """A few AdamW steps (lr 2e-3) cycling over ``batches``; returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def median_time(fn: Callable[[], object], repeats: int, device: str) -> float:
    """Median wall time (s) of ``fn`` after one warm-up call."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_hvps(model: PreTrainedModel, batch: dict[str, torch.Tensor], args: argparse.Namespace) -> dict[str, float]:
    names, params = zip(*[(n, p.detach().requires_grad_()) for n, p in model.named_parameters()], strict=True)
    v = tuple(torch.randn_like(p) for p in params)

    def loss_fn(ps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return functional_call(model, dict(zip(names, ps, strict=True)), args=(), kwargs=batch).loss

    uncached, _ = model_hvp(model, [batch], cache_graph=False)
    cached, _ = model_hvp(model, [batch], cache_graph=True)
    fns = {
        "grad": lambda: torch.autograd.grad(loss_fn(params), params),
        "hvp double-backward": lambda: uncached(list(v)),
        "hvp double-backward, cached graph": lambda: cached(list(v)),
        "hvp jvp(grad) (torch.func)": lambda: jvp(grad(loss_fn), (params,), (v,))[1],
    }
    with sdpa_kernel(SDPBackend.MATH):
        return {name: median_time(fn, args.repeats, args.device) for name, fn in fns.items()}


def lanczos_counts(
    model: PreTrainedModel, batches: list[dict[str, torch.Tensor]], max_iter: int = 80
) -> tuple[float, int, int]:
    """(converged top eigenvalue, HVPs to reach 1% of it, HVPs at the default tolerance)."""
    hvp, params = model_hvp(model, batches)
    tight = lanczos_top_eigenvalue(hvp, params, tol=1e-6, max_iter=max_iter)
    top = tight.value
    within = next(i + 1 for i, h in enumerate(tight.history) if abs(h - top) <= 0.01 * abs(top))
    default = lanczos_top_eigenvalue(hvp, params, tol=GeometryConfig().eig_tol, max_iter=max_iter)
    return top, within, default.num_hvps


def checkpoint_costs(model: PreTrainedModel, data: torch.Tensor, device: str) -> dict[str, float]:
    """Seconds of ``measure_checkpoint`` with the default and full configs (4 x 8 x 128)."""
    batches = make_batches(data[-4 * 8 * 128 :], 4, 8, 128, device)  # held out from training
    out = {}
    for name, estimators in [("default", ["perturbation", "kl"]), ("perturbation", ["perturbation"]), ("kl", ["kl"]),
                             ("hessian_top", ["hessian_top"]), ("hessian_trace", ["hessian_trace"])]:  # fmt: skip
        start = time.perf_counter()
        measure_checkpoint(model, batches, GeometryConfig(estimators=estimators))
        out[name] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="", help="a Hub repo or local checkpoint dir (default: a tiny byte model)")
    parser.add_argument("--revision", default=None, help="Hub revision of --model (e.g. step143000)")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lanczos-max-iter", type=int, default=80, help="0 skips the Lanczos row")
    parser.add_argument("--costs", action="store_true", help="also time measure_checkpoint per estimator")
    args = parser.parse_args()

    if args.model:
        model, tokenizer = load_checkpoint(args)
        data = stdlib_tokens(64 * args.batch * args.seq, tokenizer)
        what = f"{args.model}@{args.revision or 'main'}"
    else:
        data = stdlib_bytes(64 * args.batch * args.seq)
        model = build_model(args)
        train(model, make_batches(data, 16, args.batch, args.seq, args.device), args.train_steps)
        what = f"GPT-NeoX hidden {args.hidden}, {args.layers} layers, trained {args.train_steps} steps"
    model.eval()
    probe = make_batches(data[-args.batch * args.seq * 2 :], 2, args.batch, args.seq, args.device)
    with torch.no_grad():
        loss = float(model(**probe[0]).loss)
    size = sum(p.numel() for p in model.parameters())
    print(f"{what}, {size / 1e6:.2f}M params, batch {args.batch} x {args.seq}, {args.device}, "
          f"{torch.get_num_threads()} threads; held-out loss {loss:.3f}")  # fmt: skip

    times = time_hvps(model, probe[0], args)
    print(f"\n| {'operation':<36} | {'ms':>9} | {'x grad':>6} |\n|{'-' * 38}|{'-' * 11}|{'-' * 8}|")
    for name, seconds in times.items():
        print(f"| {name:<36} | {seconds * 1e3:9.1f} | {seconds / times['grad']:6.2f} |")

    if args.lanczos_max_iter:
        top, within, default = lanczos_counts(model, probe, args.lanczos_max_iter)
        print(f"\nLanczos on {len(probe)} batches: top eigenvalue {top:.4g}; HVPs to within 1%: {within}; "
              f"HVPs at eig_tol={GeometryConfig().eig_tol:g}: {default}")  # fmt: skip

    if args.costs:
        print(f"\n| {'measure_checkpoint (4 x 8 x 128)':<36} | {'s':>9} |\n|{'-' * 38}|{'-' * 11}|")
        for name, seconds in checkpoint_costs(model, data, args.device).items():
            print(f"| {name:<36} | {seconds:9.2f} |")


if __name__ == "__main__":
    main()
