"""The pre-LN attention sublayer fused into one Triton kernel each way (short sequences: F-TRS).

What it computes, for x ``[B, N, C]`` (B sequences of N tokens of width C), H heads of D, ``I = H * D``::

    xn  = LayerNorm(x) * ln_w + ln_b                          (fp32 statistics, eps)
    Q, K, V = xn W_q^T, xn W_k^T, xn W_v^T                    W_q, W_k, W_v: [I, C] (one [3I, C] weight)
    A_h = softmax(scale * Q_h K_h^T, masked) V_h              per sequence and head
    out = x + dropout(A W_o^T)                                W_o: [C, I]

the released Hi-TRS layer's attention half (no projection biases). Masks: none (F-TRS) or the C-TRS frame
rule inside each sequence (:class:`hitrs_fast.masks.FrameMask`; the integer rule of
:mod:`hitrs_fast.kernels.frame_attention`).

Design (chosen by the performance model in docs/kernels/attention_blocks.md, candidate (d)): one program owns
a tile of ``ROWS`` rows holding ``G = ROWS // N`` whole sequences (5 frames of 25 joints in 128 rows) and
loops over the heads. Per head it projects Q, K, V of the whole tile (``[ROWS, C] x [C, D]`` dots, large
enough for Hopper's warp-group MMA), runs a block-diagonal single-pass softmax over the tile (a query sees
the keys of its own sequence only), and adds ``A_h W_o[:, h]^T`` to a ``[ROWS, C]`` fp32 accumulator; the
epilogue applies dropout and the residual. The only HBM traffic of the forward is x in and out out (plus
the weights, read from L2 by every program): Q, K, V and A never leave the chip.

Backward: the same tile walk recomputes LN, Q, K, V and the softmax (nothing but x and the dropout seed is
saved), regenerates the dropout mask, and per head computes ``dA = dZ W_o[:, h]``, ``dP = dA V^T``,
``delta = rowsum(P * dP)``, ``dS = P (dP - delta)``, dQ, dK, dV, and accumulates
``dxn += dQ W_q + dK W_k + dV W_v`` on chip for the LayerNorm backward, which writes dx (residual
included) and per-program partial sums of dln_w, dln_b. The weight gradients are reductions over every row
of the batch, which no tile can own: the kernel writes dQKV ``[B*N, 3I]``, A ``[B*N, I]``, xn ``[B*N, C]``
and (with dropout) dZ ``[B*N, C]``, and cuBLAS computes ``dW_qkv = dQKV^T xn`` and ``dW_o = dZ^T A``. The
partial LN sums are added on the host in a fixed order: no atomics, deterministic.

Dropout: counter-based (Philox, ``tl.rand``) on the element index ``row * C + col`` with a seed drawn
from PyTorch's generator (``torch.randint`` on the device, so ``torch.manual_seed`` makes it repeatable
and no host sync happens); the backward regenerates the same mask. It is not the mask ``nn.Dropout``
draws for the same seed (tests check its rate, scaling and forward/backward consistency).

Shapes and dtypes: x float32 / float16 / bfloat16, any strides; weights in one compute dtype, float16 or
bfloat16 (the dots run in it with fp32 accumulation; x may be fp32, e.g. under autocast); the output has x's
dtype. float32 dots (``tf32x3``) run under the CPU interpreter only: compiled for sm_90 the fp32 backward
needs 512 KiB of shared memory, so GPU fp32 takes the composed path. D in {16, 32, 64, 128}; C up to 256
(padded to a power of two); N <= ROWS (128 rows for C <= 128, 64 for C <= 256). Longer sequences (C-TRS,
N = 176) take the composed path (:func:`hitrs_fast.attention.frame_attention_block`), which the model
predicts faster there.

Grid: one axis of ``cdiv(B, G)`` programs (int64 offsets); axis 0 allows 2^31 - 1.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.frame_attention import (
    LOG2E,
    _allowed,
    _benchmark,
    _cast,
    _interpreting,
    _mma,
    _precision,
    _register,
    _single_config,
)
from hitrs_fast.kernels.launch import launchable

AUTOTUNE_KEY = ["ROWS", "C_PAD", "HEADS", "HEAD_DIM", "MASK_KIND", "FRAME_SIZE", "CLS_POS", "ALLOW_SELF", "DROPOUT",
                "INPUT_PRECISION"]
# HITRS_FAST_SINGLE_CONFIG / interpreter: 8 warps, the smallest count that does not spill kilobytes on sm_90.
_SINGLE = triton.Config({}, num_warps=8, num_stages=1)


def gpu_configs() -> list[triton.Config]:
    """Warps of the program (the tile, hence the grid, is fixed by the host). Compiled for sm_90 at the F-TRS
    shape in bf16: 4 warps spill 4.5-5.6 KiB of registers, 8 and 16 warps about 0.5 KiB forward and 1.7 KiB
    backward; a second pipeline stage doubles the shared memory (the backward no longer fits 227 KiB)."""
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (8, 16)]


@triton.jit
def _layer_norm_rows(X, LN_W, LN_B, p_x, m_x, o_c, m_c, C, eps):
    """LayerNorm of a ``[ROWS, C_PAD]`` tile: ``(x fp32, xhat, rstd, xn)``; padded columns are 0 in all."""
    b_x = tl.load(X + p_x, mask=m_x, other=0.0).to(tl.float32)  # [R, CP]
    b_mean = tl.sum(b_x, 1) / C  # [R]
    b_xc = tl.where(m_c[None, :], b_x - b_mean[:, None], 0.0)
    b_rstd = 1.0 / tl.sqrt(tl.sum(b_xc * b_xc, 1) / C + eps)  # [R]
    b_xhat = b_xc * b_rstd[:, None]
    b_w = tl.load(LN_W + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_b = tl.load(LN_B + o_c, mask=m_c, other=0.0).to(tl.float32)
    return b_x, b_xhat, b_rstd, b_xhat * b_w[None, :] + b_b[None, :]


@triton.jit
def _keep_mask(SEED, o_row, o_c, C, drop_p):
    """Dropout keep mask ``[ROWS, C_PAD]``: Philox on the element index, kept with probability 1 - p."""
    seed = tl.load(SEED)
    return tl.rand(seed, o_row[:, None] * C + o_c[None, :]) >= drop_p


@triton.jit
def _head_weights(WQKV, WO, h, o_c, m_c, o_d, stride_wr, stride_wc, stride_or, stride_oc, HEADS: tl.constexpr,
                  HEAD_DIM: tl.constexpr):
    """Head h's slices: ``W_q^T, W_k^T, W_v^T [C_PAD, D]`` and ``W_o[:, h]^T [D, C_PAD]`` (padded columns 0)."""
    p_w = o_c[:, None] * stride_wc + o_d[None, :] * stride_wr
    b_wq = tl.load(WQKV + (h * HEAD_DIM) * stride_wr + p_w, mask=m_c[:, None], other=0.0)
    b_wk = tl.load(WQKV + ((HEADS + h) * HEAD_DIM) * stride_wr + p_w, mask=m_c[:, None], other=0.0)
    b_wv = tl.load(WQKV + ((2 * HEADS + h) * HEAD_DIM) * stride_wr + p_w, mask=m_c[:, None], other=0.0)
    b_wo = tl.load(WO + o_c[None, :] * stride_or + (h * HEAD_DIM + o_d)[:, None] * stride_oc, mask=m_c[None, :],
                   other=0.0)
    return b_wq, b_wk, b_wv, b_wo


@triton.jit
def _head_probabilities(b_xn, b_wq, b_wk, b_wv, m_att, qk_scale, INPUT_PRECISION: tl.constexpr,
                        INTERP_BF16: tl.constexpr):
    """Q, K, V ``[ROWS, D]`` (compute dtype) and the normalised probabilities ``P [ROWS, ROWS]`` (fp32) of one
    head; a row with no visible key (a padding row) gets P = 0."""
    cdt = b_xn.dtype
    b_q = _cast(_mma(b_xn, b_wq, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)  # [R, D]
    b_k = _cast(_mma(b_xn, b_wk, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
    b_v = _cast(_mma(b_xn, b_wv, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
    b_s = tl.where(m_att, _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale, float("-inf"))
    b_mx = tl.max(b_s, 1)  # [R]
    b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
    b_p = tl.exp2(b_s - b_mx[:, None])  # [R, R]
    b_l = tl.sum(b_p, 1)
    return b_q, b_k, b_v, b_p / tl.where(b_l == 0.0, 1.0, b_l)[:, None]


@triton.jit
def _tile_layout(N, num_seqs, C, ROWS: tl.constexpr, C_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                 MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr):
    """The program's tile: global row ``[ROWS]`` (int64), row validity, the attention mask ``[ROWS, ROWS]``
    (same sequence, valid key, frame rule on the token indices), the column offsets and masks and the head
    feature offsets. Pointers go one helper deep at most (loads in the kernel body or in a helper it calls):
    torch's kernel-mutation analysis, which ``torch.compile`` uses, reported a pointer handed further down as
    written (and cloned the tensor)."""
    pid = tl.program_id(0).to(tl.int64)
    seqs = ROWS // N
    o_r = tl.arange(0, ROWS)
    i_s = o_r // N  # sequence within the tile
    o_t = o_r % N  # token within its sequence
    o_seq = pid * seqs + i_s
    m_r = (i_s < seqs) & (o_seq < num_seqs)
    o_row = o_seq * N + o_t
    m_att = _allowed(o_t, o_t, N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, False, False)
    m_att = m_att & (i_s[:, None] == i_s[None, :]) & m_r[None, :]
    o_c = tl.arange(0, C_PAD)
    m_c = o_c < C
    return pid, o_row, m_r, m_att, o_c, m_c, m_r[:, None] & m_c[None, :], tl.arange(0, HEAD_DIM)


@triton.jit(do_not_specialize=["num_seqs", "N"])
def attention_block_fwd_kernel(
    X, LN_W, LN_B, WQKV, WO, OUT, SEED,
    num_seqs, N, C, eps, qk_scale, drop_p, drop_scale,
    stride_xr, stride_xc, stride_wr, stride_wc, stride_or, stride_oc,
    ROWS: tl.constexpr, C_PAD: tl.constexpr, HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    DROPOUT: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr,
):
    # qk_scale = scale * log2(e): scores in log2 units for exp2.
    pid, o_row, m_r, m_att, o_c, m_c, m_x, o_d = _tile_layout(N, num_seqs, C, ROWS, C_PAD, HEAD_DIM, MASK_KIND,
                                                             FRAME_SIZE, CLS_POS, ALLOW_SELF)
    b_x, b_xhat, b_rstd, b_xn = _layer_norm_rows(X, LN_W, LN_B, o_row[:, None] * stride_xr + o_c[None, :] * stride_xc,
                                                 m_x, o_c, m_c, C, eps)
    b_xn = _cast(b_xn, WQKV.dtype.element_ty, INTERP_BF16)  # [R, CP], the dots' operand
    b_z = tl.zeros([ROWS, C_PAD], dtype=tl.float32)  # W_o output, summed over the heads on chip
    for h in range(HEADS):
        b_wq, b_wk, b_wv, b_wo = _head_weights(WQKV, WO, h, o_c, m_c, o_d, stride_wr, stride_wc, stride_or,
                                               stride_oc, HEADS, HEAD_DIM)
        b_q, b_k, b_v, b_p = _head_probabilities(b_xn, b_wq, b_wk, b_wv, m_att, qk_scale, INPUT_PRECISION,
                                                 INTERP_BF16)
        b_a = _mma(_cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION, INTERP_BF16)  # [R, D]
        b_z += _mma(_cast(b_a, b_v.dtype, INTERP_BF16), b_wo, INPUT_PRECISION, INTERP_BF16)  # [R, CP]
    if DROPOUT:
        b_z = tl.where(_keep_mask(SEED, o_row, o_c, C, drop_p), b_z * drop_scale, 0.0)
    tl.store(OUT + o_row[:, None] * C + o_c[None, :], _cast(b_x + b_z, OUT.dtype.element_ty, INTERP_BF16), mask=m_x)


@triton.jit(do_not_specialize=["num_seqs", "N"])
def attention_block_bwd_kernel(
    X, LN_W, LN_B, WQKV, WO, DY, SEED,
    DX, DQKV, ATT, XN, DZ, DLN_W_PART, DLN_B_PART,
    num_seqs, N, C, eps, qk_scale, sm_scale, drop_p, drop_scale,
    stride_xr, stride_xc, stride_wr, stride_wc, stride_or, stride_oc, stride_dyr, stride_dyc,
    ROWS: tl.constexpr, C_PAD: tl.constexpr, HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    DROPOUT: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr,
):
    # Written per row: dx [R, C], dQKV [R, 3I] (columns q | k | v, head-major), A [R, I], xn [R, C] and,
    # with dropout, dZ [R, C] (all contiguous); per program: the LN weight partial sums [C].
    pid, o_row, m_r, m_att, o_c, m_c, m_x, o_d = _tile_layout(N, num_seqs, C, ROWS, C_PAD, HEAD_DIM, MASK_KIND,
                                                             FRAME_SIZE, CLS_POS, ALLOW_SELF)
    b_x, b_xhat, b_rstd, b_xn = _layer_norm_rows(X, LN_W, LN_B, o_row[:, None] * stride_xr + o_c[None, :] * stride_xc,
                                                 m_x, o_c, m_c, C, eps)
    b_xn = _cast(b_xn, WQKV.dtype.element_ty, INTERP_BF16)  # [R, CP], the dots' operand
    inner = HEADS * HEAD_DIM
    tl.store(XN + o_row[:, None] * C + o_c[None, :], b_xn, mask=m_x)
    b_dy = tl.load(DY + o_row[:, None] * stride_dyr + o_c[None, :] * stride_dyc, mask=m_x, other=0.0).to(tl.float32)
    b_dz = b_dy
    if DROPOUT:
        b_dz = tl.where(_keep_mask(SEED, o_row, o_c, C, drop_p), b_dy * drop_scale, 0.0)
        tl.store(DZ + o_row[:, None] * C + o_c[None, :], _cast(b_dz, DZ.dtype.element_ty, INTERP_BF16), mask=m_x)
    b_dz = _cast(b_dz, WQKV.dtype.element_ty, INTERP_BF16)
    b_dxn = tl.zeros([ROWS, C_PAD], dtype=tl.float32)  # dL/dxn, summed over the heads on chip
    p_row = o_row[:, None] * (3 * inner) + o_d[None, :]
    for h in range(HEADS):
        b_wq, b_wk, b_wv, b_wo = _head_weights(WQKV, WO, h, o_c, m_c, o_d, stride_wr, stride_wc, stride_or,
                                               stride_oc, HEADS, HEAD_DIM)
        b_q, b_k, b_v, b_p = _head_probabilities(b_xn, b_wq, b_wk, b_wv, m_att, qk_scale, INPUT_PRECISION,
                                                 INTERP_BF16)
        cdt = b_v.dtype
        b_p16 = _cast(b_p, cdt, INTERP_BF16)
        b_a = _mma(b_p16, b_v, INPUT_PRECISION, INTERP_BF16)  # [R, D]
        tl.store(ATT + o_row[:, None] * inner + h * HEAD_DIM + o_d[None, :], _cast(b_a, cdt, INTERP_BF16),
                 mask=m_r[:, None])
        b_da = _cast(_mma(b_dz, tl.trans(b_wo), INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)  # [R, D]
        b_dp = _mma(b_da, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [R, R]
        b_ds = b_p * (b_dp - tl.sum(b_p * b_dp, 1)[:, None])  # delta = rowsum(P * dP)
        b_ds16 = _cast(b_ds, cdt, INTERP_BF16)
        b_dq = _cast(_mma(b_ds16, b_k, INPUT_PRECISION, INTERP_BF16) * sm_scale, cdt, INTERP_BF16)  # [R, D]
        b_dk = _cast(_mma(tl.trans(b_ds16), b_q, INPUT_PRECISION, INTERP_BF16) * sm_scale, cdt, INTERP_BF16)
        b_dv = _cast(_mma(tl.trans(b_p16), b_da, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
        tl.store(DQKV + p_row + h * HEAD_DIM, b_dq, mask=m_r[:, None])
        tl.store(DQKV + p_row + (HEADS + h) * HEAD_DIM, b_dk, mask=m_r[:, None])
        tl.store(DQKV + p_row + (2 * HEADS + h) * HEAD_DIM, b_dv, mask=m_r[:, None])
        b_dxn += _mma(b_dq, tl.trans(b_wq), INPUT_PRECISION, INTERP_BF16)  # [R, CP]
        b_dxn += _mma(b_dk, tl.trans(b_wk), INPUT_PRECISION, INTERP_BF16)
        b_dxn += _mma(b_dv, tl.trans(b_wv), INPUT_PRECISION, INTERP_BF16)
    # LayerNorm backward over the C real columns: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dxn * w.
    b_w = tl.load(LN_W + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_g = b_dxn * b_w[None, :]
    b_c1 = tl.sum(b_g * b_xhat, 1) / C  # [R]
    b_c2 = tl.sum(b_g, 1) / C
    b_dx = (b_g - b_xhat * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] + b_dy  # + the residual's dy
    tl.store(DX + o_row[:, None] * C + o_c[None, :], _cast(b_dx, DX.dtype.element_ty, INTERP_BF16), mask=m_x)
    # Padding rows have dxn = 0 and xhat = 0, so they add nothing.
    tl.store(DLN_W_PART + pid * C + o_c, tl.sum(b_dxn * b_xhat, 0), mask=m_c)
    tl.store(DLN_B_PART + pid * C + o_c, tl.sum(b_dxn, 0), mask=m_c)


@functools.cache
def _autotuned(kernel):
    configs = [_SINGLE] if _single_config() else gpu_configs()
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, do_bench=_benchmark)(kernel)


def tile_rows(c: int) -> int:
    """Rows per program tile for width C (the fused path needs N <= this)."""
    return capabilities.attention_block_rows(c)


def _check(where: str, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
           heads: int) -> None:
    if x.dim() != 3:
        raise ValueError(f"{where}: x must be [B, N, C], got {tuple(x.shape)}")
    b, n, c = x.shape
    if wqkv.dim() != 2 or wqkv.shape[1] != c or wqkv.shape[0] % (3 * heads):
        raise ValueError(f"{where}: wqkv must be [3 * H * D, C={c}] with H = {heads}, got {tuple(wqkv.shape)}")
    head_dim = wqkv.shape[0] // (3 * heads)
    if wo.shape != (c, heads * head_dim):
        raise ValueError(f"{where}: wo must be [C={c}, H * D={heads * head_dim}], got {tuple(wo.shape)}")
    if ln_w.shape != (c,) or ln_b.shape != (c,):
        raise ValueError(f"{where}: ln_w and ln_b must be [C={c}], got {tuple(ln_w.shape)}, {tuple(ln_b.shape)}")
    if wo.dtype != wqkv.dtype:
        raise ValueError(f"{where}: wqkv and wo must share the compute dtype, got {wqkv.dtype} and {wo.dtype}")
    # fp32 dots only where no GPU is involved (the interpreter): they do not fit sm_90's shared memory.
    on_gpu = x.device.type == "cuda"
    reasons = capabilities.attention_block_reasons(b, n, c, heads, head_dim, x.dtype, wqkv.dtype,
                                                   fp32_compute=not on_gpu, on_gpu=on_gpu)
    if reasons:
        raise ValueError(f"{where}: " + "; ".join(reasons))


def _meta(x: torch.Tensor, wqkv: torch.Tensor, heads: int, mask_kind: int, frame_size: int, cls_pos: int,
          allow_self: bool, dropout: bool) -> dict:
    c = x.shape[2]
    return {"ROWS": tile_rows(c), "C_PAD": triton.next_power_of_2(c), "HEADS": heads,
            "HEAD_DIM": wqkv.shape[0] // (3 * heads), "MASK_KIND": mask_kind, "FRAME_SIZE": frame_size,
            "CLS_POS": cls_pos, "ALLOW_SELF": allow_self, "DROPOUT": dropout,
            "INPUT_PRECISION": _precision(wqkv.dtype),
            "INTERP_BF16": wqkv.dtype == torch.bfloat16 and _interpreting()}


def _programs(b: int, n: int, c: int) -> int:
    return triton.cdiv(b, tile_rows(c) // n)


def attention_block_fwd(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor,
                        wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float, scale: float,
                        mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        dropout_p: float) -> torch.Tensor:
    """Forward launcher.

    Args:
        x: ``[B, N, C]``, any strides. ln_w, ln_b: ``[C]``. wqkv: ``[3 * H * D, C]`` (rows q | k | v).
        wo: ``[C, H * D]``. seed: int64 ``[1]`` on x's device (dropout), or None for no dropout.
        heads: H. eps: LayerNorm epsilon. scale: softmax scale. mask_kind, frame_size, cls_pos, allow_self:
        the mask (``hitrs_fast.kernels.frame_attention`` codes). dropout_p: the drop probability (with a seed).

    Returns:
        ``[B, N, C]`` in x's dtype, contiguous.
    """
    _check("attention_block_fwd", x, ln_w, ln_b, wqkv, wo, heads)
    b, n, c = x.shape
    out = torch.empty((b, n, c), dtype=x.dtype, device=x.device)
    if b == 0:
        return out
    dropout = seed is not None and dropout_p > 0.0
    xr = x.reshape(b * n, c) if x.stride(1) == c * x.stride(2) else x.contiguous().view(b * n, c)
    meta = _meta(x, wqkv, heads, mask_kind, frame_size, cls_pos, allow_self, dropout)
    launchable(_autotuned(attention_block_fwd_kernel), x)[(_programs(b, n, c),)](
        xr, ln_w, ln_b, wqkv, wo, out, seed if dropout else xr,
        b, n, c, eps, scale * LOG2E, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
        *xr.stride(), *wqkv.stride(), *wo.stride(), **meta)
    return out


def attention_block_bwd(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor,
                        wqkv: torch.Tensor, wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float,
                        scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        dropout_p: float) -> tuple[torch.Tensor, ...]:
    """Backward launcher: the fused kernel, then cuBLAS for the weight gradients and a fixed-order sum of
    the LN partials.

    Args:
        dy: ``[B, N, C]`` upstream gradient. Others as given to :func:`attention_block_fwd`.

    Returns:
        ``(dx [B, N, C], d ln_w [C], d ln_b [C], d wqkv [3 * H * D, C], d wo [C, H * D])``; dx in x's dtype, the
        rest in their parameter's dtype.
    """
    _check("attention_block_bwd", x, ln_w, ln_b, wqkv, wo, heads)
    b, n, c = x.shape
    if dy.shape != x.shape:
        raise ValueError(f"attention_block_bwd: dy must be {tuple(x.shape)}, got {tuple(dy.shape)}")
    inner = wo.shape[1]
    rows, cdt, dev = b * n, wqkv.dtype, x.device
    dropout = seed is not None and dropout_p > 0.0
    programs = _programs(b, n, c) if b else 0
    dx = torch.empty((b, n, c), dtype=x.dtype, device=dev)
    dqkv = torch.empty((rows, 3 * inner), dtype=cdt, device=dev)
    att = torch.empty((rows, inner), dtype=cdt, device=dev)
    xn = torch.empty((rows, c), dtype=cdt, device=dev)
    dz = torch.empty((rows, c), dtype=cdt, device=dev) if dropout else None
    parts = torch.empty((2, programs, c), dtype=torch.float32, device=dev)
    if b:
        xr = x.reshape(rows, c) if x.stride(1) == c * x.stride(2) else x.contiguous().view(rows, c)
        dyr = dy.reshape(rows, c)
        meta = _meta(x, wqkv, heads, mask_kind, frame_size, cls_pos, allow_self, dropout)
        launchable(_autotuned(attention_block_bwd_kernel), x)[(programs,)](
            xr, ln_w, ln_b, wqkv, wo, dyr, seed if dropout else xr,
            dx, dqkv, att, xn, dz if dropout else xn, parts[0], parts[1],
            b, n, c, eps, scale * LOG2E, scale, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
            *xr.stride(), *wqkv.stride(), *wo.stride(), *dyr.stride(), **meta)
    # Reductions over every row of the batch: cuBLAS (fp32 accumulation) and a fixed-order partial sum.
    dz = dz if dropout else dy.reshape(rows, c).to(cdt)
    dwqkv = dqkv.t() @ xn  # [3I, C]
    dwo = dz.t() @ att  # [C, I]
    # Two separate sums: returns of a custom op must not alias each other.
    return (dx, parts[0].sum(0).to(ln_w.dtype), parts[1].sum(0).to(ln_b.dtype), dwqkv.to(wqkv.dtype),
            dwo.to(wo.dtype))


def _fwd_op(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
            seed: torch.Tensor | None, heads: int, eps: float, scale: float, mask_kind: int, frame_size: int,
            cls_pos: int, allow_self: bool, dropout_p: float) -> torch.Tensor:
    return attention_block_fwd(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos,
                               allow_self, dropout_p)


def _bwd_op(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor,
            wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float, scale: float, mask_kind: int,
            frame_size: int, cls_pos: int, allow_self: bool,
            dropout_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_block_bwd(dy, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size,
                               cls_pos, allow_self, dropout_p)


def _fwd_fake(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
              dropout_p):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _bwd_fake(dy, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
              dropout_p):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(ln_w),
            torch.empty_like(ln_b), torch.empty_like(wqkv), torch.empty_like(wo))


_register("hitrs_fast::attention_block_fwd", _fwd_op, _fwd_fake)
_register("hitrs_fast::attention_block_bwd", _bwd_op, _bwd_fake)


class AttentionBlockFunction(torch.autograd.Function):
    """Autograd wrapper; saves x, the parameters and the dropout seed only (everything else is recomputed).

    ``apply(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
    dropout_p) -> out [B, N, C]``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
                dropout_p):
        params = (heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self, dropout_p)
        out = torch.ops.hitrs_fast.attention_block_fwd(x, ln_w, ln_b, wqkv, wo, seed, *params)
        ctx.save_for_backward(x, ln_w, ln_b, wqkv, wo, seed)
        ctx.params = params
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, ln_w, ln_b, wqkv, wo, seed = ctx.saved_tensors
        grads = torch.ops.hitrs_fast.attention_block_bwd(dy, x, ln_w, ln_b, wqkv, wo, seed, *ctx.params)
        return (*grads, None, None, None, None, None, None, None, None, None)
