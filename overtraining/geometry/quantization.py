"""Quantization sensitivity of a checkpoint: the loss rise when its weights are rounded to b bits.

Post-training weight quantization is a perturbation of a fixed, deterministic kind, measured
like the Gaussian noise of ``perturbation.py``: the loss on the fixed geometry batches with
the quantized weights against the unquantized loss, per bit width (Kumar et al. 2024,
"Scaling laws for precision": the degradation grows with tokens per parameter;
Catalan-Tatjer, Ajroldi and Geiping 2025: it jumps when the LR decays).

**RTN** (``quant_method=rtn``, the default; CPU and GPU): weight-only, symmetric,
round-to-nearest, one scale per group of ``g`` consecutive weights along a row's input
dimension (the layout of ``nn.Linear.weight``, shape ``(out, in)``)::

    q_max  = 2^(b-1) - 1                       # 127 for int8, 7 for int4, 3 for int3
    s_k    = max_{j in group k} |w_j| / q_max  # per group scale
    q_j    = clamp(round(w_j / s_k), -q_max, q_max)
    Q(w)_j = s_k * q_j                         # the dequantized weight the loss sees

so that ``|Q(w)_j - w_j| <= s_k / 2`` for every weight (no clipping: ``|w_j| <= q_max s_k``).
``g = 0`` is one group per output row (per channel). A row whose length is not a multiple of
``g`` gets a last, shorter group (zero padding, which changes no group maximum). Round half to
even (``torch.round``); an all-zero group keeps scale ``eps`` and stays exactly zero.

Which tensors: the weight of every ``nn.Linear`` (attention, MLP and the LM head), as
torchao's ``quantize_`` selects them by default; embeddings, norms and biases stay in
fp32. A tied LM head is the embedding matrix: it is quantized once (``id`` de-duplication),
so the input embedding sees the quantized matrix too, as it would in a deployed model.

Library: torchao (``torchao.quantization.quant_primitives``: ``choose_qparams_affine`` with
``MappingType.SYMMETRIC`` and ``quant_min = -q_max``, ``quant_max = q_max`` gives
``s = max|w| / ((q_max - q_min) / 2) = max|w| / q_max``; ``quantize_affine`` computes
``clamp(round(w * (1 / s)), q_min, q_max)``; ``dequantize_affine`` gives ``q * s``). Chosen
over optimum-quanto and hqq because, on torch 2.13 CPU, its primitives are plain torch ops
that take any bit width from 2 to 8 and any block size: quanto's integer weight types are
qint2, qint4 and qint8 only (no int3), its grouped int4 weights are affine (scale and
shift); hqq's RTN is affine too (a zero point per group) and by default optimises that
zero point; neither reproduces the symmetric formula above. torchao's compiled CUDA
extensions fail to load on a CPU build of torch, which it logs (``overtraining/__init__.py``
filters those lines) and which these primitives do not need.

The model is "fake-quantized": the dequantized fp32 weights are written into the
parameters, the loss is measured, and the parameters are restored bit for bit from a
snapshot (``perturbation.restored``).

**GPTQ** (``quant_method=gptq``, GPU only): torchao's prototype GPTQ
(``torchao.prototype.gptq.GPTQConfig``: observe the Hessian ``H = 2 X X^T`` of every linear
layer's inputs on the geometry batches, then quantize column by column, each column's
rounding error compensated on the not yet quantized columns through ``H^-1``). int4 uses
``Int4WeightOnlyConfig(group_size=g)`` (asymmetric, needs CUDA and the ``mslk`` package),
int8 ``Int8WeightOnlyConfig`` (per row). It runs on a deep copy (its tensors are subclasses,
not restorable in place) and calibrates on the same batches it is scored on, so its loss is
an in-sample, optimistic number. Without CUDA it raises ``RuntimeError`` naming the fix.

Example::

    result = quantization_sensitivity(model, batches, bits=[8, 4, 3], group_size=64)
    result.metrics()["quant/bits=4/delta_loss"]
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overtraining.geometry.perturbation import Batch, evaluate_loss, on_model_device, restore_, restored

log = logging.getLogger(__name__)

GPTQ_BITS = (4, 8)


def _torchao_primitives():
    """torchao's affine quantization primitives (its import notices are filtered in ``overtraining``)."""
    try:
        from torchao.quantization import quant_primitives
    except ImportError as err:
        raise ImportError("the quantization probe needs torchao: pip install 'torchao>=0.12'") from err
    return quant_primitives


def q_max(bits: int) -> int:
    """The largest integer of the symmetric b-bit grid, 2^(b-1) - 1 (127, 7, 3 for b = 8, 4, 3)."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits}: the RTN probe supports 2 to 8 bits")
    return 2 ** (bits - 1) - 1


@torch.no_grad()
def rtn_quantize(weight: Tensor, bits: int, group_size: int) -> Tensor:
    """Q(w): symmetric round-to-nearest with one scale per group (module docstring), in fp32.

    Args:
        weight: a tensor whose last dimension is the input dimension (``nn.Linear.weight``).
        bits: bit width b (2-8).
        group_size: weights per group along the last dimension; 0 = the whole row.

    Returns:
        The dequantized weights ``s_k * q_j``, fp32, the shape of ``weight``.
    """
    qp = _torchao_primitives()
    top = q_max(bits)
    if group_size < 0:
        raise ValueError(f"group_size={group_size} must be >= 0 (0 = one group per row)")
    rows = weight.detach().float().reshape(-1, weight.shape[-1])
    n = rows.shape[1]
    g = n if group_size == 0 else group_size
    padded = F.pad(rows, (0, (-n) % g))
    block = (1, g)
    scale, zero = qp.choose_qparams_affine(padded, qp.MappingType.SYMMETRIC, block, torch.int8, -top, top)
    q = qp.quantize_affine(padded, block, scale, zero, torch.int8, -top, top)
    out = qp.dequantize_affine(q, block, scale, zero, torch.int8, -top, top, output_dtype=torch.float32)
    return out[:, :n].reshape(weight.shape)


def quantizable_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weight of every ``nn.Linear``, each tensor once (a tied LM head is the embedding matrix)."""
    seen, out = set(), []
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            out.append(module.weight)
    return out


@dataclass(frozen=True)
class QuantizationResult:
    """Losses of one checkpoint with its weights quantized.

    Attributes:
        base_loss: unquantized loss (nats).
        bits: bit widths, in the order given.
        losses: loss with the weights quantized to ``bits[i]``.
        weight_rel_errors: ||Q(theta) - theta|| / ||theta|| over the quantized tensors.
        weight_fraction: quantized parameters / all unique parameters.
        method: ``rtn`` or ``gptq``.
    """

    base_loss: float
    bits: tuple[int, ...]
    losses: tuple[float, ...]
    weight_rel_errors: tuple[float, ...]
    weight_fraction: float
    method: str = "rtn"

    def metrics(self) -> dict[str, float]:
        """``quant/base_loss``, ``quant/weight_fraction`` and, per bit width B,
        ``quant/bits=B/{loss,delta_loss,weight_rel_error}`` (delta against the unquantized loss)."""
        out = {"quant/base_loss": self.base_loss, "quant/weight_fraction": self.weight_fraction}
        for bits, loss, err in zip(self.bits, self.losses, self.weight_rel_errors, strict=True):
            out[f"quant/bits={bits}/loss"] = loss
            out[f"quant/bits={bits}/delta_loss"] = loss - self.base_loss
            out[f"quant/bits={bits}/weight_rel_error"] = err
        return out


def _weight_fraction(model: nn.Module, weights: Sequence[Tensor]) -> float:
    total = sum(p.numel() for p in model.parameters())
    return sum(w.numel() for w in weights) / total if total else 0.0


@torch.no_grad()
def quantization_sensitivity(
    model: nn.Module, batches: Sequence[Batch], bits: Sequence[int], group_size: int = 64, method: str = "rtn"
) -> QuantizationResult:
    """Loss with every linear weight quantized to each bit width; the model is left bit-identical.

    Args:
        model: a causal LM (its own dtype is used for the loss; pass an fp32 model).
        batches: fixed batches (``input_ids``, ``labels``, optional ``attention_mask``).
        bits: bit widths.
        group_size: weights per quantization group (0 = per row).
        method: ``rtn`` (module docstring) or ``gptq`` (CUDA only).

    Returns:
        A QuantizationResult.
    """
    if method == "gptq":
        return gptq_sensitivity(model, batches, bits, group_size)
    if method != "rtn":
        raise ValueError(f"unknown quantization method {method!r}: choose rtn or gptq")
    batches = on_model_device(model, batches)
    weights = quantizable_weights(model)
    base_loss = evaluate_loss(model, batches)
    losses, errors = [], []
    with restored(weights) as snapshot:
        norm = math.sqrt(sum(float(w.float().pow(2).sum()) for w in snapshot))
        for b in bits:
            sq = 0.0
            for p, w in zip(weights, snapshot, strict=True):
                qw = rtn_quantize(w, b, group_size)
                sq += float((qw - w.float()).pow(2).sum())
                p.copy_(qw.to(p.dtype))
            losses.append(evaluate_loss(model, batches))
            errors.append(math.sqrt(sq) / norm if norm else 0.0)
            restore_(weights, snapshot)
    return QuantizationResult(
        base_loss, tuple(bits), tuple(losses), tuple(errors), _weight_fraction(model, weights), "rtn"
    )


def _gptq_config(bits: int, group_size: int, step: str):
    """torchao's GPTQConfig for int4 (grouped) or int8 (per row)."""
    from torchao.prototype.gptq import GPTQConfig
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    base = Int4WeightOnlyConfig(group_size=group_size or 128) if bits == 4 else Int8WeightOnlyConfig()
    return GPTQConfig(step=step, base_config=base)


@torch.no_grad()
def gptq_sensitivity(
    model: nn.Module, batches: Sequence[Batch], bits: Sequence[int], group_size: int = 64
) -> QuantizationResult:
    """GPTQ (torchao prototype) on a bf16 CUDA copy per bit width; the model itself is not touched.

    torchao's int4 kernels take bf16 activations, so the copies run in bf16 and
    ``base_loss`` is the bf16 copy's unquantized loss (the delta is GPTQ's alone). Not run on
    a GPU by this project's sessions yet: its test is marked ``gpu``.

    Raises:
        RuntimeError: without CUDA, or when torchao's GPTQ (or ``mslk`` for int4) is missing.
        ValueError: for a bit width other than 4 or 8.
    """
    bad = [b for b in bits if b not in GPTQ_BITS]
    if bad:
        raise ValueError(f"sharpness.quant_bits={list(bits)}: GPTQ supports {list(GPTQ_BITS)}; use quant_method=rtn")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "sharpness.quant_method=gptq needs a CUDA GPU (torchao's GPTQ packs int4 with CUDA kernels): "
            "use sharpness.quant_method=rtn on CPU"
        )
    _torchao_primitives()
    from torchao.quantization import quantize_

    base_model = copy.deepcopy(model).to(torch.device("cuda"), torch.bfloat16)
    batches = on_model_device(base_model, batches)
    base_loss = evaluate_loss(base_model, batches)
    weights = quantizable_weights(base_model)
    originals, seen = {}, set()  # linear module name -> its fp32 weight; a tied head once
    for name, module in base_model.named_modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            originals[name] = module.weight.detach().float().clone()
    losses, errors = [], []
    for b in bits:
        q_model = copy.deepcopy(base_model)
        try:
            quantize_(q_model, _gptq_config(b, group_size, "observe"), filter_fn=_is_linear)
            for batch in batches:
                q_model(**batch)
            quantize_(q_model, _gptq_config(b, group_size, "convert"), filter_fn=_is_linear)
        except (ImportError, ValueError) as err:
            raise RuntimeError(f"torchao GPTQ failed ({err}): pip install 'torchao>=0.15' mslk, or use rtn") from err
        losses.append(evaluate_loss(q_model, batches))
        modules = dict(q_model.named_modules())
        sq = total = 0.0
        for name, ref in originals.items():
            q = modules[name].weight
            total += float(ref.pow(2).sum())
            # NaN when the quantized tensor type cannot dequantize
            sq += float((q.dequantize().float() - ref).pow(2).sum()) if hasattr(q, "dequantize") else float("nan")
        errors.append(math.sqrt(sq / total) if total else 0.0)
    return QuantizationResult(
        base_loss, tuple(bits), tuple(losses), tuple(errors), _weight_fraction(base_model, weights), "gptq"
    )


def _is_linear(module: nn.Module, _fqn: str) -> bool:
    return isinstance(module, nn.Linear)
