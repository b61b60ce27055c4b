"""The ``@triton.jit`` kernels of the fused feed-forward sublayer, forward and backward (what they compute, their
tiles and grid: :mod:`hitrs_fast.kernels.ffn_block`)."""

from __future__ import annotations

import triton
import triton.language as tl

from hitrs_fast.kernels.common.jit import cast, gelu_and_grad, keep_mask, mma


@triton.jit
def _row_stats(X, o_m, m_m, C, eps, stride_xm, stride_xc, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """LayerNorm statistics of the tile's rows, two passes over C in chunks (mean, then the centred squares):
    ``mean, rstd [BM]`` fp32."""
    b_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_x = m_m[:, None] & (o_k < C)[None, :]
        b_sum += tl.sum(tl.load(X + o_m[:, None] * stride_xm + o_k[None, :] * stride_xc, mask=m_x, other=0.0)
                        .to(tl.float32), 1)
    b_mean = b_sum / C
    b_var = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_x = m_m[:, None] & (o_k < C)[None, :]
        b_x = tl.load(X + o_m[:, None] * stride_xm + o_k[None, :] * stride_xc, mask=m_x, other=0.0).to(tl.float32)
        b_xc = tl.where(m_x, b_x - b_mean[:, None], 0.0)
        b_var += tl.sum(b_xc * b_xc, 1)
    return b_mean, 1.0 / tl.sqrt(b_var / C + eps)


@triton.jit
def _hidden(X, LN_W, LN_B, W1, B1, XN, b_mean, b_rstd, o_m, m_m, o_f, m_f, C,
            stride_xm, stride_xc, stride_w1f, stride_w1c, WRITE_XN: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_K: tl.constexpr, F_PAD: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr):
    """``h = LN(x) W1^T + b1`` of the tile ``[BM, F_PAD]`` fp32 (padded columns 0), C walked in chunks; with
    ``WRITE_XN`` the normalised input is stored (row-major ``[M, C]``) for the weight gradient."""
    cdt = W1.dtype.element_ty
    b_h = tl.zeros([BLOCK_M, F_PAD], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < C
        m_x = m_m[:, None] & m_k[None, :]
        b_x = tl.load(X + o_m[:, None] * stride_xm + o_k[None, :] * stride_xc, mask=m_x, other=0.0).to(tl.float32)
        b_w = tl.load(LN_W + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_b = tl.load(LN_B + o_k, mask=m_k, other=0.0).to(tl.float32)
        # Padded columns and rows are 0 in xn, so they add nothing to h (and padded rows store nothing).
        b_xn = tl.where(m_x, (b_x - b_mean[:, None]) * b_rstd[:, None] * b_w[None, :] + b_b[None, :], 0.0)
        b_xn = cast(b_xn, cdt, INTERP_BF16)  # [BM, BK], the dot operand
        if WRITE_XN:
            tl.store(XN + o_m[:, None] * C + o_k[None, :], b_xn, mask=m_x)
        b_w1t = tl.load(W1 + o_k[:, None] * stride_w1c + o_f[None, :] * stride_w1f, mask=m_k[:, None] & m_f[None, :],
                        other=0.0)  # [BK, F_PAD] = W1[:, k-chunk]^T
        b_h += mma(b_xn, b_w1t, INPUT_PRECISION, INTERP_BF16)
    return b_h + tl.load(B1 + o_f, mask=m_f, other=0.0).to(tl.float32)[None, :]


@triton.jit(do_not_specialize=["M"])
def ffn_block_fwd_kernel(
    X, LN_W, LN_B, W1, B1, W2, B2, OUT, MEAN, RSTD, SEED,
    M, C, F, eps, drop_p, drop_scale,
    stride_xm, stride_xc, stride_w1f, stride_w1c, stride_w2c, stride_w2f,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, F_PAD: tl.constexpr, DROPOUT: tl.constexpr,
    SAVE_STATS: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr,
):
    # out = x + dropout(GELU(LN(x) W1^T + b1) W2^T + b2); OUT is row-major [M, C].
    pid = tl.program_id(0).to(tl.int64)
    o_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_m = o_m < M
    o_f = tl.arange(0, F_PAD)
    m_f = o_f < F
    b_mean, b_rstd = _row_stats(X, o_m, m_m, C, eps, stride_xm, stride_xc, BLOCK_M, BLOCK_K)
    if SAVE_STATS:
        tl.store(MEAN + o_m, b_mean, mask=m_m)
        tl.store(RSTD + o_m, b_rstd, mask=m_m)
    b_h = _hidden(X, LN_W, LN_B, W1, B1, X, b_mean, b_rstd, o_m, m_m, o_f, m_f, C, stride_xm, stride_xc,
                  stride_w1f, stride_w1c, False, BLOCK_M, BLOCK_K, F_PAD, INPUT_PRECISION, INTERP_BF16)
    b_g, _ = gelu_and_grad(b_h)
    b_g = cast(tl.where(m_f[None, :], b_g, 0.0), W2.dtype.element_ty, INTERP_BF16)  # [BM, F_PAD]
    for n0 in range(0, C, BLOCK_K):
        o_n = n0 + tl.arange(0, BLOCK_K)
        m_n = o_n < C
        m_x = m_m[:, None] & m_n[None, :]
        b_w2t = tl.load(W2 + o_f[:, None] * stride_w2f + o_n[None, :] * stride_w2c,
                        mask=m_f[:, None] & m_n[None, :], other=0.0)  # [F_PAD, BK] = W2[n-chunk, :]^T
        b_z = mma(b_g, b_w2t, INPUT_PRECISION, INTERP_BF16) + tl.load(B2 + o_n, mask=m_n, other=0.0).to(
            tl.float32)[None, :]
        if DROPOUT:
            b_z = tl.where(keep_mask(SEED, o_m, o_n, C, drop_p), b_z * drop_scale, 0.0)
        b_x = tl.load(X + o_m[:, None] * stride_xm + o_n[None, :] * stride_xc, mask=m_x, other=0.0).to(tl.float32)
        tl.store(OUT + o_m[:, None] * C + o_n[None, :], cast(b_x + b_z, OUT.dtype.element_ty, INTERP_BF16), mask=m_x)


@triton.jit(do_not_specialize=["M"])
def ffn_block_bwd_kernel(
    X, LN_W, LN_B, W1, B1, W2, DY, MEAN, RSTD, SEED,
    DX, XN, G, DZ, DH, PART,
    M, C, F, drop_p, drop_scale,
    stride_xm, stride_xc, stride_w1f, stride_w1c, stride_w2c, stride_w2f, stride_dym, stride_dyc,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, F_PAD: tl.constexpr, DROPOUT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr,
):
    # Written per row (row-major, compute dtype): xn [M, C], GELU(h) [M, F], dz [M, C], dh [M, F] for the two
    # cuBLAS weight gradients, and dx [M, C] (the residual's dy included). Per program, one row of PART
    # [programs, 3C + F]: d ln_w, d ln_b, d b2 (each [C]) and d b1 ([F]), summed on the host in a fixed order.
    # Padded rows load dy = 0, so every gradient term of theirs is 0.
    pid = tl.program_id(0).to(tl.int64)
    o_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_m = o_m < M
    o_f = tl.arange(0, F_PAD)
    m_f = o_f < F
    cdt = W1.dtype.element_ty
    b_mean = tl.load(MEAN + o_m, mask=m_m, other=0.0)
    b_rstd = tl.load(RSTD + o_m, mask=m_m, other=0.0)
    b_h = _hidden(X, LN_W, LN_B, W1, B1, XN, b_mean, b_rstd, o_m, m_m, o_f, m_f, C, stride_xm, stride_xc,
                  stride_w1f, stride_w1c, True, BLOCK_M, BLOCK_K, F_PAD, INPUT_PRECISION, INTERP_BF16)
    b_g, b_dgelu = gelu_and_grad(b_h)
    m_g = m_m[:, None] & m_f[None, :]
    b_g = tl.where(m_f[None, :], b_g, 0.0)
    tl.store(G + o_m[:, None] * F + o_f[None, :], cast(b_g, cdt, INTERP_BF16), mask=m_g)
    # dG = dZ W2, C walked in chunks; dZ (dropout applied) stored for dW2, its column sums are d b2.
    b_dg = tl.zeros([BLOCK_M, F_PAD], dtype=tl.float32)
    for n0 in range(0, C, BLOCK_K):
        o_n = n0 + tl.arange(0, BLOCK_K)
        m_n = o_n < C
        m_x = m_m[:, None] & m_n[None, :]
        b_dz = tl.load(DY + o_m[:, None] * stride_dym + o_n[None, :] * stride_dyc, mask=m_x, other=0.0).to(tl.float32)
        if DROPOUT:
            b_dz = tl.where(keep_mask(SEED, o_m, o_n, C, drop_p), b_dz * drop_scale, 0.0)
        tl.store(PART + pid * (3 * C + F) + 2 * C + o_n, tl.sum(b_dz, 0), mask=m_n)
        b_dz = cast(b_dz, cdt, INTERP_BF16)
        tl.store(DZ + o_m[:, None] * C + o_n[None, :], b_dz, mask=m_x)
        b_w2 = tl.load(W2 + o_n[:, None] * stride_w2c + o_f[None, :] * stride_w2f, mask=m_n[:, None] & m_f[None, :],
                       other=0.0)  # [BK, F_PAD]
        b_dg += mma(b_dz, b_w2, INPUT_PRECISION, INTERP_BF16)
    b_dh = tl.where(m_f[None, :], b_dg * b_dgelu, 0.0)  # [BM, F_PAD]
    tl.store(PART + pid * (3 * C + F) + 3 * C + o_f, tl.sum(b_dh, 0), mask=m_f)
    b_dh = cast(b_dh, cdt, INTERP_BF16)
    tl.store(DH + o_m[:, None] * F + o_f[None, :], b_dh, mask=m_g)
    # LayerNorm backward: dxhat = (dh W1) * ln_w needs two row sums over all of C before dx can be written, so
    # dxn is computed twice (a [BM, F] x [F, BK] dot per chunk) rather than kept for the whole row.
    b_c1 = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_c2 = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < C
        m_x = m_m[:, None] & m_k[None, :]
        b_w1 = tl.load(W1 + o_f[:, None] * stride_w1f + o_k[None, :] * stride_w1c, mask=m_f[:, None] & m_k[None, :],
                       other=0.0)  # [F_PAD, BK]
        b_dxn = mma(b_dh, b_w1, INPUT_PRECISION, INTERP_BF16)  # [BM, BK]
        b_x = tl.load(X + o_m[:, None] * stride_xm + o_k[None, :] * stride_xc, mask=m_x, other=0.0).to(tl.float32)
        b_xhat = tl.where(m_x, (b_x - b_mean[:, None]) * b_rstd[:, None], 0.0)
        b_dxhat = b_dxn * tl.load(LN_W + o_k, mask=m_k, other=0.0).to(tl.float32)[None, :]
        b_c1 += tl.sum(b_dxhat * b_xhat, 1)
        b_c2 += tl.sum(b_dxhat, 1)
        tl.store(PART + pid * (3 * C + F) + o_k, tl.sum(b_dxn * b_xhat, 0), mask=m_k)
        tl.store(PART + pid * (3 * C + F) + C + o_k, tl.sum(b_dxn, 0), mask=m_k)
    b_c1 = b_c1 / C
    b_c2 = b_c2 / C
    for k0 in range(0, C, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < C
        m_x = m_m[:, None] & m_k[None, :]
        b_w1 = tl.load(W1 + o_f[:, None] * stride_w1f + o_k[None, :] * stride_w1c, mask=m_f[:, None] & m_k[None, :],
                       other=0.0)
        b_dxhat = mma(b_dh, b_w1, INPUT_PRECISION, INTERP_BF16) * tl.load(LN_W + o_k, mask=m_k, other=0.0).to(
            tl.float32)[None, :]
        b_x = tl.load(X + o_m[:, None] * stride_xm + o_k[None, :] * stride_xc, mask=m_x, other=0.0).to(tl.float32)
        b_xhat = (b_x - b_mean[:, None]) * b_rstd[:, None]
        b_dy = tl.load(DY + o_m[:, None] * stride_dym + o_k[None, :] * stride_dyc, mask=m_x, other=0.0).to(tl.float32)
        b_dx = (b_dxhat - b_xhat * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] + b_dy  # + the residual's dy
        tl.store(DX + o_m[:, None] * C + o_k[None, :], cast(b_dx, DX.dtype.element_ty, INTERP_BF16), mask=m_x)
