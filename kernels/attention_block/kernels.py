"""The ``@triton.jit`` kernels of the fused pre-LN attention sublayer, forward and backward (what they compute,
their tile and grid: :mod:`hitrs_fast.kernels.attention_block`)."""

from __future__ import annotations

import triton
import triton.language as tl

from hitrs_fast.kernels.common.jit import cast, keep_mask, mma
from hitrs_fast.kernels.common.masks import allowed


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
    b_q = cast(mma(b_xn, b_wq, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)  # [R, D]
    b_k = cast(mma(b_xn, b_wk, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
    b_v = cast(mma(b_xn, b_wv, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
    b_s = tl.where(m_att, mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale, float("-inf"))
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
    m_att = allowed(o_t, o_t, N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, False, False)
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
    b_xn = cast(b_xn, WQKV.dtype.element_ty, INTERP_BF16)  # [R, CP], the dots' operand
    b_z = tl.zeros([ROWS, C_PAD], dtype=tl.float32)  # W_o output, summed over the heads on chip
    for h in range(HEADS):
        b_wq, b_wk, b_wv, b_wo = _head_weights(WQKV, WO, h, o_c, m_c, o_d, stride_wr, stride_wc, stride_or,
                                               stride_oc, HEADS, HEAD_DIM)
        b_q, b_k, b_v, b_p = _head_probabilities(b_xn, b_wq, b_wk, b_wv, m_att, qk_scale, INPUT_PRECISION,
                                                 INTERP_BF16)
        b_a = mma(cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION, INTERP_BF16)  # [R, D]
        b_z += mma(cast(b_a, b_v.dtype, INTERP_BF16), b_wo, INPUT_PRECISION, INTERP_BF16)  # [R, CP]
    if DROPOUT:
        b_z = tl.where(keep_mask(SEED, o_row, o_c, C, drop_p), b_z * drop_scale, 0.0)
    tl.store(OUT + o_row[:, None] * C + o_c[None, :], cast(b_x + b_z, OUT.dtype.element_ty, INTERP_BF16), mask=m_x)


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
    b_xn = cast(b_xn, WQKV.dtype.element_ty, INTERP_BF16)  # [R, CP], the dots' operand
    inner = HEADS * HEAD_DIM
    tl.store(XN + o_row[:, None] * C + o_c[None, :], b_xn, mask=m_x)
    b_dy = tl.load(DY + o_row[:, None] * stride_dyr + o_c[None, :] * stride_dyc, mask=m_x, other=0.0).to(tl.float32)
    b_dz = b_dy
    if DROPOUT:
        b_dz = tl.where(keep_mask(SEED, o_row, o_c, C, drop_p), b_dy * drop_scale, 0.0)
        tl.store(DZ + o_row[:, None] * C + o_c[None, :], cast(b_dz, DZ.dtype.element_ty, INTERP_BF16), mask=m_x)
    b_dz = cast(b_dz, WQKV.dtype.element_ty, INTERP_BF16)
    b_dxn = tl.zeros([ROWS, C_PAD], dtype=tl.float32)  # dL/dxn, summed over the heads on chip
    p_row = o_row[:, None] * (3 * inner) + o_d[None, :]
    for h in range(HEADS):
        b_wq, b_wk, b_wv, b_wo = _head_weights(WQKV, WO, h, o_c, m_c, o_d, stride_wr, stride_wc, stride_or,
                                               stride_oc, HEADS, HEAD_DIM)
        b_q, b_k, b_v, b_p = _head_probabilities(b_xn, b_wq, b_wk, b_wv, m_att, qk_scale, INPUT_PRECISION,
                                                 INTERP_BF16)
        cdt = b_v.dtype
        b_p16 = cast(b_p, cdt, INTERP_BF16)
        b_a = mma(b_p16, b_v, INPUT_PRECISION, INTERP_BF16)  # [R, D]
        tl.store(ATT + o_row[:, None] * inner + h * HEAD_DIM + o_d[None, :], cast(b_a, cdt, INTERP_BF16),
                 mask=m_r[:, None])
        b_da = cast(mma(b_dz, tl.trans(b_wo), INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)  # [R, D]
        b_dp = mma(b_da, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [R, R]
        b_ds = b_p * (b_dp - tl.sum(b_p * b_dp, 1)[:, None])  # delta = rowsum(P * dP)
        b_ds16 = cast(b_ds, cdt, INTERP_BF16)
        b_dq = cast(mma(b_ds16, b_k, INPUT_PRECISION, INTERP_BF16) * sm_scale, cdt, INTERP_BF16)  # [R, D]
        b_dk = cast(mma(tl.trans(b_ds16), b_q, INPUT_PRECISION, INTERP_BF16) * sm_scale, cdt, INTERP_BF16)
        b_dv = cast(mma(tl.trans(b_p16), b_da, INPUT_PRECISION, INTERP_BF16), cdt, INTERP_BF16)
        tl.store(DQKV + p_row + h * HEAD_DIM, b_dq, mask=m_r[:, None])
        tl.store(DQKV + p_row + (HEADS + h) * HEAD_DIM, b_dk, mask=m_r[:, None])
        tl.store(DQKV + p_row + (2 * HEADS + h) * HEAD_DIM, b_dv, mask=m_r[:, None])
        b_dxn += mma(b_dq, tl.trans(b_wq), INPUT_PRECISION, INTERP_BF16)  # [R, CP]
        b_dxn += mma(b_dk, tl.trans(b_wk), INPUT_PRECISION, INTERP_BF16)
        b_dxn += mma(b_dv, tl.trans(b_wv), INPUT_PRECISION, INTERP_BF16)
    # LayerNorm backward over the C real columns: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dxn * w.
    b_w = tl.load(LN_W + o_c, mask=m_c, other=0.0).to(tl.float32)
    b_g = b_dxn * b_w[None, :]
    b_c1 = tl.sum(b_g * b_xhat, 1) / C  # [R]
    b_c2 = tl.sum(b_g, 1) / C
    b_dx = (b_g - b_xhat * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] + b_dy  # + the residual's dy
    tl.store(DX + o_row[:, None] * C + o_c[None, :], cast(b_dx, DX.dtype.element_ty, INTERP_BF16), mask=m_x)
    # Padding rows have dxn = 0 and xhat = 0, so they add nothing.
    tl.store(DLN_W_PART + pid * C + o_c, tl.sum(b_dxn * b_xhat, 0), mask=m_c)
    tl.store(DLN_B_PART + pid * C + o_c, tl.sum(b_dxn, 0), mask=m_c)

