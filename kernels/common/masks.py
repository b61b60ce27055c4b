"""The attention mask rules as ``@triton.jit`` helpers, computed from integer token indices or per-token ids (no
``[N, N]`` mask ever exists in memory). Mask kinds (:data:`hitrs_fast.kernels.capabilities.MASK_NONE`,
``MASK_FRAME``, ``MASK_WINDOW``) on frames from a source (``FRAME_SOURCE``: ``FRAMES_FRAME_MAJOR``,
``FRAMES_JOINT_MAJOR``, ``FRAMES_FROM_IDS``):

- frame rule (:class:`hitrs_fast.masks.FrameMask`, :class:`~hitrs_fast.masks.TokenIdMask` ``rule="other"``):
  ``allowed(q, k) = frame(q) != frame(k) or (allow_self and q == k)``;
- window rule (:class:`~hitrs_fast.masks.SlidingWindowMask`, ``TokenIdMask`` ``"same"`` / ``"window"``):
  ``allowed(q, k) = |frame(q) - frame(k)| <= WINDOW``;
- frames by index: frame-major ``t // frame_size`` or joint-major ``t % num_frames`` after removing the CLS
  offset; CLS (first, last or absent: ``CLS_POS``) is in no frame (id -1), so it attends to all and all attend
  to it; frames from ids: loaded by the kernel, id -1 is such a global token too;
- no rule (F-TRS). All combine with per-sample key padding (``lengths[b]``,
  :class:`hitrs_fast.masks.KeyPaddingMask`): keys ``>= lengths[b]`` are blocked except a trailing CLS key.

Every new mode is a constexpr whose default is the old behaviour, so the kernels that do not use it compile to
the code they compiled to before (checked on the sm_90 PTX).
"""

from __future__ import annotations

import triton
import triton.language as tl

CLS_NONE, CLS_FIRST, CLS_LAST = 0, 1, 2
CLS_CODES = {"none": CLS_NONE, "first": CLS_FIRST, "last": CLS_LAST}
"""``CLS_POS`` codes of the kernels, by the name :class:`hitrs_fast.masks.FrameMask` uses."""

_FAR = tl.constexpr(1 << 30)
"""Beyond every frame id: the neutral element of the tile min / max of frame ids."""


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
def joint_major_frame_id(i, N, NUM_FRAMES: tl.constexpr, CLS_POS: tl.constexpr):
    """Frame of joint-major tokens (``token = j * NUM_FRAMES + f`` after the CLS offset); CLS -1."""
    if CLS_POS == 1:
        fid = tl.where(i == 0, -1, (i - 1) % NUM_FRAMES)
    elif CLS_POS == 2:
        fid = tl.where(i == N - 1, -1, i % NUM_FRAMES)
    else:
        fid = i % NUM_FRAMES
    return fid


@triton.jit
def index_frames(i, N, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, FRAME_SOURCE: tl.constexpr,
                 NUM_FRAMES: tl.constexpr):
    """Frame ids of token indices ``i`` by arithmetic (frame-major or joint-major)."""
    if FRAME_SOURCE == 1:
        fid = joint_major_frame_id(i, N, NUM_FRAMES, CLS_POS)
    else:
        fid = frame_id(i, N, FRAME_SIZE, CLS_POS)
    return fid


@triton.jit
def allowed(o_q, o_k, N, L, MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr,
            ALLOW_SELF: tl.constexpr, HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr,
            WINDOW: tl.constexpr = 0, FRAME_SOURCE: tl.constexpr = 0, NUM_FRAMES: tl.constexpr = 0,
            id_q=0, id_k=0):
    """Boolean [len(o_q), len(o_k)] of the attendable (q, k) pairs; keys beyond N are always blocked.

    ``id_q`` / ``id_k``: the tokens' ids, read only with ``FRAME_SOURCE == 2`` (the kernel loads them)."""
    m_k = o_k < N
    if HAS_LENGTHS:
        # Key padding: keys past the sample's length are blocked, a trailing CLS key stays visible.
        if CLS_LAST_KEY:
            m_k = m_k & ((o_k < L) | (o_k == N - 1))
        else:
            m_k = m_k & (o_k < L)
    m_s = (o_q[:, None] >= 0) & m_k[None, :]
    if MASK_KIND != 0:
        if FRAME_SOURCE == 2:
            f_q = id_q
            f_k = id_k
        else:
            f_q = index_frames(o_q, N, FRAME_SIZE, CLS_POS, FRAME_SOURCE, NUM_FRAMES)
            f_k = index_frames(o_k, N, FRAME_SIZE, CLS_POS, FRAME_SOURCE, NUM_FRAMES)
        if MASK_KIND == 1:
            ok = (f_q[:, None] != f_k[None, :]) | (f_q[:, None] == -1) | (f_k[None, :] == -1)
            if ALLOW_SELF:
                # The diagonal stays allowed: the released mask is block-ones minus the identity.
                ok = ok | (o_q[:, None] == o_k[None, :])
        else:
            d = f_q[:, None] - f_k[None, :]
            ok = ((d <= WINDOW) & (d >= -WINDOW)) | (f_q[:, None] == -1) | (f_k[None, :] == -1)
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
def _frame_span(f, o, N):
    """(lowest, highest frame id, any global token) of the tokens ``o < N`` with frame ids ``f``."""
    valid = o < N
    lo = tl.min(tl.where(valid, f, _FAR), 0)
    hi = tl.max(tl.where(valid, f, -_FAR), 0)
    has_global = tl.max(tl.where(valid & (f == -1), 1, 0), 0) > 0
    return lo, hi, has_global


@triton.jit
def spans_blocked(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, f_q, f_k, MASK_KIND: tl.constexpr,
                  ALLOW_SELF: tl.constexpr, WINDOW: tl.constexpr):
    """True when the rule blocks every (q, k) of the tile pair, judged from the two tiles' frame spans (any token
    order): the frame rule when both tiles hold one and the same frame (and, under allow_self, do not overlap);
    the window rule when the spans are more than ``WINDOW`` apart. A global token keeps the pair."""
    o_q = q0 + tl.arange(0, BLOCK_Q)
    o_k = k0 + tl.arange(0, BLOCK_K)
    q_lo, q_hi, q_global = _frame_span(f_q, o_q, N)
    k_lo, k_hi, k_global = _frame_span(f_k, o_k, N)
    if MASK_KIND == 1:
        blocked = (q_lo == q_hi) & (k_lo == k_hi) & (q_lo == k_lo)
        if ALLOW_SELF:
            q1 = tl.minimum(q0 + BLOCK_Q, N) - 1
            k1 = tl.minimum(k0 + BLOCK_K, N) - 1
            blocked = blocked & ((k0 > q1) | (k1 < q0))
    else:
        blocked = (k_lo - q_hi > WINDOW) | (q_lo - k_hi > WINDOW)
    return blocked & (not q_global) & (not k_global)


@triton.jit
def tile_visible(q0, BLOCK_Q: tl.constexpr, k0, BLOCK_K: tl.constexpr, N, MASK_KIND: tl.constexpr,
                 FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
                 WINDOW: tl.constexpr = 0, FRAME_SOURCE: tl.constexpr = 0, NUM_FRAMES: tl.constexpr = 0,
                 id_q=0, id_k=0):
    """False when every (q, k) of the tile pair is blocked by the mask rule (tile skipping: the
    docstring of :mod:`hitrs_fast.kernels.frame_attention`).

    Frame rule, frame-major: the runtime test is compiled in only where a skip is possible at all (tiles no
    wider than a frame; under allow_self, two disjoint tiles fitting in one frame). Elsewhere, e.g. the official
    allow_self mask with 16-wide tiles, this is the constant True, so the KV loop has no branch that could stop
    Triton from software-pipelining its loads. Frame rule, joint-major: consecutive tokens are in different
    frames, so no tile pair of two or more tokens is blocked (constant True). Window rule, and the frame rule on
    ids: the frame spans of the two tiles (frame-major spans from the tile end points).
    """
    visible = True
    if MASK_KIND == 1:
        if FRAME_SOURCE == 0:
            if BLOCK_Q <= FRAME_SIZE:
                if BLOCK_K <= FRAME_SIZE:
                    if ALLOW_SELF:
                        if BLOCK_Q + BLOCK_K <= FRAME_SIZE:
                            visible = not same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS,
                                                           ALLOW_SELF)
                    else:
                        visible = not same_frame_tiles(q0, BLOCK_Q, k0, BLOCK_K, N, FRAME_SIZE, CLS_POS, ALLOW_SELF)
        elif FRAME_SOURCE == 2:
            visible = not spans_blocked(q0, BLOCK_Q, k0, BLOCK_K, N, id_q, id_k, MASK_KIND, ALLOW_SELF, WINDOW)
    elif MASK_KIND == 2:
        if FRAME_SOURCE == 0:
            # Frame-major frames are non-decreasing apart from CLS (-1, only at a tile end): end points span a tile.
            q1 = tl.minimum(q0 + BLOCK_Q, N) - 1
            k1 = tl.minimum(k0 + BLOCK_K, N) - 1
            fq0 = frame_id(q0, N, FRAME_SIZE, CLS_POS)
            fq1 = frame_id(q1, N, FRAME_SIZE, CLS_POS)
            fk0 = frame_id(k0, N, FRAME_SIZE, CLS_POS)
            fk1 = frame_id(k1, N, FRAME_SIZE, CLS_POS)
            apart = (fk0 - fq1 > WINDOW) | (fq0 - fk1 > WINDOW)
            visible = not (apart & (fq0 >= 0) & (fq1 >= 0) & (fk0 >= 0) & (fk1 >= 0))
        elif FRAME_SOURCE == 1:
            f_q = joint_major_frame_id(q0 + tl.arange(0, BLOCK_Q), N, NUM_FRAMES, CLS_POS)
            f_k = joint_major_frame_id(k0 + tl.arange(0, BLOCK_K), N, NUM_FRAMES, CLS_POS)
            visible = not spans_blocked(q0, BLOCK_Q, k0, BLOCK_K, N, f_q, f_k, MASK_KIND, ALLOW_SELF, WINDOW)
        else:
            visible = not spans_blocked(q0, BLOCK_Q, k0, BLOCK_K, N, id_q, id_k, MASK_KIND, ALLOW_SELF, WINDOW)
    return visible
