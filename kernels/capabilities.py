"""What each Triton kernel accepts, declared once and importable without triton.

The dispatcher (:mod:`hitrs_fast.dispatch`, through the backends of :mod:`hitrs_fast.attention` and
:mod:`hitrs_fast.embedding`) reads these limits to choose a backend before triton is loaded; the kernel
launchers read the same functions to validate their inputs. Every function returns the list of reasons
the kernel cannot take the inputs, ``[]`` when it can (devices are the dispatcher's business).
"""

from __future__ import annotations

import os

import torch

MAX_GRID = 2**31 - 1
"""Programs on grid axis 0 (axes 1 and 2 stop at 65 535, which is why every kernel uses axis 0 only)."""
MIN_COMPUTE_CAPABILITY = (8, 0)
"""bf16 tensor-core dots need Ampere or newer."""

MASK_NONE, MASK_FRAME, MASK_WINDOW = 0, 1, 2
"""The attention kernels' mask kinds: no rule (F-TRS; key padding adds a lengths vector), the frame rule (other
frames), the window rule (frames within a radius)."""
FRAMES_FRAME_MAJOR, FRAMES_JOINT_MAJOR, FRAMES_FROM_IDS = 0, 1, 2
"""Where the frame attention kernels take a token's frame from (``FRAME_SOURCE``): index arithmetic on frame-major
or joint-major tokens, or per-token ids loaded from memory."""

FRAME_ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FRAME_ATTENTION_HEAD_DIMS = (16, 32, 64, 128)
"""Head dims the kernels compile for; the public op pads any other D up to the next of these (zero columns change no
score and give zero output columns, which it slices off)."""
FRAME_ATTENTION_MAX_TOKENS = 4096
"""Largest N the launcher accepts; beyond it the online loop still works but is untested."""
FRAME_ATTENTION_MIN_BLOCK = 16
"""Smallest tile of any config: the launch grid is at most ``B * H * cdiv(N, MIN_BLOCK)`` programs."""
FRAME_ATTENTION_DETERMINISTIC = True
"""No atomics in the backward: two runs give bit-identical gradients."""
FRAME_ATTENTION_KERNEL_ENV = "HITRS_FAST_ATTENTION_KERNEL"
FRAME_ATTENTION_KERNELS = ("resident", "split")
"""The attention kernels: ``resident`` (one program per (sequence, head), K/V and dK/dV on chip) and ``split``
(one program per q- or kv-tile; every shape). ``HITRS_FAST_ATTENTION_KERNEL`` picks one per direction;
``resident`` falls back to ``split`` where it does not fit."""
FRAME_ATTENTION_KERNEL_DEFAULT = "split"
"""Split both ways: measured fastest on the first GPU run (H200, Triton 3.6, bf16, N = 176, D = 64, B = 8192:
forward 3.64 ms split vs 5.69 ms resident, backward 10.6 ms vs 14.2 ms; docs/benchmarks.md). The performance
model (docs/kernels/attention_blocks.md) had predicted the resident backward faster; it stays selectable."""
RESIDENT_MAX_KEYS = 256
"""The resident kernels hold the whole padded key row (next power of two of N) on chip: at most this many."""
RESIDENT_MAX_BYTES = 192 * 1024
"""... and K, V (input dtype) plus the backward's fp32 dK, dV accumulators, ``2 * N_pow2 * D * (itemsize + 4)``
bytes, at most this (bf16 N = 176, D = 64: exactly 192 KiB; fp32 at that shape and D = 128 do not fit)."""

ATTENTION_BLOCK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""dtypes of x (and the output) of the fused block."""
ATTENTION_BLOCK_COMPUTE_DTYPES = (torch.float16, torch.bfloat16)
"""dtypes its dots run in on a GPU. fp32 (tf32x3) is excluded: compiled for sm_90 at the F-TRS shape its
backward stages 512 KiB of operands in shared memory, beyond the 227 KiB a block may use (the CPU
interpreter still runs it, as an exact-arithmetic check)."""
ATTENTION_BLOCK_HEAD_DIMS = (16, 32, 64, 128)
ATTENTION_BLOCK_GPU_MIN_DOT = 64
"""On a GPU the fused block also needs head_dim >= this and C >= this. The first GPU run (H200, Triton 3.6,
2026-11-26) passed at C = 128, D = 64 (the F-TRS shape) and hit an illegal memory access at C = 32, D = 16
(fp16) while autotuning the forward; Triton's Hopper warp-group MMA lowering has open reports of illegal
shared-memory reads for dots with a small dimension (triton-lang/triton issues 10629, 11366). Smaller
widths and heads take the composed block there until a GPU run proves them; the interpreter runs every
size."""
ATTENTION_BLOCK_MAX_WIDTH = 256
"""Largest model width C of the fused block: its ``[ROWS, C]`` fp32 accumulators stay on chip."""
ATTENTION_BLOCK_TILE = 128 * 128
"""Elements of one program's ``[ROWS, next_pow2(C)]`` tile: 128 rows at C <= 128, 64 rows at C <= 256."""
ATTENTION_BLOCK_DETERMINISTIC = True
"""No atomics: LN weight gradients from per-program partials summed in a fixed order; the rest cuBLAS."""

FFN_BLOCK_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""dtypes of x (the residual stream, and the output) of the fused feed-forward sublayer."""
FFN_BLOCK_COMPUTE_DTYPES = (torch.float16, torch.bfloat16)
"""dtypes its dots run in on a GPU; float32 dots (tf32x3) run under the CPU interpreter only, as for the fused
attention sublayer (not compiled or measured for a GPU)."""
FFN_BLOCK_MAX_HIDDEN = 256
"""Largest FFN hidden width: a program keeps ``[BLOCK_M, hidden]`` fp32 tiles of h, GELU(h) and their gradients on
chip (the released widths: 128, 128, 256)."""
FFN_BLOCK_MAX_WIDTH = 4096
"""Largest model width C: the kernel walks C in chunks, so this only bounds the loops."""
FFN_BLOCK_GPU_MIN_DOT = 64
"""On a GPU both widths must be at least this: the sizes of the released model (C 128-512, hidden 128-256); small
dot dimensions hit illegal memory accesses in Triton's Hopper MMA lowering (see ATTENTION_BLOCK_GPU_MIN_DOT)."""
FFN_BLOCK_DETERMINISTIC = True
"""No atomics: bias and LayerNorm gradients from per-program partials summed in a fixed order; weights by cuBLAS."""
FFN_KERNEL_ENV = "HITRS_FAST_FFN"
FFN_KERNELS = ("fused", "composed")
"""The Triton backend's feed-forward sublayer: ``fused`` (one kernel each way, the default: the step model of
docs/benchmarks.md predicts it faster under ``torch.compile``) or ``composed`` (LayerNorm, the two Linear layers,
GELU, dropout and the residual as PyTorch ops, which ``torch.compile`` fuses around cuBLAS)."""

JOINT_EMBEDDING_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
JOINT_EMBEDDING_MAX_CHANNELS = 16
"""Input channels C held in registers per token."""
JOINT_EMBEDDING_MAX_BWD_TILE = 16384
"""Largest ``V_pad * d_pad`` the backward takes: the size of its per-program fp32 dPE accumulator (the frames
kernel keeps three such tiles on 256 threads, the tokens kernel one, as a tensor-core accumulator on 128 threads).
At the model's 32 * 128 neither spills on sm_90; at this limit they still compile and run correctly, spilling
registers to local memory."""


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def resident_fits(n: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the resident attention kernels take ``[B, H, N, head_dim]`` inputs of ``dtype``."""
    n_pow2 = max(16, _next_pow2(n))
    return n_pow2 <= RESIDENT_MAX_KEYS and 2 * n_pow2 * head_dim * (dtype.itemsize + 4) <= RESIDENT_MAX_BYTES


def frame_attention_kernel(n: int, head_dim: int, dtype: torch.dtype, direction: str = "fwd") -> str:
    """The attention kernel that runs ``direction`` ("fwd" or "bwd") of these inputs.

    ``HITRS_FAST_ATTENTION_KERNEL``: one kernel name for both directions or two, ``"FWD,BWD"`` (default
    :data:`FRAME_ATTENTION_KERNEL_DEFAULT`; the resident backward reads only the forward's LSE, so any pair
    works). ``resident`` becomes ``split`` where :func:`resident_fits` is False.
    """
    value = os.environ.get(FRAME_ATTENTION_KERNEL_ENV, FRAME_ATTENTION_KERNEL_DEFAULT).strip().lower()
    names = [part.strip() for part in value.split(",")]
    if len(names) not in (1, 2) or any(name not in FRAME_ATTENTION_KERNELS for name in names):
        raise ValueError(f"{FRAME_ATTENTION_KERNEL_ENV}={value!r}: expected one of "
                         f"{', '.join(FRAME_ATTENTION_KERNELS)}, or two of them as FWD,BWD")
    requested = names[-1] if direction == "bwd" else names[0]
    return "resident" if requested == "resident" and resident_fits(n, head_dim, dtype) else "split"


def padded_head_dim(head_dim: int) -> int | None:
    """The kernel head dim a head of ``head_dim`` runs at (the smallest supported one that holds it), None beyond
    the largest."""
    return next((d for d in FRAME_ATTENTION_HEAD_DIMS if d >= head_dim), None)


def frame_attention_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad_head_dim: bool = False) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.frame_attention` cannot take ``q, k, v [B, H, N, D]``; ``pad_head_dim``: D is
    padded up to a supported one first (the public op does), so any D up to the largest is taken."""
    if q.dim() != 4:
        return [f"q must be [B, H, N, D], got {q.dim()} dims"]
    reasons = []
    if not (q.dtype == k.dtype == v.dtype):
        reasons.append(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if q.dtype not in FRAME_ATTENTION_DTYPES:
        reasons.append(f"dtype {q.dtype} not in (float32, bfloat16, float16)")
    if pad_head_dim:
        if padded_head_dim(q.shape[-1]) is None:
            reasons.append(f"head_dim {q.shape[-1]} > {FRAME_ATTENTION_HEAD_DIMS[-1]}")
    elif q.shape[-1] not in FRAME_ATTENTION_HEAD_DIMS:
        reasons.append(f"head_dim {q.shape[-1]} not in {FRAME_ATTENTION_HEAD_DIMS}")
    if not 1 <= q.shape[2] <= FRAME_ATTENTION_MAX_TOKENS:
        reasons.append(f"N = {q.shape[2]} not in [1, {FRAME_ATTENTION_MAX_TOKENS}]")
    programs = q.shape[0] * q.shape[1] * -(-q.shape[2] // FRAME_ATTENTION_MIN_BLOCK)
    if programs > MAX_GRID:
        reasons.append(f"B * H * cdiv(N, {FRAME_ATTENTION_MIN_BLOCK}) = {programs} programs exceed grid axis 0 "
                       "(2^31 - 1)")
    return reasons


def frame_attention_bias_reasons(bias: torch.Tensor, batch: int, heads: int, n: int) -> list[str]:
    """Why the frame attention kernels cannot take an additive ``bias`` (broadcastable to ``[B, H, N, N]``)."""
    reasons = []
    if bias.dtype not in FRAME_ATTENTION_DTYPES:
        reasons.append(f"bias dtype {bias.dtype} not in (float32, bfloat16, float16)")
    return reasons


def attention_block_rows(c: int) -> int:
    """Rows of one fused-block program tile for model width C (sequences of N <= this fit whole)."""
    return min(128, ATTENTION_BLOCK_TILE // max(16, _next_pow2(c)))


def attention_block_reasons(batch: int, n: int, c: int, heads: int, head_dim: int, x_dtype: torch.dtype,
                            compute_dtype: torch.dtype, fp32_compute: bool = False, on_gpu: bool = False) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.attention_block` cannot take x ``[batch, n, c]`` with ``heads`` heads of
    ``head_dim`` whose dots run in ``compute_dtype``. ``fp32_compute``: accept float32 dots (the interpreter
    only); ``on_gpu``: the tensors are on a GPU (the sizes proven there, :data:`ATTENTION_BLOCK_GPU_MIN_DOT`)."""
    reasons = []
    if x_dtype not in ATTENTION_BLOCK_DTYPES:
        reasons.append(f"x dtype {x_dtype} not in (float32, bfloat16, float16)")
    computes = ATTENTION_BLOCK_DTYPES if fp32_compute else ATTENTION_BLOCK_COMPUTE_DTYPES
    if compute_dtype not in computes:
        reasons.append(f"compute dtype {compute_dtype} not in ({', '.join(str(d)[6:] for d in computes)}): "
                       "fp32 dots need more shared memory than an sm_90 block has")
    if head_dim not in ATTENTION_BLOCK_HEAD_DIMS:
        reasons.append(f"head_dim {head_dim} not in {ATTENTION_BLOCK_HEAD_DIMS}")
    elif on_gpu and head_dim < ATTENTION_BLOCK_GPU_MIN_DOT:
        reasons.append(f"head_dim {head_dim} < {ATTENTION_BLOCK_GPU_MIN_DOT}: not proven on a GPU (an illegal "
                       "memory access was seen at head_dim 16)")
    if not 1 <= c <= ATTENTION_BLOCK_MAX_WIDTH:
        reasons.append(f"width C = {c} not in [1, {ATTENTION_BLOCK_MAX_WIDTH}]")
    elif on_gpu and c < ATTENTION_BLOCK_GPU_MIN_DOT:
        reasons.append(f"width C = {c} < {ATTENTION_BLOCK_GPU_MIN_DOT}: not proven on a GPU (an illegal memory "
                       "access was seen at C = 32)")
    elif not 1 <= n <= attention_block_rows(c):
        reasons.append(f"N = {n} tokens do not fit a {attention_block_rows(c)}-row tile at width {c} (longer "
                       "sequences take the composed block)")
    elif -(-batch // (attention_block_rows(c) // n)) > MAX_GRID:
        reasons.append(f"{batch} sequences exceed grid axis 0 (2^31 - 1 programs)")
    return reasons


def ffn_kernel() -> str:
    """``HITRS_FAST_FFN``: ``fused`` (default) or ``composed`` (ValueError otherwise)."""
    value = os.environ.get(FFN_KERNEL_ENV, FFN_KERNELS[0]).strip().lower()
    if value not in FFN_KERNELS:
        raise ValueError(f"{FFN_KERNEL_ENV}={value!r}: expected one of {', '.join(FFN_KERNELS)}")
    return value


def ffn_block_reasons(rows: int, c: int, hidden: int, x_dtype: torch.dtype, compute_dtype: torch.dtype,
                      fp32_compute: bool = False, on_gpu: bool = False) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.ffn_block` cannot take x ``[rows, c]`` with a ``hidden``-wide FFN whose dots
    run in ``compute_dtype`` (``fp32_compute``: accept float32 dots, the interpreter only; ``on_gpu``: the sizes
    proven on a GPU)."""
    reasons = []
    if x_dtype not in FFN_BLOCK_DTYPES:
        reasons.append(f"x dtype {x_dtype} not in (float32, bfloat16, float16)")
    computes = FFN_BLOCK_DTYPES if fp32_compute else FFN_BLOCK_COMPUTE_DTYPES
    if compute_dtype not in computes:
        reasons.append(f"compute dtype {compute_dtype} not in ({', '.join(str(d)[6:] for d in computes)}) "
                       "(float32 dots run under the interpreter only)")
    if not 1 <= hidden <= FFN_BLOCK_MAX_HIDDEN:
        reasons.append(f"hidden width {hidden} not in [1, {FFN_BLOCK_MAX_HIDDEN}]")
    if not 1 <= c <= FFN_BLOCK_MAX_WIDTH:
        reasons.append(f"width C = {c} not in [1, {FFN_BLOCK_MAX_WIDTH}]")
    if on_gpu and min(c, hidden) < FFN_BLOCK_GPU_MIN_DOT:
        reasons.append(f"width {c} / hidden {hidden} below {FFN_BLOCK_GPU_MIN_DOT}: not proven on a GPU")
    if rows > MAX_GRID * 16:
        reasons.append(f"{rows} rows exceed grid axis 0 (2^31 - 1 programs)")
    return reasons


def joint_embedding_reasons(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                            ln_bias: torch.Tensor, pos: torch.Tensor, out_dtype: torch.dtype) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.joint_embedding` cannot take ``x [..., V, C]`` and ``weight [d, C]`` etc."""
    reasons = []
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias),
                    ("pos", pos)):
        if t.dtype not in JOINT_EMBEDDING_DTYPES:
            reasons.append(f"{name} dtype {t.dtype} not in (float32, bfloat16, float16)")
    if out_dtype not in JOINT_EMBEDDING_DTYPES:
        reasons.append(f"output dtype {out_dtype} not in (float32, bfloat16, float16)")
    v, c = x.shape[-2:]
    if c > JOINT_EMBEDDING_MAX_CHANNELS:
        reasons.append(f"C = {c} > {JOINT_EMBEDDING_MAX_CHANNELS} input channels")
    tile = _next_pow2(v) * _next_pow2(weight.shape[0])
    if tile > JOINT_EMBEDDING_MAX_BWD_TILE:
        reasons.append(f"V_pad * d_pad = {tile} > {JOINT_EMBEDDING_MAX_BWD_TILE} (backward tile would spill "
                       "registers)")
    return reasons
