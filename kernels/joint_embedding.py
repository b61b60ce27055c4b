"""Fused F-TRS joint embedding: ``y = LayerNorm(GELU(x W^T + b)) * gamma + beta + PE[v]``.

For every token (one joint of one frame) the forward loads its C coordinates (C = 3),
computes the Linear, the exact erf GELU, the LayerNorm (fp32 statistics) and the
positional-embedding add in registers, and writes ``[..., V, d]`` once, in the input
dtype or a requested one (bf16 out from fp32 in under autocast). Weights, LN affine and
PE stay in L1/L2. Saved for backward: x and per-token fp32 ``mean`` / ``rstd``
(8 B/token); the Linear and GELU are recomputed from x.

Backward recomputes ``h = x W^T + b``, ``g = GELU(h)``, ``n = (g - mean) * rstd`` and
produces dx plus the weight-like gradients dW, db, dgamma, dbeta and dPE. Those are
accumulated per program in fp32 registers and written as per-program partials into one
buffer, then summed with one ``torch.sum`` over the program axis: no atomics, so the
result is bitwise deterministic for a given shape and device (the persistent
partial-sum backward of Liger's and FLA's LayerNorm kernels; written here). Two kernels,
chosen by ``HITRS_FAST_EMBEDDING_BWD`` (docs/env.md):

- ``frames`` (default): tiles of ``BLOCK_F`` whole frames of ``V_PAD`` joint rows, so every
  row is a fixed joint and dPE accumulates row-wise. Measured faster than ``tokens`` on the
  first GPU run (H200, Triton 3.6, 8192 frames, fwd+bwd: 0.734 vs 0.756 ms with fp32 out,
  0.782 vs 0.902 ms with bf16 out; docs/benchmarks.md), against the performance model's
  prediction (docs/kernels/joint_embedding.md);
- ``tokens`` (kept for A/B runs): tiles of ``BLOCK_T`` consecutive tokens of the flattened
  ``[..., V]`` axis, across frame boundaries, so no row is padding (V = 25 in a 32-row
  frame tile wastes 22 %). A row's joint changes from tile to tile, so dPE is
  ``one_hot(joint)^T @ dy`` on the tensor cores into a ``[V_PAD, d]`` accumulator, and
  Triton's software pipeliner prefetches dy (a ``tl.dot`` operand) into shared memory;
  x, mean and rstd of the next tile are loaded before the current one is computed.
  dgamma, db and dW accumulate as ``FOLD``-row register partials, reduced across warps
  once per program.

Shapes and dtypes: x ``[..., V, C]`` with any V and small C (<= 16, unrolled), any d
(padded to a power of two and masked); x, weights and output each in fp32, bf16 or fp16,
independently (e.g. fp32 coordinates into bf16 parameters: the coordinates are read as
they are, never rounded), all arithmetic in fp32; gradients in each input's own dtype.
x may have any strides; the output and the statistics are contiguous.

Grid:
- forward: one program per ``BLOCK_M`` consecutive tokens (flattened ``[..., V]``),
  ``BLOCK_M * BLOCK_D`` ~ 4096 elements;
- backward: a persistent grid of at most ``k`` programs per SM (``k`` = 1 for tokens, 2 for frames),
  each owning a contiguous run of whole tiles: tokens (tokens kernel) or frames (frames kernel).
  The performance model behind these choices is in docs/kernels/joint_embedding.md.

Registered as ``torch.ops.hitrs_fast.joint_embedding_fwd`` / ``joint_embedding_bwd``
through ``torch.library.triton_op`` so ``torch.compile`` traces through the op.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op
from triton.runtime.jit import JITFunction

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.launch import launchable

# Elements per register tile (forward and frames backward; the latter keeps three fp32 tiles of this size).
_TILE_ELEMENTS = 4096
# Coordinates per token: the channel loops are unrolled (C = 3 in Hi-TRS).
MAX_CHANNELS = capabilities.JOINT_EMBEDDING_MAX_CHANNELS
# Smallest tl.dot dimension: the one-hot dPE product pads V, the token tile and d to at least this.
MIN_DOT = 16
# Programs per SM in the persistent backward grids. Tokens: its compiled kernel at d = 128 (255 registers x 256
# threads on sm_90) fills the 64 K-register file once. Frames: the first planning value (255 registers x 256
# threads: one resident, the second runs as a second wave).
TOKENS_PROGRAMS_PER_SM = 1
FRAMES_PROGRAMS_PER_SM = 2
BWD_VARIANT_ENV = "HITRS_FAST_EMBEDDING_BWD"
BWD_VARIANTS = ("frames", "tokens")
"""Backward kernels; the first is the default (module docstring)."""


def _fwd_config(block_d: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps) for the forward tile ``[BLOCK_M, BLOCK_D]``."""
    block_m = max(1, min(128, _TILE_ELEMENTS // block_d))
    return block_m, 4 if block_m * block_d <= _TILE_ELEMENTS else 8


def _bwd_frames_config(v_pad: int, block_d: int) -> tuple[int, int]:
    """(BLOCK_F, num_warps) for the frames backward tile ``[BLOCK_F * V_PAD, BLOCK_D]``."""
    block_f = max(1, _TILE_ELEMENTS // (v_pad * block_d))
    return block_f, 8 if block_f * v_pad * block_d >= _TILE_ELEMENTS else 4


def _bwd_tokens_config(block_d: int) -> tuple[int, int, int]:
    """(BLOCK_T, num_warps, FOLD) for the tokens backward tile ``[BLOCK_T, BLOCK_D]``.

    16 fp32 elements per thread on 8 warps (32 tokens at d = 128): 255 registers without spills with triton 3.6
    (the GPU image's) and 3.9; the same density on 4 warps (16 tokens) spills 40 B per thread with triton 3.6 and
    its loop issues 53 % more instructions there; 32 per thread spill on both (docs/kernels/joint_embedding.md,
    "Backward: performance model"). FOLD is the row span of one pass of the CTA over the tile when dy is 16-bit
    (16 lanes x 8 elements per row at d = 128; fp32 dy spans half as many rows, of which FOLD is a multiple), so
    the column-sum partials fold in registers.
    """
    block_t = max(MIN_DOT, 16 * 32 * 8 // block_d)
    num_warps = min(16, max(8, block_t * block_d // (16 * 32)))  # more warps only where BLOCK_T hits MIN_DOT
    fold = min(block_t, max(1, 256 // block_d) * num_warps)
    return block_t, num_warps, fold


@functools.cache
def _max_programs(device: torch.device, per_sm: int) -> int:
    """Persistent backward grid size: ``per_sm`` programs per SM on CUDA; a few under the CPU interpreter."""
    if device.type == "cuda":
        return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def bwd_variant() -> str:
    """The backward kernel, from ``HITRS_FAST_EMBEDDING_BWD`` (default ``frames``, the faster on a GPU;
    ``tokens`` for A/B runs)."""
    value = os.environ.get(BWD_VARIANT_ENV, BWD_VARIANTS[0]).strip().lower()
    if value not in BWD_VARIANTS:
        raise ValueError(f"{BWD_VARIANT_ENV}={value!r}: expected one of {', '.join(BWD_VARIANTS)}")
    return value


@triton.jit
def _gelu_and_grad(b_h):
    """Exact GELU ``h * Phi(h)`` and its derivative ``Phi(h) + h * phi(h)``."""
    b_cdf = 0.5 * (1.0 + tl.erf(b_h * 0.7071067811865476))
    b_pdf = tl.exp(-0.5 * b_h * b_h) * 0.3989422804014327  # 1 / sqrt(2 pi)
    return b_h * b_cdf, b_cdf + b_h * b_pdf


@triton.jit
def _store_partials(part_ptr, pid, b_dpos, b_dw, b_db, b_dgamma, b_dbeta, V, D, C: tl.constexpr,
                    C_PAD: tl.constexpr, V_PAD: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program's fp32 partial sums into row ``pid`` of ``part [programs, (V + C + 3) * D]``: dPE ``[V, D]``
    from ``b_dpos [V_PAD, BD]``, dW ``[D, C]`` (the parameter's layout) from ``b_dw [C_PAD, BD]``, then db, dgamma
    and dbeta ``[D]``."""
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_vp = tl.arange(0, V_PAD)
    o_c = tl.arange(0, C_PAD)
    p_base = part_ptr + pid * (V + C + 3) * D
    tl.store(p_base + o_vp[:, None] * D + o_d[None, :], b_dpos, mask=(o_vp < V)[:, None] & m_d[None, :])
    tl.store(p_base + V * D + o_d[None, :] * C + o_c[:, None], b_dw, mask=(o_c < C)[:, None] & m_d[None, :])
    tl.store(p_base + (V + C) * D + o_d, b_db, mask=m_d)
    tl.store(p_base + (V + C + 1) * D + o_d, b_dgamma, mask=m_d)
    tl.store(p_base + (V + C + 2) * D + o_d, b_dbeta, mask=m_d)


@triton.jit
def _load_token_inputs(x_ptr, mean_ptr, rstd_ptr, o_t, t_end, stride_xf, stride_xv, stride_xc, V: tl.constexpr,
                       C: tl.constexpr, C_PAD: tl.constexpr):
    """x ``[BT, C_PAD]`` (fp32, zero past C and past ``t_end``), mean and rstd ``[BT]`` of tokens ``o_t [BT]``."""
    m_t = o_t < t_end
    o_f = o_t // V  # V constexpr: a multiply-shift, not a division
    o_x = o_f * stride_xf + (o_t - o_f * V) * stride_xv
    o_c = tl.arange(0, C_PAD)
    b_x = tl.load(x_ptr + o_x[:, None] + o_c[None, :] * stride_xc, mask=m_t[:, None] & (o_c < C)[None, :], other=0.0)
    b_mean = tl.load(mean_ptr + o_t, mask=m_t, other=0.0)
    b_rstd = tl.load(rstd_ptr + o_t, mask=m_t, other=0.0)
    return b_x.to(tl.float32), b_mean, b_rstd


@triton.jit(do_not_specialize=["num_tokens"])
def joint_embedding_fwd_kernel(
    x_ptr, w_ptr, b_ptr, gamma_ptr, beta_ptr, pos_ptr, out_ptr, mean_ptr, rstd_ptr,
    num_tokens, V, D, eps,
    stride_xf, stride_xv, stride_xc, stride_wd, stride_wc, stride_pv, stride_pd,
    C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, SAVE_STATS: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    o_t = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] flattened token index
    m_t = o_t < num_tokens
    o_f = o_t // V  # frame (all leading dims flattened)
    o_v = o_t % V  # joint: selects the PE row
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D

    # Padded channels get W = b = 0, hence h = GELU(h) = 0: they drop out of the LN sums.
    b_bias = tl.load(b_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_h = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
    for c in tl.static_range(C):
        b_xc = tl.load(x_ptr + o_f * stride_xf + o_v * stride_xv + c * stride_xc, mask=m_t, other=0.0)
        b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0)
        b_h += b_xc.to(tl.float32)[:, None] * b_wc.to(tl.float32)[None, :]  # [BM, BD]
    b_g, _ = _gelu_and_grad(b_h)

    b_mean = tl.sum(b_g, axis=1) / D  # [BM]
    b_cen = tl.where(m_d[None, :], b_g - b_mean[:, None], 0.0)  # [BM, BD]
    b_var = tl.sum(b_cen * b_cen, axis=1) / D
    b_rstd = 1.0 / tl.sqrt(b_var + eps)  # [BM]

    b_gamma = tl.load(gamma_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_beta = tl.load(beta_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    m_td = m_t[:, None] & m_d[None, :]
    b_pos = tl.load(pos_ptr + o_v[:, None] * stride_pv + o_d[None, :] * stride_pd, mask=m_td, other=0.0)
    b_y = b_cen * b_rstd[:, None] * b_gamma[None, :] + b_beta[None, :] + b_pos.to(tl.float32)  # [BM, BD]
    tl.store(out_ptr + o_t[:, None] * D + o_d[None, :], b_y.to(out_ptr.dtype.element_ty), mask=m_td)
    if SAVE_STATS:
        tl.store(mean_ptr + o_t, b_mean, mask=m_t)
        tl.store(rstd_ptr + o_t, b_rstd, mask=m_t)


@triton.jit(do_not_specialize=["num_frames"])
def joint_embedding_bwd_frames_kernel(
    x_ptr, w_ptr, b_ptr, gamma_ptr, mean_ptr, rstd_ptr, dy_ptr, dx_ptr, part_ptr,
    num_frames, frames_per_program, V, D,
    stride_xf, stride_xv, stride_xc, stride_wd, stride_wc,
    C: tl.constexpr, C_PAD: tl.constexpr, V_PAD: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK_F * V_PAD
    pid = tl.program_id(0).to(tl.int64)
    o_r = tl.arange(0, ROWS)
    o_fl = o_r // V_PAD  # frame within the tile
    o_v = o_r % V_PAD  # joint: fixed per row, so dPE accumulates row-wise
    m_v = o_v < V
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_c = tl.arange(0, C_PAD)

    b_bias = tl.load(b_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_gamma = tl.load(gamma_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    acc_dpos = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)  # sum of dy, per tile row
    acc_dgamma = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)  # sum of dy * n
    acc_db = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)  # sum of dh
    acc_dw = tl.zeros([C_PAD, BLOCK_D], dtype=tl.float32)  # sum of x_c * dh, row c

    f_start = pid * frames_per_program
    f_end = tl.minimum(f_start + frames_per_program, num_frames)
    for f0 in range(f_start, f_end, BLOCK_F):
        o_f = f0 + o_fl  # [R]
        m_r = m_v & (o_f < f_end)
        m_rd = m_r[:, None] & m_d[None, :]
        o_t = o_f * V + o_v  # [R] token index into the contiguous dy / dx / stats
        o_x = o_f * stride_xf + o_v * stride_xv

        b_h = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
        for c in tl.static_range(C):
            b_xc = tl.load(x_ptr + o_x + c * stride_xc, mask=m_r, other=0.0).to(tl.float32)
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_h += b_xc[:, None] * b_wc[None, :]  # [R, BD]
        b_g, b_dgelu = _gelu_and_grad(b_h)
        b_mean = tl.load(mean_ptr + o_t, mask=m_r, other=0.0)  # [R]
        b_rstd = tl.load(rstd_ptr + o_t, mask=m_r, other=0.0)
        b_n = tl.where(m_rd, (b_g - b_mean[:, None]) * b_rstd[:, None], 0.0)  # [R, BD]

        b_dy = tl.load(dy_ptr + o_t[:, None] * D + o_d[None, :], mask=m_rd, other=0.0).to(tl.float32)
        acc_dpos += b_dy
        acc_dgamma += b_dy * b_n
        # LayerNorm backward: dg = rstd * (dn - mean(dn) - n * mean(dn * n)), means over the d real channels.
        b_dn = b_dy * b_gamma[None, :]
        b_c1 = tl.sum(b_dn * b_n, axis=1) / D  # [R]
        b_c2 = tl.sum(b_dn, axis=1) / D
        # Padded channels would get -c2 * rstd here: mask them before they reach dx and dW.
        b_dh = tl.where(m_rd, (b_dn - b_n * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] * b_dgelu, 0.0)
        acc_db += b_dh

        for c in tl.static_range(C):
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_dxc = tl.sum(b_dh * b_wc[None, :], axis=1)  # [R]
            tl.store(dx_ptr + o_t * C + c, b_dxc.to(dx_ptr.dtype.element_ty), mask=m_r)
            b_xc = tl.load(x_ptr + o_x + c * stride_xc, mask=m_r, other=0.0).to(tl.float32)
            b_dwc = tl.sum(b_dh * b_xc[:, None], axis=0)  # [BD]
            acc_dw += tl.where(o_c[:, None] == c, b_dwc[None, :], 0.0)  # [C_PAD, BD]

    # Fold the BLOCK_F frames of the tile: row r of every frame is the same joint.
    b_dpos = tl.sum(tl.reshape(acc_dpos, (BLOCK_F, V_PAD, BLOCK_D)), axis=0)  # [V_PAD, BD]
    _store_partials(part_ptr, pid, b_dpos, acc_dw, tl.sum(acc_db, axis=0), tl.sum(acc_dgamma, axis=0),
                    tl.sum(b_dpos, axis=0), V, D, C, C_PAD, V_PAD, BLOCK_D)


@triton.jit(do_not_specialize=["num_tokens", "tokens_per_program"])
def joint_embedding_bwd_tokens_kernel(
    x_ptr, w_ptr, b_ptr, gamma_ptr, mean_ptr, rstd_ptr, dy_ptr, dx_ptr, part_ptr,
    num_tokens, tokens_per_program, D,
    stride_xf, stride_xv, stride_xc, stride_wd, stride_wc,
    V: tl.constexpr, C: tl.constexpr, C_PAD: tl.constexpr, V_PAD: tl.constexpr, BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr, FOLD: tl.constexpr, SPLIT_DY: tl.constexpr,
):
    tl.static_assert(BLOCK_T % FOLD == 0)
    pid = tl.program_id(0).to(tl.int64)
    o_r = tl.arange(0, BLOCK_T)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_c = tl.arange(0, C_PAD)
    o_vp = tl.arange(0, V_PAD)

    b_bias = tl.load(b_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_gamma = tl.load(gamma_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    acc_dpos = tl.zeros([V_PAD, BLOCK_D], dtype=tl.float32)  # per joint: one-hot(joint)^T @ dy
    # Column sums kept as FOLD row partials: rows r and r + FOLD sit in the same thread, so folding a tile
    # is register adds; the cross-warp reduction happens once, after the loop.
    acc_dgamma = tl.zeros([FOLD, BLOCK_D], dtype=tl.float32)  # sum of dy * n
    acc_db = tl.zeros([FOLD, BLOCK_D], dtype=tl.float32)  # sum of dh
    acc_dw = tl.zeros([C_PAD, FOLD, BLOCK_D], dtype=tl.float32)  # sum of x_c * dh, slice c

    t_start = pid * tokens_per_program
    t_end = tl.minimum(t_start + tokens_per_program, num_tokens)
    # Each iteration loads the next tile's x, mean and rstd before it computes on the current one: their
    # latency hides behind a tile of work (Triton's pipeliner already prefetches dy, a tl.dot operand).
    b_x, b_mean, b_rstd = _load_token_inputs(x_ptr, mean_ptr, rstd_ptr, t_start + o_r, t_end, stride_xf, stride_xv,
                                             stride_xc, V, C, C_PAD)
    for t0 in range(t_start, t_end, BLOCK_T):
        o_t = t0 + o_r  # [BT] token index into the contiguous dy / dx / stats
        m_r = o_t < t_end
        m_rd = m_r[:, None] & m_d[None, :]
        o_v = o_t % V  # joint of each row (V constexpr: a multiply-shift); the tile ignores frame boundaries
        b_x_next, b_mean_next, b_rstd_next = _load_token_inputs(x_ptr, mean_ptr, rstd_ptr, o_t + BLOCK_T, t_end,
                                                                stride_xf, stride_xv, stride_xc, V, C, C_PAD)

        b_h = tl.zeros([BLOCK_T, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
        for c in tl.static_range(C):
            b_xc = tl.sum(tl.where(o_c[None, :] == c, b_x, 0.0), axis=1)  # [BT]
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_h += b_xc[:, None] * b_wc[None, :]  # [BT, BD]
        b_g, b_dgelu = _gelu_and_grad(b_h)
        b_n = tl.where(m_rd, (b_g - b_mean[:, None]) * b_rstd[:, None], 0.0)  # [BT, BD]

        b_dy = tl.load(dy_ptr + o_t[:, None] * D + o_d[None, :], mask=m_rd, other=0.0).to(tl.float32)
        # dPE on the tensor cores: one-hot(joint) [V_PAD, BT] @ dy [BT, BD], fp32 sums. 16-bit dy values are
        # tf32 numbers, so one tf32 product is exact; fp32 dy is split into its top 11 significant bits (a tf32
        # number) and the exact remainder, whose own tf32 rounding leaves ~2^-21 relative error.
        b_onehot = tl.where((o_v[None, :] == o_vp[:, None]) & m_r[None, :], 1.0, 0.0)  # [V_PAD, BT]
        if SPLIT_DY:
            b_dy_hi = (b_dy.to(tl.int32, bitcast=True) & -8192).to(tl.float32, bitcast=True)  # [BT, BD]
            acc_dpos = tl.dot(b_onehot, b_dy_hi, acc_dpos, input_precision="tf32")
            acc_dpos = tl.dot(b_onehot, b_dy - b_dy_hi, acc_dpos, input_precision="tf32")
        else:
            acc_dpos = tl.dot(b_onehot, b_dy, acc_dpos, input_precision="tf32")  # [V_PAD, BD]
        acc_dgamma += tl.sum(tl.reshape(b_dy * b_n, (BLOCK_T // FOLD, FOLD, BLOCK_D)), axis=0)
        # LayerNorm backward: dg = rstd * (dn - mean(dn) - n * mean(dn * n)), means over the d real channels.
        b_dn = b_dy * b_gamma[None, :]
        b_c1 = tl.sum(b_dn * b_n, axis=1) / D  # [BT]
        b_c2 = tl.sum(b_dn, axis=1) / D
        # Padded channels would get -c2 * rstd here: mask them before they reach dx and dW.
        b_dh = tl.where(m_rd, (b_dn - b_n * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] * b_dgelu, 0.0)
        acc_db += tl.sum(tl.reshape(b_dh, (BLOCK_T // FOLD, FOLD, BLOCK_D)), axis=0)

        b_dx = tl.zeros([BLOCK_T, C_PAD], dtype=tl.float32)  # one store per tile instead of one per channel
        for c in tl.static_range(C):
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_dx += tl.where(o_c[None, :] == c, tl.sum(b_dh * b_wc[None, :], axis=1)[:, None], 0.0)
            b_xc = tl.sum(tl.where(o_c[None, :] == c, b_x, 0.0), axis=1)  # [BT]
            b_dwc = tl.sum(tl.reshape(b_dh * b_xc[:, None], (BLOCK_T // FOLD, FOLD, BLOCK_D)), axis=0)
            acc_dw += tl.where(o_c[:, None, None] == c, b_dwc[None, :, :], 0.0)  # [C_PAD, FOLD, BD]
        tl.store(dx_ptr + o_t[:, None] * C + o_c[None, :], b_dx.to(dx_ptr.dtype.element_ty),
                 mask=m_r[:, None] & (o_c < C)[None, :])
        b_x, b_mean, b_rstd = b_x_next, b_mean_next, b_rstd_next

    _store_partials(part_ptr, pid, acc_dpos, tl.sum(acc_dw, axis=1), tl.sum(acc_db, axis=0), tl.sum(acc_dgamma, axis=0),
                    tl.sum(acc_dpos, axis=0), V, D, C, C_PAD, V_PAD, BLOCK_D)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"kernels/joint_embedding.py: {message}")


def _frames_view(x: torch.Tensor, v: int, c: int) -> torch.Tensor:
    """``[..., V, C]`` as ``[F, V, C]`` (a view where the strides allow); F may be 0."""
    num_frames = x.numel() // (v * c) if v * c else 0
    return x.reshape(num_frames, v, c)


def joint_embedding_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                        ln_bias: torch.Tensor, pos: torch.Tensor, eps: float, out_dtype: torch.dtype,
                        save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel.

    Args:
        x ``[..., V, C]``; weight ``[d, C]``; bias, ln_weight, ln_bias ``[d]``; pos ``[V, d]``.
        eps: LayerNorm epsilon. out_dtype: dtype of the output.
        save_stats: write the per-token fp32 mean and rstd (needed by the backward).

    Returns:
        ``(out [..., V, d] in out_dtype, mean [tokens], rstd [tokens])``; the statistics
        are empty when ``save_stats`` is False.
    """
    _check(x.dim() >= 2, f"x must be [..., V, C], got shape {tuple(x.shape)}")
    v, c = x.shape[-2], x.shape[-1]
    d = weight.shape[0]
    _check(weight.shape == (d, c), f"weight must be [d, C={c}], got {tuple(weight.shape)}")
    for name, t in (("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        _check(t.shape == (d,), f"{name} must be [d={d}], got {tuple(t.shape)}")
    _check(pos.shape == (v, d), f"pos must be [V={v}, d={d}], got {tuple(pos.shape)}")
    _check(1 <= c <= MAX_CHANNELS, f"C = {c} must be in [1, {MAX_CHANNELS}]")

    xf = _frames_view(x, v, c)  # [F, V, C]
    num_tokens = xf.shape[0] * v
    out = torch.empty((*x.shape[:-1], d), device=x.device, dtype=out_dtype)
    n_stats = num_tokens if save_stats else 0
    mean = torch.empty(n_stats, device=x.device, dtype=torch.float32)
    rstd = torch.empty(n_stats, device=x.device, dtype=torch.float32)
    if num_tokens == 0 or d == 0:
        return out, mean, rstd
    bias, ln_weight, ln_bias = bias.contiguous(), ln_weight.contiguous(), ln_bias.contiguous()
    block_d = triton.next_power_of_2(d)
    block_m, num_warps = _fwd_config(block_d)
    grid = (triton.cdiv(num_tokens, block_m),)
    launchable(joint_embedding_fwd_kernel, xf)[grid](
        xf, weight, bias, ln_weight, ln_bias, pos, out, mean, rstd,
        num_tokens, v, d, eps,
        xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1), pos.stride(0), pos.stride(1),
        C=c, BLOCK_M=block_m, BLOCK_D=block_d, SAVE_STATS=save_stats, num_warps=num_warps,
    )
    return out, mean, rstd


def joint_embedding_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        ln_weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the backward kernel chosen by ``HITRS_FAST_EMBEDDING_BWD`` and sums its per-program partials.

    Args:
        dy ``[..., V, d]``: upstream gradient. x, weight, bias, ln_weight: as in the forward.
        mean, rstd ``[tokens]``: from the forward.

    Returns:
        ``(dx [..., V, C] in x's dtype, sums [(V + C + 3) * d] fp32)``; :func:`split_param_grads`
        turns ``sums`` into dW, db, dgamma, dbeta and dPE (one buffer: one reduction launch).
    """
    v, c = x.shape[-2], x.shape[-1]
    d = weight.shape[0]
    _check(dy.shape == (*x.shape[:-1], d), f"dy must be {(*x.shape[:-1], d)}, got {tuple(dy.shape)}")
    xf = _frames_view(x, v, c)
    num_frames = xf.shape[0]
    _check(mean.numel() == num_frames * v and rstd.numel() == num_frames * v,
           "mean/rstd were not saved by the forward (save_stats=False)")
    dy = dy.contiguous()
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    launch = _launch_bwd_tokens if bwd_variant() == "tokens" else _launch_bwd_frames
    programs, kernel, runtime, meta = launch(xf, dy, d) if num_frames and d else (1, None, (), {})
    part = torch.empty((programs, (v + c + 3) * d), device=x.device, dtype=torch.float32)
    if kernel is None:
        dx.zero_()
        part.zero_()
    else:
        launchable(kernel, xf)[(programs,)](
            xf, weight, bias.contiguous(), ln_weight.contiguous(), mean, rstd, dy, dx, part, *runtime,
            xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1), **meta,
        )
    # torch.sum over a fixed-size axis has a fixed order: deterministic, unlike atomics.
    return dx, part.sum(0)


def split_param_grads(sums: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                      pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dW [d, C], db [d], dgamma [d], dbeta [d], dPE [V, d])`` from the backward's ``sums``, each in its
    parameter's dtype (views of ``sums`` where that is fp32)."""
    (v, d), c = pos.shape, weight.shape[1]
    o_w, o_b = v * d, (v + c) * d
    return (sums[o_w:o_b].view(d, c).to(weight.dtype), sums[o_b:o_b + d].to(bias.dtype),
            sums[o_b + d:o_b + 2 * d].to(ln_weight.dtype), sums[o_b + 2 * d:].to(ln_weight.dtype),
            sums[:o_w].view(v, d).to(pos.dtype))


def _launch_bwd_tokens(xf: torch.Tensor, dy: torch.Tensor, d: int) -> tuple[int, JITFunction, tuple, dict]:
    """Programs, kernel, runtime scalars and meta-parameters of :func:`joint_embedding_bwd_tokens_kernel`
    for ``xf [F, V, C]`` and ``dy [F, V, d]``."""
    num_frames, v, c = xf.shape
    num_tokens = num_frames * v
    block_d = max(MIN_DOT, triton.next_power_of_2(d))
    block_t, num_warps, fold = _bwd_tokens_config(block_d)
    tiles = triton.cdiv(num_tokens, block_t)
    programs = min(tiles, _max_programs(xf.device, TOKENS_PROGRAMS_PER_SM))
    # Whole tiles per program, so only the last program sees a ragged tile.
    tokens_per_program = triton.cdiv(tiles, programs) * block_t
    programs = triton.cdiv(num_tokens, tokens_per_program)
    meta = dict(V=v, C=c, C_PAD=triton.next_power_of_2(c), V_PAD=max(MIN_DOT, triton.next_power_of_2(v)),
                BLOCK_T=block_t, BLOCK_D=block_d, FOLD=fold, SPLIT_DY=dy.dtype == torch.float32, num_warps=num_warps)
    return programs, joint_embedding_bwd_tokens_kernel, (num_tokens, tokens_per_program, d), meta


def _launch_bwd_frames(xf: torch.Tensor, dy: torch.Tensor, d: int) -> tuple[int, JITFunction, tuple, dict]:
    """Programs, kernel, runtime scalars and meta-parameters of :func:`joint_embedding_bwd_frames_kernel`
    for ``xf [F, V, C]`` and ``dy [F, V, d]``."""
    num_frames, v, c = xf.shape
    block_d = triton.next_power_of_2(d)
    v_pad = triton.next_power_of_2(v)
    block_f, num_warps = _bwd_frames_config(v_pad, block_d)
    frame_blocks = triton.cdiv(num_frames, block_f)
    programs = min(frame_blocks, _max_programs(xf.device, FRAMES_PROGRAMS_PER_SM))
    frames_per_program = triton.cdiv(frame_blocks, programs) * block_f
    programs = triton.cdiv(num_frames, frames_per_program)
    meta = dict(C=c, C_PAD=triton.next_power_of_2(c), V_PAD=v_pad, BLOCK_F=block_f, BLOCK_D=block_d,
                num_warps=num_warps)
    return programs, joint_embedding_bwd_frames_kernel, (num_frames, frames_per_program, v, d), meta


def _register_op(name: str):
    """``triton_op`` on CUDA builds; a plain opaque ``custom_op`` under TRITON_INTERPRET=1.

    triton_op lets torch.compile see the kernel by re-running the body under
    FunctionalTensorMode through ``wrap_triton``; an interpreter kernel (not a
    ``JITFunction``) cannot be wrapped and would touch fake data, so there the op stays
    opaque and compiles as a single call.
    """
    if isinstance(joint_embedding_fwd_kernel, JITFunction):
        return triton_op(name, mutates_args=())
    return torch.library.custom_op(name, mutates_args=())


@_register_op("hitrs_fast::joint_embedding_fwd")
def _joint_embedding_fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                            ln_bias: torch.Tensor, pos: torch.Tensor, eps: float, out_dtype: torch.dtype,
                            save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return joint_embedding_fwd(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats)


@_register_op("hitrs_fast::joint_embedding_bwd")
def _joint_embedding_bwd_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            ln_weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    return joint_embedding_bwd(dy, x, weight, bias, ln_weight, mean, rstd)


# Fake (meta) implementations: shapes and dtypes only. The interpreter's opaque custom_op
# needs them; with triton_op they also spare tracing the launcher under FakeTensorMode.
@_joint_embedding_fwd_op.register_fake
def _(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats):
    n_stats = x.numel() // x.shape[-1] if save_stats else 0
    return (x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype),
            x.new_empty(n_stats, dtype=torch.float32), x.new_empty(n_stats, dtype=torch.float32))


@_joint_embedding_bwd_op.register_fake
def _(dy, x, weight, bias, ln_weight, mean, rstd):
    v, (d, c) = x.shape[-2], weight.shape
    return torch.empty_like(x), x.new_empty((v + c + 3) * d, dtype=torch.float32)


class JointEmbeddingFunction(torch.autograd.Function):
    """Autograd wrapper over the two registered ops.

    ``apply(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats)``;
    ``save_stats`` must be True whenever a gradient will be requested.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats):
        out, mean, rstd = torch.ops.hitrs_fast.joint_embedding_fwd(x, weight, bias, ln_weight, ln_bias, pos, eps,
                                                                   out_dtype, save_stats)
        ctx.save_for_backward(x, weight, bias, ln_weight, pos, mean, rstd)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, weight, bias, ln_weight, pos, mean, rstd = ctx.saved_tensors
        dx, sums = torch.ops.hitrs_fast.joint_embedding_bwd(dy, x, weight, bias, ln_weight, mean, rstd)
        grads = (dx, *split_param_grads(sums, weight, bias, ln_weight, pos))
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:6], strict=True)),
                None, None, None)
