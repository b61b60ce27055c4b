"""``@triton.jit`` helpers shared by the kernels: dots with fp32 accumulation and rounding casts that also
hold under the CPU interpreter."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
"""log2(e): scores are kept in log2 units (scale * LOG2E) so softmaxes use exp2."""


@triton.jit
def mma(a, b, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr):
    """``tl.dot`` with fp32 accumulation. ``INTERP_BF16`` is set only under the Triton 3.9
    interpreter for bf16, whose numpy ``tl.dot`` returns garbage for bf16 operands; bf16
    products are exact in fp32, so the upcast gives the same result a GPU computes."""
    if INTERP_BF16:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=INPUT_PRECISION)
    return c


@triton.jit
def cast(x, dtype: tl.constexpr, INTERP_BF16: tl.constexpr):
    """``x.to(dtype)``. Under ``INTERP_BF16`` (Triton 3.9 interpreter, bf16 only) x is first
    rounded to the nearest bf16 value, ties to even, with integer bit arithmetic: that
    interpreter truncates fp32 -> bf16 toward zero, a biased error a GPU does not make."""
    if INTERP_BF16:
        bits = x.to(tl.float32).to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def gelu_and_grad(b_h):
    """Exact GELU ``h * Phi(h)`` and its derivative ``Phi(h) + h * phi(h)``."""
    b_cdf = 0.5 * (1.0 + tl.erf(b_h * 0.7071067811865476))
    b_pdf = tl.exp(-0.5 * b_h * b_h) * 0.3989422804014327  # 1 / sqrt(2 pi)
    return b_h * b_cdf, b_cdf + b_h * b_pdf



@triton.jit
def keep_mask(SEED, o_row, o_c, C, drop_p):
    """Dropout keep mask ``[ROWS, C_PAD]``: Philox on the element index, kept with probability 1 - p."""
    seed = tl.load(SEED)
    return tl.rand(seed, o_row[:, None] * C + o_c[None, :]) >= drop_p


FP32_PRECISION_ENV = "HITRS_FAST_FP32_PRECISION"
FP32_PRECISIONS = ("tf32x3", "ieee", "tf32")
"""``tl.dot`` input precisions for fp32 operands; the first is the default: three TF32 tensor-core products,
close to fp32 accuracy (``ieee``: exact fp32 FMA without tensor cores; ``tf32``: one product, about 1e-3
relative error). The interpreter checks the value and computes every dot in fp32 whatever it is."""


def fp32_precision() -> str:
    """The ``tl.dot`` input precision for fp32 operands, from ``HITRS_FAST_FP32_PRECISION`` (default tf32x3)."""
    value = os.environ.get(FP32_PRECISION_ENV, FP32_PRECISIONS[0]).strip().lower()
    if value not in FP32_PRECISIONS:
        raise ValueError(f"{FP32_PRECISION_ENV}={value!r}: expected one of {', '.join(FP32_PRECISIONS)}")
    return value


def input_precision(dtype: torch.dtype) -> str:
    """The ``INPUT_PRECISION`` of :func:`mma` for operands of ``dtype``: 16-bit operands always take the tensor
    cores with fp32 accumulation (the value then does not matter), fp32 ones :func:`fp32_precision`."""
    return fp32_precision() if dtype == torch.float32 else "tf32"
