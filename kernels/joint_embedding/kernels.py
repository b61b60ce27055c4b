"""The ``@triton.jit`` kernels of the fused joint embedding: the forward and the two backward variants (frame
tiles, token tiles). What they compute and their grids: :mod:`hitrs_fast.kernels.joint_embedding`."""

from __future__ import annotations

import triton
import triton.language as tl

from hitrs_fast.kernels.common.jit import gelu_and_grad


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
    b_g, _ = gelu_and_grad(b_h)

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
        b_g, b_dgelu = gelu_and_grad(b_h)
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
        b_g, b_dgelu = gelu_and_grad(b_h)
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

