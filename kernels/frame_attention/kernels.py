"""The ``@triton.jit`` kernels of frame-masked attention: the split forward (online or whole-row softmax per
q-tile), the split backward (delta, dK/dV, dQ, and dBias), the resident forward and backward (one program per
sequence and head) and the attention-dropout mask. What they compute, their grid and their variants:
:mod:`hitrs_fast.kernels.frame_attention`.

The split kernels take, besides the mask, an additive bias (``HAS_BIAS``), frames from per-token ids or
joint-major arithmetic with a window rule (``FRAME_SOURCE``, ``WINDOW``, ``NUM_FRAMES``) and attention dropout
(``DROPOUT``); each is a constexpr whose default compiles the code the kernels had without it. Their runtime
arguments come after the old ones, so the old parameters keep their PTX numbers.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.random import uint_to_uniform_float

from hitrs_fast.kernels.common.jit import cast, mma
from hitrs_fast.kernels.common.masks import allowed, tile_visible


@triton.jit
def attention_keep(seed, i_bh, o_q, o_k, N, dropout_p):
    """Attention-dropout keep mask ``[len(o_q), len(o_k)]`` of sequence-head ``i_bh``: Philox keyed by ``seed`` on
    the counter ``(q * N + k, i_bh)``, kept with probability ``1 - dropout_p``. Forward and backward draw the same
    bits; :func:`attention_dropout_mask_kernel` writes them out."""
    c0 = (o_q[:, None] * N + o_k[None, :]).to(tl.uint32)
    c1 = (tl.full(c0.shape, 0, tl.int64) + i_bh).to(tl.uint32)
    zero = tl.zeros_like(c0)
    r0, _, _, _ = tl.philox(seed, c0, c1, zero, zero)
    return uint_to_uniform_float(r0) >= dropout_p


@triton.jit
def _whole_row_tile(b_q, b_k, b_v, o_m, o_n, N, L, qk_scale, MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr,
                    CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                    CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr,
                    b_z=0.0, keep=0, drop_scale=1.0, HAS_BIAS: tl.constexpr = False, DROPOUT: tl.constexpr = False,
                    WINDOW: tl.constexpr = 0, FRAME_SOURCE: tl.constexpr = 0, NUM_FRAMES: tl.constexpr = 0,
                    id_m=0, id_n=0):
    """Single-pass softmax of a q-tile against its whole key row: one max, one exp2 pass, no rescale.

    b_q ``[BM, D]``, b_k and b_v ``[NP, D]`` (rows >= N zero), o_m ``[BM]`` / o_n ``[NP]`` token indices.
    ``b_z``: the bias tile in log2 units (``HAS_BIAS``); ``keep``: the dropout keep mask (``DROPOUT``);
    ``id_m`` / ``id_n``: token ids (``FRAME_SOURCE == 2``).
    Returns the unnormalised ``acc = P V [BM, D]`` (dropped out under ``DROPOUT``), the row max (log2 units;
    0 for a row with no visible key) and the row sum ``l`` of P (not dropped out), all fp32.
    """
    b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, NP]
    if HAS_BIAS:
        b_s = b_s + b_z
    m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY, WINDOW,
                  FRAME_SOURCE, NUM_FRAMES, id_m, id_n)
    b_s = tl.where(m_s, b_s, float("-inf"))
    b_mx = tl.max(b_s, 1)  # [BM]
    b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
    b_p = tl.exp2(b_s - b_mx[:, None])  # [BM, NP]
    b_l = tl.sum(b_p, 1)  # [BM]
    if DROPOUT:
        b_p = tl.where(keep, b_p * drop_scale, 0.0)
    b_acc = mma(cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION, INTERP_BF16)  # [BM, D]
    return b_acc, b_mx, b_l


@triton.jit
def _normalise_rows(b_acc, b_mx, b_l):
    """``O = acc / l`` and the natural-log LSE; a row with no visible key gets O = 0 and LSE = +inf, so the
    backward's ``p = exp2(s - lse)`` is 0 there."""
    b_empty = b_l == 0.0
    b_o = b_acc / tl.where(b_empty, 1.0, b_l)[:, None]
    b_lse = tl.where(b_empty, float("inf"), (b_mx + tl.log2(tl.where(b_empty, 1.0, b_l))) * 0.6931471805599453)
    return b_o, b_lse


@triton.jit
def _head_and_tile(N, BLOCK: tl.constexpr):
    """Decodes the one-axis grid: ``(sequence * head, tile)`` with the tile fastest, so the
    programs of one head are neighbours and its K/V is still in L2 for all of them."""
    pid = tl.program_id(0).to(tl.int64)
    n_tiles = tl.cdiv(N, BLOCK)
    return pid // n_tiles, (pid % n_tiles).to(tl.int32)


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_fwd_kernel(
    Q, K, V, OUT, LSE, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, qk_scale, BH_BUCKET,
    BIAS, stride_zb, stride_zh, stride_zq, stride_zk, Q_IDS, K_IDS, stride_iq, stride_ik, SEED, dropout_p,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WHOLE_ROW: tl.constexpr,
    HAS_BIAS: tl.constexpr, FRAME_SOURCE: tl.constexpr, NUM_FRAMES: tl.constexpr, WINDOW: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    # qk_scale = scale * log2(e): scores live in log2 units so the softmax uses exp2.
    # BH_BUCKET (log2 bucket of B * H) is read by the autotune key only.
    i_bh, i_m = _head_and_tile(N, BLOCK_M)
    i_b = i_bh // H
    i_h = i_bh % H
    p_q = Q + i_b * stride_qb + i_h * stride_qh
    p_k = K + i_b * stride_kb + i_h * stride_kh
    p_v = V + i_b * stride_vb + i_h * stride_vh
    p_o = OUT + i_b * stride_ob + i_h * stride_oh
    if HAS_LENGTHS:
        L = tl.load(LENGTHS + i_b)
    else:
        L = N

    q0 = i_m * BLOCK_M
    o_m = q0 + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    # [BM, D]
    b_q = tl.load(p_q + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd, mask=m_m[:, None], other=0.0)
    if HAS_BIAS:
        p_z = BIAS + i_b * stride_zb + i_h * stride_zh
    if FRAME_SOURCE == 2:
        id_m = tl.load(Q_IDS + i_b * stride_iq + o_m, mask=m_m, other=0)  # [BM]
        p_kid = K_IDS + i_b * stride_ik
    else:
        id_m = 0
    if DROPOUT:
        seed = tl.load(SEED)
        drop_scale = 1.0 / (1.0 - dropout_p)

    if WHOLE_ROW:
        o_n = tl.arange(0, N_POW2)
        m_n = o_n < N
        # [NP, D]
        b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None], other=0.0)
        if HAS_BIAS:
            # [BM, NP], log2 units like the scores.
            b_z = tl.load(p_z + o_m[:, None] * stride_zq + o_n[None, :] * stride_zk,
                          mask=m_m[:, None] & m_n[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
        else:
            b_z = 0.0
        if FRAME_SOURCE == 2:
            id_n = tl.load(p_kid + o_n, mask=m_n, other=0)  # [NP]
        else:
            id_n = 0
        if DROPOUT:
            keep = attention_keep(seed, i_bh, o_m, o_n, N, dropout_p)
        else:
            keep = 0
            drop_scale = 1.0
        b_acc, b_mx, b_l = _whole_row_tile(b_q, b_k, b_v, o_m, o_n, N, L, qk_scale, MASK_KIND, FRAME_SIZE, CLS_POS,
                                           ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY, INPUT_PRECISION, INTERP_BF16,
                                           b_z, keep, drop_scale, HAS_BIAS, DROPOUT, WINDOW, FRAME_SOURCE,
                                           NUM_FRAMES, id_m, id_n)
    else:
        b_mx = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
        b_acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        for k0 in range(0, N, BLOCK_N):
            if FRAME_SOURCE == 2:
                id_n = tl.load(p_kid + k0 + tl.arange(0, BLOCK_N), mask=k0 + tl.arange(0, BLOCK_N) < N, other=0)
            else:
                id_n = 0
            if tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, WINDOW,
                            FRAME_SOURCE, NUM_FRAMES, id_m, id_n):
                o_n = k0 + tl.arange(0, BLOCK_N)
                m_n = o_n < N
                # [BN, D]
                b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                              other=0.0)
                b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
                if HAS_BIAS:
                    b_s = b_s + tl.load(p_z + o_m[:, None] * stride_zq + o_n[None, :] * stride_zk,
                                        mask=m_m[:, None] & m_n[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
                m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS,
                               CLS_LAST_KEY, WINDOW, FRAME_SOURCE, NUM_FRAMES, id_m, id_n)
                b_s = tl.where(m_s, b_s, float("-inf"))
                b_new = tl.maximum(b_mx, tl.max(b_s, 1))  # [BM]
                # A row with no allowed key so far keeps max -inf; shift by 0 instead so
                # exp2 sees -inf - 0 = -inf (p = 0) rather than -inf - -inf = NaN.
                b_safe = tl.where(b_new == float("-inf"), 0.0, b_new)
                b_alpha = tl.exp2(b_mx - b_safe)  # [BM]
                b_p = tl.exp2(b_s - b_safe[:, None])  # [BM, BN]
                b_l = b_l * b_alpha + tl.sum(b_p, 1)
                b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None],
                              other=0.0)
                if DROPOUT:
                    # l sums the undropped P (the softmax); only what reaches V is dropped.
                    b_p = tl.where(attention_keep(seed, i_bh, o_m, o_n, N, dropout_p), b_p * drop_scale, 0.0)
                b_acc = b_acc * b_alpha[:, None] + mma(cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION,
                                                    INTERP_BF16)
                b_mx = b_new
        b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)

    b_o, b_lse = _normalise_rows(b_acc, b_mx, b_l)
    tl.store(p_o + o_m[:, None] * stride_on + o_d[None, :] * stride_od, cast(b_o, OUT.dtype.element_ty, INTERP_BF16),
             mask=m_m[:, None])
    tl.store(LSE + i_bh * N + o_m, b_lse, mask=m_m)


@triton.jit(do_not_specialize=["N"])
def frame_attention_bwd_preprocess_kernel(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # delta[q] = sum_d dO[q, d] * O[q, d] = sum_k P[q, k] dP[q, k], the softmax-backward row term.
    i_bh, i_m = _head_and_tile(N, BLOCK_M)
    i_b = i_bh // H
    i_h = i_bh % H
    o_m = i_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    b_o = tl.load(OUT + i_b * stride_ob + i_h * stride_oh + o_m[:, None] * stride_on + o_d[None, :] * stride_od,
                  mask=m_m[:, None], other=0.0).to(tl.float32)  # [BM, D]
    b_do = tl.load(DO + i_b * stride_dob + i_h * stride_doh + o_m[:, None] * stride_don + o_d[None, :] * stride_dod,
                   mask=m_m[:, None], other=0.0).to(tl.float32)  # [BM, D]
    tl.store(DELTA + i_bh * N + o_m, tl.sum(b_o * b_do, 1), mask=m_m)


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, sm_scale, qk_scale, BH_BUCKET,
    BIAS, stride_zb, stride_zh, stride_zq, stride_zk, Q_IDS, K_IDS, stride_iq, stride_ik, SEED, dropout_p,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, FRAME_SOURCE: tl.constexpr, NUM_FRAMES: tl.constexpr, WINDOW: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    # One program owns one kv-tile and loops over all q-tiles, so dK and dV are written
    # once, without atomics (deterministic).
    i_bh, i_n = _head_and_tile(N, BLOCK_N)
    i_b = i_bh // H
    i_h = i_bh % H
    p_q = Q + i_b * stride_qb + i_h * stride_qh
    p_do = DO + i_b * stride_dob + i_h * stride_doh
    if HAS_LENGTHS:
        L = tl.load(LENGTHS + i_b)
    else:
        L = N

    k0 = i_n * BLOCK_N
    o_n = k0 + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, HEAD_DIM)
    m_n = o_n < N
    b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd,
                  mask=m_n[:, None], other=0.0)  # [BN, D]
    b_v = tl.load(V + i_b * stride_vb + i_h * stride_vh + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd,
                  mask=m_n[:, None], other=0.0)  # [BN, D]
    b_dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    b_dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    if HAS_BIAS:
        p_z = BIAS + i_b * stride_zb + i_h * stride_zh
    if FRAME_SOURCE == 2:
        id_n = tl.load(K_IDS + i_b * stride_ik + o_n, mask=m_n, other=0)  # [BN]
        p_qid = Q_IDS + i_b * stride_iq
    else:
        id_n = 0
    if DROPOUT:
        seed = tl.load(SEED)
        drop_scale = 1.0 / (1.0 - dropout_p)
    for q0 in range(0, N, BLOCK_M):
        if FRAME_SOURCE == 2:
            id_m = tl.load(p_qid + q0 + tl.arange(0, BLOCK_M), mask=q0 + tl.arange(0, BLOCK_M) < N, other=0)
        else:
            id_m = 0
        if tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, WINDOW,
                        FRAME_SOURCE, NUM_FRAMES, id_m, id_n):
            o_m = q0 + tl.arange(0, BLOCK_M)
            m_m = o_m < N
            b_q = tl.load(p_q + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd, mask=m_m[:, None],
                          other=0.0)  # [BM, D]
            b_do = tl.load(p_do + o_m[:, None] * stride_don + o_d[None, :] * stride_dod, mask=m_m[:, None],
                           other=0.0)  # [BM, D]
            b_lse = tl.load(LSE + i_bh * N + o_m, mask=m_m, other=0.0) * 1.4426950408889634  # [BM], log2 units
            b_delta = tl.load(DELTA + i_bh * N + o_m, mask=m_m, other=0.0)  # [BM]
            b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
            if HAS_BIAS:
                b_s = b_s + tl.load(p_z + o_m[:, None] * stride_zq + o_n[None, :] * stride_zk,
                                    mask=m_m[:, None] & m_n[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
            m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY,
                          WINDOW, FRAME_SOURCE, NUM_FRAMES, id_m, id_n)
            m_s = m_s & m_m[:, None]
            b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, BN], blocked -> 0
            if DROPOUT:
                keep = attention_keep(seed, i_bh, o_m, o_n, N, dropout_p)
                b_pd = tl.where(keep, b_p * drop_scale, 0.0)  # the dropped P that reached V
            else:
                b_pd = b_p
            b_dv += mma(tl.trans(cast(b_pd, b_do.dtype, INTERP_BF16)), b_do, INPUT_PRECISION, INTERP_BF16)  # [BN, D]
            b_dp = mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, BN]
            if DROPOUT:
                b_dp = tl.where(keep, b_dp * drop_scale, 0.0)
            b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, BN]
            b_dk += mma(tl.trans(cast(b_ds, b_q.dtype, INTERP_BF16)), b_q, INPUT_PRECISION, INTERP_BF16)  # [BN, D]
    b_dk = b_dk * sm_scale
    p_g = o_n[:, None] * stride_gn + o_d[None, :] * stride_gd
    tl.store(DK + i_b * stride_gb + i_h * stride_gh + p_g, cast(b_dk, DK.dtype.element_ty, INTERP_BF16),
             mask=m_n[:, None])
    tl.store(DV + i_b * stride_gb + i_h * stride_gh + p_g, cast(b_dv, DV.dtype.element_ty, INTERP_BF16),
             mask=m_n[:, None])


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, sm_scale, qk_scale, BH_BUCKET,
    BIAS, stride_zb, stride_zh, stride_zq, stride_zk, Q_IDS, K_IDS, stride_iq, stride_ik, SEED, dropout_p,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, FRAME_SOURCE: tl.constexpr, NUM_FRAMES: tl.constexpr, WINDOW: tl.constexpr,
    DROPOUT: tl.constexpr,
):
    # One program owns one q-tile and loops over all kv-tiles: dQ written once, no atomics.
    i_bh, i_m = _head_and_tile(N, BLOCK_M)
    i_b = i_bh // H
    i_h = i_bh % H
    p_k = K + i_b * stride_kb + i_h * stride_kh
    p_v = V + i_b * stride_vb + i_h * stride_vh
    if HAS_LENGTHS:
        L = tl.load(LENGTHS + i_b)
    else:
        L = N

    q0 = i_m * BLOCK_M
    o_m = q0 + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    b_q = tl.load(Q + i_b * stride_qb + i_h * stride_qh + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd,
                  mask=m_m[:, None], other=0.0)  # [BM, D]
    b_do = tl.load(DO + i_b * stride_dob + i_h * stride_doh + o_m[:, None] * stride_don + o_d[None, :] * stride_dod,
                   mask=m_m[:, None], other=0.0)  # [BM, D]
    b_lse = tl.load(LSE + i_bh * N + o_m, mask=m_m, other=0.0) * 1.4426950408889634  # [BM], log2 units
    b_delta = tl.load(DELTA + i_bh * N + o_m, mask=m_m, other=0.0)  # [BM]
    b_dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    if HAS_BIAS:
        p_z = BIAS + i_b * stride_zb + i_h * stride_zh
    if FRAME_SOURCE == 2:
        id_m = tl.load(Q_IDS + i_b * stride_iq + o_m, mask=m_m, other=0)  # [BM]
        p_kid = K_IDS + i_b * stride_ik
    else:
        id_m = 0
    if DROPOUT:
        seed = tl.load(SEED)
        drop_scale = 1.0 / (1.0 - dropout_p)
    for k0 in range(0, N, BLOCK_N):
        if FRAME_SOURCE == 2:
            id_n = tl.load(p_kid + k0 + tl.arange(0, BLOCK_N), mask=k0 + tl.arange(0, BLOCK_N) < N, other=0)
        else:
            id_n = 0
        if tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, WINDOW,
                        FRAME_SOURCE, NUM_FRAMES, id_m, id_n):
            o_n = k0 + tl.arange(0, BLOCK_N)
            m_n = o_n < N
            b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                          other=0.0)  # [BN, D]
            b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None],
                          other=0.0)  # [BN, D]
            b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
            if HAS_BIAS:
                b_s = b_s + tl.load(p_z + o_m[:, None] * stride_zq + o_n[None, :] * stride_zk,
                                    mask=m_m[:, None] & m_n[None, :], other=0.0).to(tl.float32) * 1.4426950408889634
            m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY,
                          WINDOW, FRAME_SOURCE, NUM_FRAMES, id_m, id_n)
            m_s = m_s & m_m[:, None]
            b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, BN], blocked -> 0
            b_dp = mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, BN]
            if DROPOUT:
                b_dp = tl.where(attention_keep(seed, i_bh, o_m, o_n, N, dropout_p), b_dp * drop_scale, 0.0)
            b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, BN]
            b_dq += mma(cast(b_ds, b_k.dtype, INTERP_BF16), b_k, INPUT_PRECISION, INTERP_BF16)  # [BM, D]
    b_dq = b_dq * sm_scale
    tl.store(DQ + i_b * stride_gb + i_h * stride_gh + o_m[:, None] * stride_gn + o_d[None, :] * stride_gd,
             cast(b_dq, DQ.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_resident_fwd_kernel(
    Q, K, V, OUT, LSE, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, qk_scale, BH_BUCKET,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # One program per (sequence, head): K and V are read once and stay on chip while the program walks
    # the head's q-tiles, each a whole-row single-pass softmax.
    i_bh = tl.program_id(0).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    if HAS_LENGTHS:
        L = tl.load(LENGTHS + i_b)
    else:
        L = N
    o_n = tl.arange(0, N_POW2)
    o_d = tl.arange(0, HEAD_DIM)
    m_n = o_n < N
    # K and V stay in the kernel body: handed to a helper, torch's TTIR mutation analysis (torch.compile)
    # reports them as written and clones them.
    b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd,
                  mask=m_n[:, None], other=0.0)  # [NP, D]
    b_v = tl.load(V + i_b * stride_vb + i_h * stride_vh + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd,
                  mask=m_n[:, None], other=0.0)  # [NP, D]
    p_q = Q + i_b * stride_qb + i_h * stride_qh
    p_o = OUT + i_b * stride_ob + i_h * stride_oh
    for q0 in range(0, N, BLOCK_M):
        o_m = q0 + tl.arange(0, BLOCK_M)
        m_m = o_m < N
        b_q = tl.load(p_q + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd, mask=m_m[:, None],
                      other=0.0)  # [BM, D]
        b_acc, b_mx, b_l = _whole_row_tile(b_q, b_k, b_v, o_m, o_n, N, L, qk_scale, MASK_KIND, FRAME_SIZE, CLS_POS,
                                           ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY, INPUT_PRECISION, INTERP_BF16)
        b_o, b_lse = _normalise_rows(b_acc, b_mx, b_l)
        tl.store(p_o + o_m[:, None] * stride_on + o_d[None, :] * stride_od,
                 cast(b_o, OUT.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])
        tl.store(LSE + i_bh * N + o_m, b_lse, mask=m_m)


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_resident_bwd_kernel(
    Q, K, V, DO, LSE, DQ, DK, DV, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, sm_scale, qk_scale, BH_BUCKET,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # One program owns a whole (sequence, head): K and V read once, dK and dV accumulated on chip over its
    # q-tiles and written once; each q-tile sees its whole key row, so its dQ is complete and written once
    # and delta = rowsum(P * dP) (= rowsum(dO * O)) comes from the tile itself, without reading O.
    # Five matmuls per tile (S, dP, dQ, dV, dK), no atomics: deterministic.
    i_bh = tl.program_id(0).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    if HAS_LENGTHS:
        L = tl.load(LENGTHS + i_b)
    else:
        L = N
    o_n = tl.arange(0, N_POW2)
    o_d = tl.arange(0, HEAD_DIM)
    m_n = o_n < N
    # K and V stay in the kernel body: handed to a helper, torch's TTIR mutation analysis (torch.compile)
    # reports them as written and clones them.
    b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd,
                  mask=m_n[:, None], other=0.0)  # [NP, D]
    b_v = tl.load(V + i_b * stride_vb + i_h * stride_vh + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd,
                  mask=m_n[:, None], other=0.0)  # [NP, D]
    p_q = Q + i_b * stride_qb + i_h * stride_qh
    p_do = DO + i_b * stride_dob + i_h * stride_doh
    p_g = i_b * stride_gb + i_h * stride_gh
    b_dk = tl.zeros([N_POW2, HEAD_DIM], dtype=tl.float32)
    b_dv = tl.zeros([N_POW2, HEAD_DIM], dtype=tl.float32)
    for q0 in range(0, N, BLOCK_M):
        o_m = q0 + tl.arange(0, BLOCK_M)
        m_m = o_m < N
        b_q = tl.load(p_q + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd, mask=m_m[:, None],
                      other=0.0)  # [BM, D]
        b_do = tl.load(p_do + o_m[:, None] * stride_don + o_d[None, :] * stride_dod, mask=m_m[:, None],
                       other=0.0)  # [BM, D]
        b_lse = tl.load(LSE + i_bh * N + o_m, mask=m_m, other=0.0) * 1.4426950408889634  # [BM], log2 units
        b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, NP]
        m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
        m_s = m_s & m_m[:, None]
        b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, NP], blocked and padding -> 0
        b_dp = mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, NP]
        b_delta = tl.sum(b_p * b_dp, 1)  # [BM]
        b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, NP]
        b_dq = mma(cast(b_ds, b_k.dtype, INTERP_BF16), b_k, INPUT_PRECISION, INTERP_BF16) * sm_scale  # [BM, D]
        tl.store(DQ + p_g + o_m[:, None] * stride_gn + o_d[None, :] * stride_gd,
                 cast(b_dq, DQ.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])
        b_dv += mma(tl.trans(cast(b_p, b_do.dtype, INTERP_BF16)), b_do, INPUT_PRECISION, INTERP_BF16)  # [NP, D]
        b_dk += mma(tl.trans(cast(b_ds, b_q.dtype, INTERP_BF16)), b_q, INPUT_PRECISION, INTERP_BF16)  # [NP, D]
    p_kv = p_g + o_n[:, None] * stride_gn + o_d[None, :] * stride_gd
    tl.store(DK + p_kv, cast(b_dk * sm_scale, DK.dtype.element_ty, INTERP_BF16), mask=m_n[:, None])
    tl.store(DV + p_kv, cast(b_dv, DV.dtype.element_ty, INTERP_BF16), mask=m_n[:, None])



@triton.jit(do_not_specialize=["N", "BH_BUCKET", "B", "BATCHES"])
def frame_attention_bwd_dbias_kernel(
    Q, K, V, DO, LSE, DELTA, DBIAS, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N, qk_scale, BH_BUCKET,
    BIAS, stride_zb, stride_zh, stride_zq, stride_zk, Q_IDS, K_IDS, stride_iq, stride_ik, SEED, dropout_p,
    B, BATCHES,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr, FRAME_SOURCE: tl.constexpr, NUM_FRAMES: tl.constexpr, WINDOW: tl.constexpr,
    DROPOUT: tl.constexpr, BIAS_PER_HEAD: tl.constexpr,
):
    # dBias = dS = P * (dP - delta), the gradient of the scores, summed over the sequences (and heads) one bias
    # element serves. One program owns one (q-tile, kv-tile) of one bias head and a run of BATCHES sequences,
    # loops over them (and over every head when the bias is shared by the heads) in a fixed order and writes its
    # fp32 partial once: DBIAS[group, bias head] (the host sums the groups). No atomics: deterministic.
    pid = tl.program_id(0).to(tl.int64)
    n_qt = tl.cdiv(N, BLOCK_M)
    n_kt = tl.cdiv(N, BLOCK_N)
    i_k = (pid % n_kt).to(tl.int32)
    rest = pid // n_kt
    i_q = (rest % n_qt).to(tl.int32)
    rest = rest // n_qt
    if BIAS_PER_HEAD:
        n_hz = H
        i_hz = rest % H
        i_group = rest // H
        h_lo = i_hz
        h_hi = i_hz + 1
    else:
        n_hz = 1
        i_hz = rest * 0
        i_group = rest
        h_lo = 0
        h_hi = H
    q0 = i_q * BLOCK_M
    k0 = i_k * BLOCK_N
    o_m = q0 + tl.arange(0, BLOCK_M)
    o_n = k0 + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, HEAD_DIM)
    m_m = o_m < N
    m_n = o_n < N
    if DROPOUT:
        seed = tl.load(SEED)
        drop_scale = 1.0 / (1.0 - dropout_p)
    b_acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    b_start = i_group * BATCHES
    b_end = tl.minimum(b_start + BATCHES, B)
    for i_b in range(b_start, b_end):
        if HAS_LENGTHS:
            L = tl.load(LENGTHS + i_b)
        else:
            L = N
        if FRAME_SOURCE == 2:
            id_m = tl.load(Q_IDS + i_b * stride_iq + o_m, mask=m_m, other=0)
            id_n = tl.load(K_IDS + i_b * stride_ik + o_n, mask=m_n, other=0)
        else:
            id_m = 0
            id_n = 0
        if tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, WINDOW,
                        FRAME_SOURCE, NUM_FRAMES, id_m, id_n):
            m_s = allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY,
                          WINDOW, FRAME_SOURCE, NUM_FRAMES, id_m, id_n)
            m_s = m_s & m_m[:, None]
            for i_h in range(h_lo, h_hi):
                i_bh = i_b * H + i_h
                b_q = tl.load(Q + i_b * stride_qb + i_h * stride_qh + o_m[:, None] * stride_qn
                              + o_d[None, :] * stride_qd, mask=m_m[:, None], other=0.0)  # [BM, D]
                b_do = tl.load(DO + i_b * stride_dob + i_h * stride_doh + o_m[:, None] * stride_don
                               + o_d[None, :] * stride_dod, mask=m_m[:, None], other=0.0)  # [BM, D]
                b_k = tl.load(K + i_b * stride_kb + i_h * stride_kh + o_n[:, None] * stride_kn
                              + o_d[None, :] * stride_kd, mask=m_n[:, None], other=0.0)  # [BN, D]
                b_v = tl.load(V + i_b * stride_vb + i_h * stride_vh + o_n[:, None] * stride_vn
                              + o_d[None, :] * stride_vd, mask=m_n[:, None], other=0.0)  # [BN, D]
                b_lse = tl.load(LSE + i_bh * N + o_m, mask=m_m, other=0.0) * 1.4426950408889634  # [BM]
                b_delta = tl.load(DELTA + i_bh * N + o_m, mask=m_m, other=0.0)  # [BM]
                b_s = mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
                if HAS_BIAS:
                    b_s = b_s + tl.load(BIAS + i_b * stride_zb + i_h * stride_zh + o_m[:, None] * stride_zq
                                        + o_n[None, :] * stride_zk, mask=m_m[:, None] & m_n[None, :],
                                        other=0.0).to(tl.float32) * 1.4426950408889634
                b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, BN]
                b_dp = mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, BN]
                if DROPOUT:
                    b_dp = tl.where(attention_keep(seed, i_bh, o_m, o_n, N, dropout_p), b_dp * drop_scale, 0.0)
                b_acc += b_p * (b_dp - b_delta[:, None])
    p_out = DBIAS + ((i_group * n_hz + i_hz) * N + o_m.to(tl.int64))[:, None] * N + o_n[None, :]
    tl.store(p_out, b_acc, mask=m_m[:, None] & m_n[None, :])


@triton.jit
def attention_dropout_mask_kernel(SEED, OUT, N, dropout_p, BLOCK: tl.constexpr):
    """Writes the keep mask the attention kernels draw (int8 ``[B * H, N, N]``): one program per (sequence-head,
    q-tile), every key."""
    i_bh, i_m = _head_and_tile(N, BLOCK)
    seed = tl.load(SEED)
    o_m = i_m * BLOCK + tl.arange(0, BLOCK)
    for k0 in range(0, N, BLOCK):
        o_n = k0 + tl.arange(0, BLOCK)
        keep = attention_keep(seed, i_bh, o_m, o_n, N, dropout_p)
        tl.store(OUT + (i_bh * N + o_m[:, None]) * N + o_n[None, :], keep.to(tl.int8),
                 mask=(o_m[:, None] < N) & (o_n[None, :] < N))
