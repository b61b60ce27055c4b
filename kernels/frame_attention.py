"""Frame-masked softmax attention (C-TRS clip attention) in Triton, forward and backward.

What it computes, per (sequence b, head h), with ``s = scale``::

    S = s * Q K^T                                  [N, N]
    S[q, k] = -inf  where not allowed(q, k)
    O = softmax(S) V,   LSE[q] = logsumexp_k S[q, k]   (natural log, fp32)

``allowed`` comes from integer token indices inside the kernel; no ``[N, N]`` mask or
score matrix ever exists in memory. Mask kinds (``MASK_KIND``):

- 1, frame mask (:class:`hitrs_fast.masks.FrameMask`): tokens frame-major,
  ``frame(t) = t // frame_size`` after removing the CLS offset; CLS (first, last or
  absent) is in no frame, so it attends to all and all attend to it::

      allowed(q, k) = frame(q) != frame(k)  or  (allow_self and q == k)

- 0, no mask (F-TRS). Both kinds combine with optional per-sample key padding
  (``lengths[b]``, :class:`~hitrs_fast.masks.KeyPaddingMask`): keys ``>= lengths[b]`` are
  blocked except a trailing CLS key when ``cls_last``. A row with no visible key at all
  (lengths 0 and no CLS) gets O = 0, LSE = +inf and zero gradients.

Shapes and dtypes: q, k, v ``[B, H, N, D]`` with arbitrary strides (the intended input
is the BNHD view ``x.view(B, N, H, D).transpose(1, 2)`` of a ``[B, N, H*D]``
projection, which is read in place); float32, float16, bfloat16 with fp32
accumulation; ``D`` in {16, 32, 64, 128}; any ``N >= 1`` (tested 26 ... 1024+).
Output layout: O, dQ, dK and dV are allocated ``[B, N, H, D]`` contiguous and
returned as their ``[B, H, N, D]`` transposed views, so ``o.transpose(1, 2).reshape(B,
N, H*D)`` is a free view for the output projection. LSE is ``[B, H, N]`` fp32.

Ideas used (the code is written here): the online softmax and the
recompute-from-LSE backward of FlashAttention / FlashAttention-2 (Dao et al.), with
the dK/dV and dQ passes split into two kernels as in the Triton fused-attention
tutorial so the backward needs no atomics and is deterministic; ``exp2`` with
``log2(e)`` folded into the scale; the whole-row-on-chip single pass of
window-attention kernels as the second forward variant.

Grid: axis 0 = sequence * head (int64 offsets; limit 2^31 - 1, so B * H may exceed
65 535), axis 1 = q-tiles (forward, dQ) or kv-tiles (dK/dV): cdiv(N, BLOCK), 11 for
the official N = 176 with 16-row tiles.

Forward variants, picked by autotuning per (N, D, dtype, mask kind):

- online (``WHOLE_ROW=False``): loop over ``BLOCK_N``-wide KV chunks with rescaling;
- whole row (``WHOLE_ROW=True``): the full key row (next power of two >= N, only
  offered while it is <= 256) in one score tile, one max, one exp2 pass, no rescale.

Tile skipping: a (q-tile, kv-tile) pair whose queries and keys all lie in one and the
same frame (no CLS among them) has every score masked, except the diagonal under
``allow_self``; such a pair is skipped when ``allow_self=False`` or when the two tiles
do not overlap. With 25-joint frames this needs 16-wide tiles and ``allow_self=False``
(a 16-aligned tile inside one frame can only meet another such tile of the same frame
on the diagonal): at N = 176 it skips 4 of the 121 tile pairs (q-tiles 0, 2, 5, 8). Wider tiles never fit
inside a 25-token frame, so nothing is skipped there (skipping buys little; padding and
bytes matter). Where no skip is possible the test is not even compiled in
(constexpr conditions), so the official allow_self=True loop has no branch.

Environment: ``HITRS_FAST_SINGLE_CONFIG=1`` replaces autotuning with one config per
kernel (needed under ``TRITON_INTERPRET=1``, which also forces it).
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
MAX_TOKENS = 4096
"""Largest N the launcher accepts; beyond it the online loop still works but is untested."""
WHOLE_ROW_MAX = 256
"""The whole-row variant is offered only while next_power_of_2(N) <= this."""

MASK_NONE, MASK_FRAME = 0, 1
CLS_NONE, CLS_FIRST, CLS_LAST = 0, 1, 2
CLS_CODES = {"none": CLS_NONE, "first": CLS_FIRST, "last": CLS_LAST}
IS_DETERMINISTIC = True


def _single_config() -> bool:
    flag = os.environ.get("HITRS_FAST_SINGLE_CONFIG", "0").strip().lower() not in ("", "0", "false", "no")
    return flag or os.environ.get("TRITON_INTERPRET", "0") == "1"


def _is_hopper_or_newer() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


@functools.cache
def _fwd_configs() -> list[triton.Config]:
    """Forward configs, built at first launch (never at import) and gated on the GPU generation."""
    if _single_config():
        # 32 x 32 online: 1.19x padding at N = 176 and few interpreter iterations.
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "WHOLE_ROW": False}, num_warps=4, num_stages=1)]
    stages = (2, 3) if _is_hopper_or_newer() else (2,)
    configs = []
    for bm, bn in ((16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64), (128, 64)):
        for s in stages:
            configs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WHOLE_ROW": False},
                                         num_warps=4 if bm <= 64 else 8, num_stages=s))
    for bm in (16, 32, 64):
        for w in (4, 8):
            configs.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": 16, "WHOLE_ROW": True}, num_warps=w,
                                         num_stages=1))
    return configs


@functools.cache
def _bwd_configs() -> list[triton.Config]:
    """Backward (dK/dV and dQ) configs; same gating as :func:`_fwd_configs`."""
    if _single_config():
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)]
    stages = (2, 3) if _is_hopper_or_newer() else (2,)
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn in ((16, 16), (32, 32), (16, 32), (32, 16), (64, 32), (32, 64), (64, 64))
            for w in (4, 8) for s in stages]


def _prune_fwd(configs, named_args, **kwargs):
    """Drop whole-row configs whose score tile would be too large, and tiles far wider than N."""
    n_pow2, d = named_args["N_POW2"], named_args["HEAD_DIM"]
    kept = [c for c in configs
            if not (c.kwargs["WHOLE_ROW"] and (n_pow2 > WHOLE_ROW_MAX or n_pow2 * d > WHOLE_ROW_MAX * 128))
            and (c.kwargs["WHOLE_ROW"] or c.kwargs["BLOCK_N"] <= max(16, n_pow2))
            and c.kwargs["BLOCK_M"] <= max(16, n_pow2)]
    return kept or configs[:1]


def _prune_bwd(configs, named_args, **kwargs):
    n_pow2 = named_args["N_POW2"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= max(16, n_pow2) and c.kwargs["BLOCK_N"] <= max(16, n_pow2)]
    return kept or configs[:1]


@triton.jit
def _mma(a, b, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr):
    """``tl.dot`` with fp32 accumulation. ``INTERP_BF16`` is set only under the Triton 3.9
    interpreter for bf16, whose numpy ``tl.dot`` returns garbage for bf16 operands; bf16
    products are exact in fp32, so the upcast gives the same result a GPU computes."""
    if INTERP_BF16:
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b, input_precision=INPUT_PRECISION)
    return c


@triton.jit
def _cast(x, dtype: tl.constexpr, INTERP_BF16: tl.constexpr):
    """``x.to(dtype)``. Under ``INTERP_BF16`` (Triton 3.9 interpreter, bf16 only) x is first
    rounded to the nearest bf16 value, ties to even, with integer bit arithmetic: that
    interpreter truncates fp32 -> bf16 toward zero, a biased error a GPU does not make."""
    if INTERP_BF16:
        bits = x.to(tl.float32).to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _frame_id(i, N, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr):
    # CLS gets -1, a frame id no other token has, so it is "another frame" for everyone.
    if CLS_POS == 1:
        fid = tl.where(i == 0, -1, (i - 1) // FRAME_SIZE)
    elif CLS_POS == 2:
        fid = tl.where(i == N - 1, -1, i // FRAME_SIZE)
    else:
        fid = i // FRAME_SIZE
    return fid


@triton.jit
def _allowed(o_q, o_k, N, L, MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr,
             ALLOW_SELF: tl.constexpr, HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr):
    """Boolean [len(o_q), len(o_k)] of the attendable (q, k) pairs; keys beyond N are always blocked."""
    m_k = o_k < N
    if HAS_LENGTHS:
        # Key padding: keys past the sample's length are blocked, a trailing CLS key stays visible.
        if CLS_LAST_KEY:
            m_k = m_k & ((o_k < L) | (o_k == N - 1))
        else:
            m_k = m_k & (o_k < L)
    m_s = (o_q[:, None] >= 0) & m_k[None, :]
    if MASK_KIND == 1:
        f_q = _frame_id(o_q, N, FRAME_SIZE, CLS_POS)
        f_k = _frame_id(o_k, N, FRAME_SIZE, CLS_POS)
        ok = (f_q[:, None] != f_k[None, :]) | (f_q[:, None] == -1) | (f_k[None, :] == -1)
        if ALLOW_SELF:
            # The diagonal stays allowed: the released mask is block-ones minus the identity.
            ok = ok | (o_q[:, None] == o_k[None, :])
        m_s = m_s & ok
    return m_s


@triton.jit
def _same_frame_tiles(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, FRAME_SIZE: tl.constexpr,
                      CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr):
    """True when the q-tile and the kv-tile lie wholly in one frame (and, under allow_self, do not overlap)."""
    q1 = tl.minimum(q0 + BLOCK_Q, N) - 1
    k1 = tl.minimum(k0 + BLOCK_K, N) - 1
    fq0 = _frame_id(q0, N, FRAME_SIZE, CLS_POS)
    fq1 = _frame_id(q1, N, FRAME_SIZE, CLS_POS)
    fk0 = _frame_id(k0, N, FRAME_SIZE, CLS_POS)
    fk1 = _frame_id(k1, N, FRAME_SIZE, CLS_POS)
    # Frame ids are non-decreasing along the tokens apart from CLS (-1), so equal end
    # points mean the whole tile sits in that one frame.
    same = (fq0 >= 0) & (fq0 == fq1) & (fk0 == fq0) & (fk1 == fq0)
    if ALLOW_SELF:
        same = same & ((k0 > q1) | (k1 < q0))
    return same


@triton.jit
def _tile_visible(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, MASK_KIND: tl.constexpr,
                  FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr):
    """False when every (q, k) of the tile pair is blocked by the frame rule (see the module docstring).

    The runtime test is compiled in only where a skip is possible at all (tiles no wider
    than a frame; under allow_self, two disjoint tiles fitting in one frame). Elsewhere,
    e.g. the official allow_self mask with 16-wide tiles, this is the constant True, so the
    KV loop has no branch that could stop Triton from software-pipelining its loads.
    """
    visible = True
    if MASK_KIND == 1:
        if BLOCK_Q <= FRAME_SIZE:
            if BLOCK_K <= FRAME_SIZE:
                if ALLOW_SELF:
                    if BLOCK_Q + BLOCK_K <= FRAME_SIZE:
                        visible = not _same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS, ALLOW_SELF)
                else:
                    visible = not _same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS, ALLOW_SELF)
    return visible


@triton.jit
def frame_attention_fwd_kernel(
    Q, K, V, OUT, LSE, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, qk_scale,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WHOLE_ROW: tl.constexpr,
):
    # qk_scale = scale * log2(e): scores live in log2 units so the softmax uses exp2.
    i_bh = tl.program_id(0).to(tl.int64)
    i_m = tl.program_id(1)
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

    if WHOLE_ROW:
        o_n = tl.arange(0, N_POW2)
        m_n = o_n < N
        # [NP, D]
        b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None], other=0.0)
        b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, NP]
        m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
        b_s = tl.where(m_s, b_s, float("-inf"))
        b_mx = tl.max(b_s, 1)  # [BM]
        b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
        b_p = tl.exp2(b_s - b_mx[:, None])  # [BM, NP]
        b_l = tl.sum(b_p, 1)  # [BM]
        b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None], other=0.0)
        b_acc = _mma(_cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION, INTERP_BF16)  # [BM, D]
    else:
        b_mx = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
        b_acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        for k0 in range(0, N, BLOCK_N):
            if _tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF):
                o_n = k0 + tl.arange(0, BLOCK_N)
                m_n = o_n < N
                # [BN, D]
                b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                              other=0.0)
                b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
                m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS,
                               CLS_LAST_KEY)
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
                b_acc = b_acc * b_alpha[:, None] + _mma(_cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION,
                                                    INTERP_BF16)
                b_mx = b_new
        b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)

    b_empty = b_l == 0.0
    b_o = b_acc / tl.where(b_empty, 1.0, b_l)[:, None]
    tl.store(p_o + o_m[:, None] * stride_on + o_d[None, :] * stride_od, _cast(b_o, OUT.dtype.element_ty, INTERP_BF16),
             mask=m_m[:, None])
    # Natural-log LSE; +inf for a row with no visible key so the backward's p = exp2(s - lse) is 0.
    b_lse = tl.where(b_empty, float("inf"), (b_mx + tl.log2(tl.where(b_empty, 1.0, b_l))) * 0.6931471805599453)
    tl.store(LSE + i_bh * N + o_m, b_lse, mask=m_m)


@triton.jit
def frame_attention_bwd_preprocess_kernel(
    OUT, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_od,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # delta[q] = sum_d dO[q, d] * O[q, d] = sum_k P[q, k] dP[q, k], the softmax-backward row term.
    i_bh = tl.program_id(0).to(tl.int64)
    i_m = tl.program_id(1)
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


@triton.jit
def frame_attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One program owns one kv-tile and loops over all q-tiles, so dK and dV are written
    # once, without atomics (deterministic).
    i_bh = tl.program_id(0).to(tl.int64)
    i_n = tl.program_id(1)
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
    for q0 in range(0, N, BLOCK_M):
        if _tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF):
            o_m = q0 + tl.arange(0, BLOCK_M)
            m_m = o_m < N
            b_q = tl.load(p_q + o_m[:, None] * stride_qn + o_d[None, :] * stride_qd, mask=m_m[:, None],
                          other=0.0)  # [BM, D]
            b_do = tl.load(p_do + o_m[:, None] * stride_don + o_d[None, :] * stride_dod, mask=m_m[:, None],
                           other=0.0)  # [BM, D]
            b_lse = tl.load(LSE + i_bh * N + o_m, mask=m_m, other=0.0) * 1.4426950408889634  # [BM], log2 units
            b_delta = tl.load(DELTA + i_bh * N + o_m, mask=m_m, other=0.0)  # [BM]
            b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
            m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
            m_s = m_s & m_m[:, None]
            b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, BN], blocked -> 0
            b_dv += _mma(tl.trans(_cast(b_p, b_do.dtype, INTERP_BF16)), b_do, INPUT_PRECISION, INTERP_BF16)  # [BN, D]
            b_dp = _mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, BN]
            b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, BN]
            b_dk += _mma(tl.trans(_cast(b_ds, b_q.dtype, INTERP_BF16)), b_q, INPUT_PRECISION, INTERP_BF16)  # [BN, D]
    b_dk = b_dk * sm_scale
    p_g = o_n[:, None] * stride_gn + o_d[None, :] * stride_gd
    tl.store(DK + i_b * stride_gb + i_h * stride_gh + p_g, _cast(b_dk, DK.dtype.element_ty, INTERP_BF16),
             mask=m_n[:, None])
    tl.store(DV + i_b * stride_gb + i_h * stride_gh + p_g, _cast(b_dv, DV.dtype.element_ty, INTERP_BF16),
             mask=m_n[:, None])


@triton.jit
def frame_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, LENGTHS,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_gb, stride_gh, stride_gn, stride_gd,
    H, N, sm_scale, qk_scale,
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # One program owns one q-tile and loops over all kv-tiles: dQ written once, no atomics.
    i_bh = tl.program_id(0).to(tl.int64)
    i_m = tl.program_id(1)
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
    for k0 in range(0, N, BLOCK_N):
        if _tile_visible(q0, BLOCK_M, k0, BLOCK_N, N, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF):
            o_n = k0 + tl.arange(0, BLOCK_N)
            m_n = o_n < N
            b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None],
                          other=0.0)  # [BN, D]
            b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None],
                          other=0.0)  # [BN, D]
            b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, BN]
            m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
            m_s = m_s & m_m[:, None]
            b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, BN], blocked -> 0
            b_dp = _mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, BN]
            b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, BN]
            b_dq += _mma(_cast(b_ds, b_k.dtype, INTERP_BF16), b_k, INPUT_PRECISION, INTERP_BF16)  # [BM, D]
    b_dq = b_dq * sm_scale
    tl.store(DQ + i_b * stride_gb + i_h * stride_gh + o_m[:, None] * stride_gn + o_d[None, :] * stride_gd,
             _cast(b_dq, DQ.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])


@functools.cache
def _autotuned_fwd():
    return triton.autotune(configs=_fwd_configs(), key=["N", "HEAD_DIM", "MASK_KIND", "HAS_LENGTHS"],
                           prune_configs_by={"early_config_prune": _prune_fwd})(frame_attention_fwd_kernel)


@functools.cache
def _autotuned_dkdv():
    return triton.autotune(configs=_bwd_configs(), key=["N", "HEAD_DIM", "MASK_KIND", "HAS_LENGTHS"],
                           prune_configs_by={"early_config_prune": _prune_bwd})(frame_attention_bwd_dkdv_kernel)


@functools.cache
def _autotuned_dq():
    return triton.autotune(configs=_bwd_configs(), key=["N", "HEAD_DIM", "MASK_KIND", "HAS_LENGTHS"],
                           prune_configs_by={"early_config_prune": _prune_bwd})(frame_attention_bwd_dq_kernel)


def not_supported_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Why this kernel cannot take these inputs ([] when it can). Devices are checked by the dispatcher."""
    reasons = []
    if q.dim() != 4:
        return [f"q must be [B, H, N, D], got {q.dim()} dims"]
    if not (q.dtype == k.dtype == v.dtype):
        reasons.append(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if q.dtype not in SUPPORTED_DTYPES:
        reasons.append(f"dtype {q.dtype} not in (float32, bfloat16, float16)")
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        reasons.append(f"head_dim {q.shape[-1]} not in {SUPPORTED_HEAD_DIMS}")
    if not 1 <= q.shape[2] <= MAX_TOKENS:
        reasons.append(f"N = {q.shape[2]} not in [1, {MAX_TOKENS}]")
    if q.shape[0] * q.shape[1] >= 2 ** 31:
        reasons.append(f"B * H = {q.shape[0] * q.shape[1]} exceeds grid axis 0 (2^31 - 1)")
    return reasons


def _check_inputs(where: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{where}: q, k, v must be [B, H, N, D] of one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    reasons = not_supported_reasons(q, k, v)
    if reasons:
        raise ValueError(f"{where}: " + "; ".join(reasons))
    if not (q.device == k.device == v.device):
        raise ValueError(f"{where}: q, k, v on different devices ({q.device}, {k.device}, {v.device})")
    if lengths is not None:
        if lengths.dim() != 1 or lengths.shape[0] != q.shape[0]:
            raise ValueError(f"{where}: lengths must be [B] = [{q.shape[0]}], got {tuple(lengths.shape)}")
        if lengths.dtype not in (torch.int32, torch.int64) or lengths.device != q.device:
            raise ValueError(f"{where}: lengths must be int32/int64 on {q.device}, got {lengths.dtype} on "
                             f"{lengths.device}")


def _precision(dtype: torch.dtype) -> str:
    # fp32 I/O keeps exact fp32 products (the 1e-5 tolerance); 16-bit inputs ignore it.
    return "ieee" if dtype == torch.float32 else "tf32"


def _common_meta(q: torch.Tensor, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                 has_lengths: bool, cls_last_key: bool) -> dict:
    return {"HEAD_DIM": q.shape[-1], "N_POW2": max(16, triton.next_power_of_2(q.shape[2])), "MASK_KIND": mask_kind,
            "FRAME_SIZE": frame_size, "CLS_POS": cls_pos, "ALLOW_SELF": allow_self, "HAS_LENGTHS": has_lengths,
            "CLS_LAST_KEY": cls_last_key, "INPUT_PRECISION": _precision(q.dtype),
            "INTERP_BF16": q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") == "1"}


def _bnhd_like(q: torch.Tensor) -> torch.Tensor:
    """Fresh ``[B, N, H, D]`` buffer returned as its ``[B, H, N, D]`` view (free reshape to [B, N, H*D])."""
    b, h, n, d = q.shape
    return torch.empty((b, n, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)


def frame_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                        scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        cls_last_key: bool, config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward launcher.

    Args:
        q, k, v: ``[B, H, N, D]``, any strides, one dtype.
        lengths: int ``[B]`` key lengths or None.
        scale: softmax scale (usually ``1 / sqrt(D)``).
        mask_kind, frame_size, cls_pos, allow_self, cls_last_key: the mask (module docstring).
        config: explicit ``{"BLOCK_M", "BLOCK_N", "WHOLE_ROW", "num_warps"}`` instead of autotuning
            (tests use it to exercise both variants and tile skipping).

    Returns:
        ``o`` ``[B, H, N, D]`` (a view of a ``[B, N, H, D]`` buffer), ``lse`` fp32 ``[B, H, N]``.
    """
    _check_inputs("frame_attention_fwd", q, k, v, lengths)
    b, h, n, _ = q.shape
    o = _bnhd_like(q)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    meta = _common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    lens = lengths if lengths is not None else lse  # a placeholder pointer, never read
    args = (q, k, v, o, lse, lens, *q.stride(), *k.stride(), *v.stride(), *o.stride(), h, n, scale * LOG2E)
    if config is not None:
        cfg = dict(config)
        num_warps = cfg.pop("num_warps", 4)
        grid = (b * h, triton.cdiv(n, cfg["BLOCK_M"]))
        frame_attention_fwd_kernel[grid](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        grid = lambda meta_: (b * h, triton.cdiv(n, meta_["BLOCK_M"]))
        wrap_triton(_autotuned_fwd())[grid](*args, **meta)
    return o, lse


def frame_attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                        lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                        frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                        config: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward launcher: preprocess (delta), then the dK/dV kernel, then the dQ kernel.

    Args:
        do, o: ``[B, H, N, D]`` upstream gradient and forward output (any strides).
        q, k, v, lse, lengths, scale, mask fields: as given to / returned by :func:`frame_attention_fwd`.
        config: explicit ``{"BLOCK_M", "BLOCK_N", "num_warps"}`` instead of autotuning.

    Returns:
        ``dq, dk, dv`` ``[B, H, N, D]``, each a view of a fresh ``[B, N, H, D]`` buffer.
    """
    _check_inputs("frame_attention_bwd", q, k, v, lengths)
    if do.shape != q.shape or o.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(f"frame_attention_bwd: do {tuple(do.shape)} / o {tuple(o.shape)} must be {tuple(q.shape)} "
                         f"and lse {tuple(lse.shape)} must be {tuple(q.shape[:3])}")
    if not lse.is_contiguous() or lse.dtype != torch.float32:
        raise ValueError("frame_attention_bwd: lse must be a contiguous float32 [B, H, N] tensor")
    b, h, n, d = q.shape
    do = do.to(q.dtype)
    delta = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    block_pre = 64
    wrap_triton(frame_attention_bwd_preprocess_kernel)[(b * h, triton.cdiv(n, block_pre))](
        o, do, delta, *o.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_M=block_pre)
    dq, dk, dv = _bnhd_like(q), _bnhd_like(q), _bnhd_like(q)
    meta = _common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    lens = lengths if lengths is not None else delta
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride())
    tail = (h, n, scale, scale * LOG2E)
    dkdv_args = (q, k, v, do, lse, delta, dk, dv, lens, *strides, *tail)
    dq_args = (q, k, v, do, lse, delta, dq, lens, *strides, *tail)
    if config is not None:
        cfg = dict(config)
        num_warps = cfg.pop("num_warps", 4)
        cfg.pop("WHOLE_ROW", None)
        frame_attention_bwd_dkdv_kernel[(b * h, triton.cdiv(n, cfg["BLOCK_N"]))](
            *dkdv_args, **meta, **cfg, num_warps=num_warps, num_stages=1)
        frame_attention_bwd_dq_kernel[(b * h, triton.cdiv(n, cfg["BLOCK_M"]))](
            *dq_args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        wrap_triton(_autotuned_dkdv())[lambda m: (b * h, triton.cdiv(n, m["BLOCK_N"]))](*dkdv_args, **meta)
        wrap_triton(_autotuned_dq())[lambda m: (b * h, triton.cdiv(n, m["BLOCK_M"]))](*dq_args, **meta)
    return dq, dk, dv


def _frame_attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                            scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                            cls_last_key: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return frame_attention_fwd(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)


def _frame_attention_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                            lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                            frame_size: int, cls_pos: int, allow_self: bool,
                            cls_last_key: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return frame_attention_bwd(do, q, k, v, o, lse, lengths, scale, mask_kind, frame_size, cls_pos, allow_self,
                               cls_last_key)


def _fwd_fake(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
    return _bnhd_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


def _bwd_fake(do, q, k, v, o, lse, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
    return _bnhd_like(q), _bnhd_like(q), _bnhd_like(q)


def _register(name: str, fn, fake):
    """``triton_op`` on real Triton, so ``torch.compile`` (Inductor) sees the kernels; under
    ``TRITON_INTERPRET=1`` an opaque ``custom_op`` with a shape-only fake instead.

    Why: the interpreter turns ``@triton.jit`` into plain Python functions that
    ``wrap_triton`` cannot trace, so a ``triton_op`` body would run the kernel on fake
    tensors during compilation. The opaque op keeps ``torch.compile(fullgraph=True)``
    tracing (one graph node) and runs the kernel for real at run time.
    """
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        op = torch.library.custom_op(name, mutates_args=())(fn)
        op.register_fake(fake)
        return op
    return triton_op(name, mutates_args=())(fn)


_register("hitrs_fast::frame_attention_fwd", _frame_attention_fwd_op, _fwd_fake)
_register("hitrs_fast::frame_attention_bwd", _frame_attention_bwd_op, _bwd_fake)


class FrameAttentionFunction(torch.autograd.Function):
    """Autograd wrapper; saves q, k, v, o and the fp32 LSE (no ``[N, N]`` tensor).

    ``apply(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)
    -> (o [B, H, N, D], lse [B, H, N])``; the LSE output is not differentiable.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
        o, lse = torch.ops.hitrs_fast.frame_attention_fwd(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos,
                                                          allow_self, cls_last_key)
        ctx.save_for_backward(q, k, v, o, lse, lengths)
        ctx.params = (scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do, dlse):
        q, k, v, o, lse, lengths = ctx.saved_tensors
        dq, dk, dv = torch.ops.hitrs_fast.frame_attention_bwd(do, q, k, v, o, lse, lengths, *ctx.params)
        return dq, dk, dv, None, None, None, None, None, None, None


def frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                    mask_kind: int = MASK_FRAME, frame_size: int = 25, cls: str = "last", allow_self: bool = True,
                    lengths: torch.Tensor | None = None, cls_last_key: bool = True,
                    return_lse: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differentiable frame-masked attention on the Triton kernels (no dispatch, no fallback).

    Args:
        q, k, v: ``[B, H, N, D]``, any strides; float32 / float16 / bfloat16; D in {16, 32, 64, 128}.
        scale: default ``1 / sqrt(D)``.
        mask_kind: ``MASK_FRAME`` (1) or ``MASK_NONE`` (0).
        frame_size, cls, allow_self: the frame rule (``cls`` in "first", "last", "none").
        lengths: optional int ``[B]`` key lengths (key padding), with ``cls_last_key`` keeping key N-1.
        return_lse: also return the natural-log LSE ``[B, H, N]`` fp32.

    Returns:
        ``o`` ``[B, H, N, D]`` in q's dtype, a view of a ``[B, N, H, D]`` buffer (and ``lse``).
    """
    if cls not in CLS_CODES:
        raise ValueError(f"frame_attention: cls must be one of {tuple(CLS_CODES)}, got {cls!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    o, lse = FrameAttentionFunction.apply(q, k, v, lengths, scale, int(mask_kind), int(frame_size), CLS_CODES[cls],
                                          bool(allow_self), bool(cls_last_key))
    return (o, lse) if return_lse else o
