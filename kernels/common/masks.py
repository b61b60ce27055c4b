"""The attention mask rules as ``@triton.jit`` helpers, computed from integer token indices (no ``[N, N]``
mask ever exists in memory). Mask kinds (:data:`hitrs_fast.kernels.capabilities.MASK_NONE`, ``MASK_FRAME``):

- frame rule (:class:`hitrs_fast.masks.FrameMask`): tokens frame-major, ``frame(t) = t // frame_size`` after
  removing the CLS offset; CLS (first, last or absent: ``CLS_POS``) is in no frame, so it attends to all and
  all attend to it: ``allowed(q, k) = frame(q) != frame(k) or (allow_self and q == k)``;
- no rule (F-TRS); both combine with per-sample key padding (``lengths[b]``,
  :class:`hitrs_fast.masks.KeyPaddingMask`): keys ``>= lengths[b]`` are blocked except a trailing CLS key.
"""

from __future__ import annotations

import triton
import triton.language as tl

CLS_NONE, CLS_FIRST, CLS_LAST = 0, 1, 2
CLS_CODES = {"none": CLS_NONE, "first": CLS_FIRST, "last": CLS_LAST}
"""``CLS_POS`` codes of the kernels, by the name :class:`hitrs_fast.masks.FrameMask` uses."""


@triton.jit
def frame_id(i, N, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr):
    # CLS gets -1, a frame id no other token has, so it is "another frame" for everyone.
    if CLS_POS == 1:
        fid = tl.where(i == 0, -1, (i - 1) // FRAME_SIZE)
    elif CLS_POS == 2:
        fid = tl.where(i == N - 1, -1, i // FRAME_SIZE)
    else:
        fid = i // FRAME_SIZE
    return fid


@triton.jit
def allowed(o_q, o_k, N, L, MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr,
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
        f_q = frame_id(o_q, N, FRAME_SIZE, CLS_POS)
        f_k = frame_id(o_k, N, FRAME_SIZE, CLS_POS)
        ok = (f_q[:, None] != f_k[None, :]) | (f_q[:, None] == -1) | (f_k[None, :] == -1)
        if ALLOW_SELF:
            # The diagonal stays allowed: the released mask is block-ones minus the identity.
            ok = ok | (o_q[:, None] == o_k[None, :])
        m_s = m_s & ok
    return m_s


@triton.jit
def same_frame_tiles(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, FRAME_SIZE: tl.constexpr,
                      CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr):
    """True when the q-tile and the kv-tile lie wholly in one frame (and, under allow_self, do not overlap)."""
    q1 = tl.minimum(q0 + BLOCK_Q, N) - 1
    k1 = tl.minimum(k0 + BLOCK_K, N) - 1
    fq0 = frame_id(q0, N, FRAME_SIZE, CLS_POS)
    fq1 = frame_id(q1, N, FRAME_SIZE, CLS_POS)
    fk0 = frame_id(k0, N, FRAME_SIZE, CLS_POS)
    fk1 = frame_id(k1, N, FRAME_SIZE, CLS_POS)
    # Frame ids are non-decreasing along the tokens apart from CLS (-1), so equal end
    # points mean the whole tile sits in that one frame.
    same = (fq0 >= 0) & (fq0 == fq1) & (fk0 == fq0) & (fk1 == fq0)
    if ALLOW_SELF:
        same = same & ((k0 > q1) | (k1 < q0))
    return same


@triton.jit
def tile_visible(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, MASK_KIND: tl.constexpr,
                  FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr):
    """False when every (q, k) of the tile pair is blocked by the frame rule (tile skipping: the
    docstring of :mod:`hitrs_fast.kernels.frame_attention`).

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
                        visible = not same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS, ALLOW_SELF)
                else:
                    visible = not same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS, ALLOW_SELF)
    return visible

