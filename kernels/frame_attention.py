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

Two kernels, chosen per direction by ``HITRS_FAST_ATTENTION_KERNEL`` (``resident``, ``split`` or a pair
``FWD,BWD``; default ``split,resident``, the pair docs/kernels/attention_blocks.md predicts fastest among the
configurations that compile for sm_90 without spills; ``resident`` falls back to ``split`` where it does not fit):

- ``split`` (the first kernel): one program per q-tile (forward, dQ) or kv-tile (dK/dV); backward = a delta
  pass, a dK/dV kernel (4 matmuls) and a dQ kernel (3 matmuls), split as in the Triton fused-attention tutorial
  so no atomics are needed. Grid: one axis of ``B * H * n_tiles`` programs, ``n_tiles = cdiv(N, BLOCK)``, 11
  for the official N = 176 with 16-row tiles. Program ``p`` is tile ``p % n_tiles`` of sequence-head
  ``p // n_tiles`` (int64 offsets): the tile varies fastest, so the tiles of one head run side by side and
  share its K/V through L2. (With the tiles on a second axis, blocks are dispatched axis 0 first and the tiles
  of one head start ``B * H`` blocks apart, long after its K/V left L2: one HBM re-read per tile.)
- ``resident``: one program per (sequence, head), grid ``B * H``. The forward loads K and V once (the whole
  padded key row, next power of two of N) and walks the head's q-tiles, each a whole-row single-pass softmax.
  The backward owns the whole (sequence, head): K and V loaded once, dK and dV accumulated on chip over the
  q-tiles and written once, each q-tile's dQ complete (whole row) and written once, and
  ``delta = rowsum(P * dP)`` taken from the tile itself, so O is never read: five matmuls (S, dP, dQ, dV, dK),
  no atomics. It takes at most 256 padded keys and 192 KiB of K, V, dK, dV (``2 * N_pow2 * D * (itemsize +
  4)``; bf16 N = 176 D = 64 is exactly that; fp32 there and D = 128 take ``split``).

Axis 0 allows 2^31 - 1 programs, far beyond the 65 535 limit of axes 1 and 2; ``not_supported_reasons``
refuses larger grids.

The split forward's variants, picked by autotuning:

- online (``WHOLE_ROW=False``): loop over ``BLOCK_N``-wide KV chunks with rescaling;
- whole row (``WHOLE_ROW=True``): the full key row (next power of two >= N) in one
  score tile, one max, one exp2 pass, no rescale; offered while that row is <= 256 keys
  and its K and V rows fit in 128 KiB (:func:`whole_row_fits`: not fp32 at D = 128).

Autotuning: the key (``AUTOTUNE_KEY``) is ``N_POW2`` (next power of two of N), a log2
bucket of ``B * H`` (``BH_BUCKET``, :func:`bh_bucket`), D, the mask fields, the fp32
precision and, added by Triton, every tensor's dtype. Exact N and B are not in it: a
V-TRS batch (N = clips + 1, new nearly every batch) would re-tune each time, and a
B = 3 correctness launch would choose the config later reused at B = 8 192. ``N`` and
``BH_BUCKET`` are ``do_not_specialize`` so neither compiles a new binary. The prune
functions drop tiles wider than ``N_POW2`` and whole-row configs that do not fit; they
read Triton's positional ``named_args`` and its keyword ``kwargs`` together (the
constexprs arrive as keywords). The resident kernels tune ``BLOCK_M`` in {16, 32, 64} (the prune drops q-tiles
taller than ``N_POW2``) with 4 or 8 warps, on the same key. Configs that still exceed the GPU's shared memory (some
fp32 D = 128 ones on sm_90) fail to launch and Triton's autotuner times them as
infinite. Under ``TRITON_INTERPRET=1`` the benchmarker is a CPU wall clock
(:func:`_cpu_timer`; ``triton.testing.do_bench`` needs a GPU driver) and the config
list is one config unless :func:`autotune_configs` supplies one (the tests do).

Precision: fp32 inputs use ``tl.dot(input_precision="tf32x3")`` by default (three TF32
tensor-core products, close to fp32 accuracy), ``HITRS_FAST_FP32_PRECISION=ieee`` for
exact fp32 FMA dots without tensor cores, ``=tf32`` for one TF32 product (about 1e-3
relative error). 16-bit inputs always use the tensor cores with fp32 accumulation. The
interpreter validates the value and computes every dot in fp32 whatever it is, so the
fp32 tolerance (1e-5) under tf32x3 is only checked on a GPU.

Tile skipping: a (q-tile, kv-tile) pair whose queries and keys all lie in one and the
same frame (no CLS among them) has every score masked, except the diagonal under
``allow_self``; such a pair is skipped when ``allow_self=False`` or when the two tiles
do not overlap. With 25-joint frames this needs 16-wide tiles and ``allow_self=False``
(a 16-aligned tile inside one frame can only meet another such tile of the same frame
on the diagonal): at N = 176 it skips 4 of the 121 tile pairs (q-tiles 0, 2, 5, 8). Wider tiles never fit
inside a 25-token frame, so nothing is skipped there (skipping buys little at
best: padding and bytes matter more). Where no skip is possible the test is not even compiled in
(constexpr conditions), so the official allow_self=True loop has no branch.

Environment: ``HITRS_FAST_ATTENTION_KERNEL`` (above); ``HITRS_FAST_SINGLE_CONFIG=1`` replaces
autotuning with one config per kernel (the default under ``TRITON_INTERPRET=1``);
``HITRS_FAST_FP32_PRECISION`` (above).

For the fused projection layout, :func:`frame_attention_qkv` reads q, k, v in place from one
``[B, N, 3 * H * D]`` tensor and its backward writes dQ, dK, dV into one buffer of that shape.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.launch import launchable

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453

WHOLE_ROW_MAX = 256
"""The whole-row variant is offered only while next_power_of_2(N) <= this."""
WHOLE_ROW_BYTES = 128 * 1024
"""... and while its padded K and V rows (``2 * N_POW2 * D`` elements) fit in this many bytes of shared memory."""

MASK_NONE, MASK_FRAME = capabilities.MASK_NONE, capabilities.MASK_FRAME
CLS_NONE, CLS_FIRST, CLS_LAST = 0, 1, 2
CLS_CODES = {"none": CLS_NONE, "first": CLS_FIRST, "last": CLS_LAST}
# The limits the dispatcher reads (declared once, in a module that imports no triton).
SUPPORTED_DTYPES = capabilities.FRAME_ATTENTION_DTYPES
SUPPORTED_HEAD_DIMS = capabilities.FRAME_ATTENTION_HEAD_DIMS
MAX_TOKENS = capabilities.FRAME_ATTENTION_MAX_TOKENS
IS_DETERMINISTIC = capabilities.FRAME_ATTENTION_DETERMINISTIC
MIN_BLOCK = capabilities.FRAME_ATTENTION_MIN_BLOCK
MAX_GRID = capabilities.MAX_GRID
not_supported_reasons = capabilities.frame_attention_reasons

FP32_PRECISION_ENV = "HITRS_FAST_FP32_PRECISION"
FP32_PRECISIONS = ("tf32x3", "ieee", "tf32")
"""``tl.dot`` input precisions for fp32 inputs; the first is the default (see the module docstring)."""

AUTOTUNE_KEY = ["N_POW2", "BH_BUCKET", "HEAD_DIM", "MASK_KIND", "FRAME_SIZE", "CLS_POS", "ALLOW_SELF", "HAS_LENGTHS",
                "INPUT_PRECISION"]
"""What a tuned config is cached on (Triton appends the dtype of every tensor argument).
Exact N and B are absent on purpose: see the module docstring."""

# Always valid (any N >= 1, any supported D and dtype): the prune functions' fallback.
_SAFE_FWD = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "WHOLE_ROW": False}, num_warps=4, num_stages=1)
_SAFE_BWD = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)
# HITRS_FAST_SINGLE_CONFIG / interpreter default. 32 x 32 online: 1.19x padding at N = 176, few interpreter steps.
_SINGLE_FWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "WHOLE_ROW": False}, num_warps=4, num_stages=1)
_SINGLE_BWD = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)
# The resident kernels' single config: 32-row q-tiles are valid for every N (rows past N are masked).
_SINGLE_RESIDENT = triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)
_SAFE_RESIDENT = triton.Config({"BLOCK_M": 16}, num_warps=4, num_stages=1)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _single_config() -> bool:
    flag = os.environ.get("HITRS_FAST_SINGLE_CONFIG", "0").strip().lower() not in ("", "0", "false", "no")
    return flag or _interpreting()


def _is_hopper_or_newer() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9


def gpu_fwd_configs(hopper: bool) -> list[triton.Config]:
    """The forward configs a GPU tunes over (before pruning); ``hopper``: compute capability >= 9."""
    stages = (2, 3) if hopper else (2,)
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WHOLE_ROW": False}, num_warps=4 if bm <= 64 else 8,
                             num_stages=s)
               for bm, bn in ((16, 16), (32, 16), (32, 32), (64, 16), (64, 32), (64, 64), (128, 64)) for s in stages]
    configs += [triton.Config({"BLOCK_M": bm, "BLOCK_N": 16, "WHOLE_ROW": True}, num_warps=w, num_stages=1)
                for bm in (16, 32, 64) for w in (4, 8)]
    return configs


def gpu_bwd_configs(hopper: bool) -> list[triton.Config]:
    """The backward (dK/dV and dQ) configs a GPU tunes over (before pruning)."""
    stages = (2, 3) if hopper else (2,)
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn in ((16, 16), (32, 32), (16, 32), (32, 16), (64, 32), (32, 64), (64, 64))
            for w in (4, 8) for s in stages]


def gpu_resident_configs(hopper: bool) -> list[triton.Config]:
    """The resident forward and backward configs a GPU tunes over (before pruning): q-tiles of 16, 32 or 64
    rows (64 lets Hopper use wgmma for S and P V), 4 or 8 warps, the q-tile loop pipelined or not."""
    stages = (1, 2) if hopper else (1,)
    return [triton.Config({"BLOCK_M": bm}, num_warps=w, num_stages=st)
            for bm in (16, 32, 64) for w in (4, 8) for st in stages]


# Set only inside ``autotune_configs``: (fwd configs, bwd configs, benchmarker or None, resident configs or None).
_override: tuple[list[triton.Config], list[triton.Config], object, list[triton.Config] | None] | None = None


def _fwd_configs() -> list[triton.Config]:
    """Forward configs, built at first launch (never at import) and gated on the GPU generation."""
    if _override is not None:
        return list(_override[0])
    return [_SINGLE_FWD] if _single_config() else gpu_fwd_configs(_is_hopper_or_newer())


def _bwd_configs() -> list[triton.Config]:
    """Backward configs; same choice as :func:`_fwd_configs`."""
    if _override is not None:
        return list(_override[1])
    return [_SINGLE_BWD] if _single_config() else gpu_bwd_configs(_is_hopper_or_newer())


def _resident_configs() -> list[triton.Config]:
    """Resident-kernel configs (forward and backward); same choice as :func:`_fwd_configs`."""
    if _override is not None and _override[3] is not None:
        return list(_override[3])
    return [_SINGLE_RESIDENT] if _single_config() else gpu_resident_configs(_is_hopper_or_newer())


def _launch_args(named_args: dict, kwargs: dict) -> dict:
    # The autotuner passes the positional launch arguments in named_args and the keyword
    # ones (N_POW2, HEAD_DIM, ...: every constexpr here) in kwargs.
    return {**named_args, **kwargs}


def whole_row_fits(n_pow2: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the whole-row forward variant is offered: its padded K and V rows stay resident in
    shared memory (compiled for sm_90 they take at most ``2 * N_POW2 * D`` elements)."""
    return n_pow2 <= WHOLE_ROW_MAX and 2 * n_pow2 * head_dim * dtype.itemsize <= WHOLE_ROW_BYTES


def _prune_fwd(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop whole-row configs whose K/V rows would not fit, and tiles wider than ``N_POW2``; never empty."""
    args = _launch_args(named_args, kwargs)
    n_pow2 = args["N_POW2"]
    whole_row_ok = whole_row_fits(n_pow2, args["HEAD_DIM"], args["Q"].dtype)
    kept = [c for c in configs
            if (whole_row_ok if c.kwargs["WHOLE_ROW"] else c.kwargs["BLOCK_N"] <= n_pow2)
            and c.kwargs["BLOCK_M"] <= n_pow2]
    return kept or [_SAFE_FWD]


def _prune_bwd(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop tiles wider than ``N_POW2``; never empty."""
    n_pow2 = _launch_args(named_args, kwargs)["N_POW2"]
    kept = [c for c in configs if c.kwargs["BLOCK_M"] <= n_pow2 and c.kwargs["BLOCK_N"] <= n_pow2]
    return kept or [_SAFE_BWD]


def _prune_resident(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop q-tiles taller than ``N_POW2``; never empty."""
    n_pow2 = _launch_args(named_args, kwargs)["N_POW2"]
    return [c for c in configs if c.kwargs["BLOCK_M"] <= n_pow2] or [_SAFE_RESIDENT]


def _cpu_timer(kernel_call, quantiles, reps: int = 3) -> list[float]:
    """The autotuner's benchmarker under the interpreter: wall-clock quantiles (ms) of ``reps`` calls.

    ``triton.testing.do_bench`` needs a GPU driver, which the interpreter does not have.
    These CPU times only let the tuning machinery run; they say nothing about GPU speed.
    """
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        kernel_call()
        times.append((time.perf_counter() - start) * 1e3)
    return torch.tensor(times, dtype=torch.float64).quantile(torch.tensor(quantiles, dtype=torch.float64)).tolist()


def _benchmark(kernel_call, quantiles):
    """Times one config for the autotuner: ``triton.testing.do_bench`` on a GPU, :func:`_cpu_timer` in the
    interpreter, or the benchmarker given to :func:`autotune_configs`."""
    if _override is not None and _override[2] is not None:
        return _override[2](kernel_call, quantiles)
    if _interpreting():
        return _cpu_timer(kernel_call, quantiles)
    return triton.testing.do_bench(kernel_call, quantiles=quantiles)


@contextlib.contextmanager
def autotune_configs(fwd: list[triton.Config], bwd: list[triton.Config], do_bench=None,
                     resident: list[triton.Config] | None = None):
    """Tune over these config lists instead of the built-in ones while the block runs.

    The hook through which the tests run the production autotuned launch (same kernels,
    key, prune functions and benchmarker wiring) with a short list, also under the
    interpreter, where the default is one config and the autotuner never runs. Fresh
    autotuners (empty caches) are built on entry and again on exit.

    Args:
        fwd: forward configs (``BLOCK_M``, ``BLOCK_N``, ``WHOLE_ROW``); bwd: backward configs
            (``BLOCK_M``, ``BLOCK_N``) for both the dK/dV and the dQ kernel.
        do_bench: ``(kernel_call, quantiles) -> list[float]`` replacing the benchmarker
            (default: ``triton.testing.do_bench`` on a GPU, a CPU wall clock in the interpreter).
        resident: configs (``BLOCK_M``) of the resident forward and backward kernels; None keeps the
            built-in list.
    """
    global _override
    if not fwd or not bwd or (resident is not None and not resident):
        raise ValueError("autotune_configs: fwd, bwd (and resident, if given) must each hold at least one "
                         "triton.Config")
    previous = _override
    _override = (list(fwd), list(bwd), do_bench, None if resident is None else list(resident))
    _clear_autotuners()
    try:
        yield
    finally:
        _override = previous
        _clear_autotuners()


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
def _whole_row_tile(b_q, b_k, b_v, o_m, o_n, N, L, qk_scale, MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr,
                    CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr, HAS_LENGTHS: tl.constexpr,
                    CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr, INTERP_BF16: tl.constexpr):
    """Single-pass softmax of a q-tile against its whole key row: one max, one exp2 pass, no rescale.

    b_q ``[BM, D]``, b_k and b_v ``[NP, D]`` (rows >= N zero), o_m ``[BM]`` / o_n ``[NP]`` token indices.
    Returns the unnormalised ``acc = P V [BM, D]``, the row max (log2 units; 0 for a row with no visible
    key) and the row sum ``l`` of P, all fp32.
    """
    b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, NP]
    m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
    b_s = tl.where(m_s, b_s, float("-inf"))
    b_mx = tl.max(b_s, 1)  # [BM]
    b_mx = tl.where(b_mx == float("-inf"), 0.0, b_mx)
    b_p = tl.exp2(b_s - b_mx[:, None])  # [BM, NP]
    b_l = tl.sum(b_p, 1)  # [BM]
    b_acc = _mma(_cast(b_p, b_v.dtype, INTERP_BF16), b_v, INPUT_PRECISION, INTERP_BF16)  # [BM, D]
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
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WHOLE_ROW: tl.constexpr,
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

    if WHOLE_ROW:
        o_n = tl.arange(0, N_POW2)
        m_n = o_n < N
        # [NP, D]
        b_k = tl.load(p_k + o_n[:, None] * stride_kn + o_d[None, :] * stride_kd, mask=m_n[:, None], other=0.0)
        b_v = tl.load(p_v + o_n[:, None] * stride_vn + o_d[None, :] * stride_vd, mask=m_n[:, None], other=0.0)
        b_acc, b_mx, b_l = _whole_row_tile(b_q, b_k, b_v, o_m, o_n, N, L, qk_scale, MASK_KIND, FRAME_SIZE, CLS_POS,
                                           ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY, INPUT_PRECISION, INTERP_BF16)
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

    b_o, b_lse = _normalise_rows(b_acc, b_mx, b_l)
    tl.store(p_o + o_m[:, None] * stride_on + o_d[None, :] * stride_od, _cast(b_o, OUT.dtype.element_ty, INTERP_BF16),
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
    HEAD_DIM: tl.constexpr, N_POW2: tl.constexpr,
    MASK_KIND: tl.constexpr, FRAME_SIZE: tl.constexpr, CLS_POS: tl.constexpr, ALLOW_SELF: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, CLS_LAST_KEY: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    INTERP_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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


@triton.jit(do_not_specialize=["N", "BH_BUCKET"])
def frame_attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, LENGTHS,
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
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
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
                 _cast(b_o, OUT.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])
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
        b_s = _mma(b_q, tl.trans(b_k), INPUT_PRECISION, INTERP_BF16) * qk_scale  # [BM, NP]
        m_s = _allowed(o_m, o_n, N, L, MASK_KIND, FRAME_SIZE, CLS_POS, ALLOW_SELF, HAS_LENGTHS, CLS_LAST_KEY)
        m_s = m_s & m_m[:, None]
        b_p = tl.exp2(tl.where(m_s, b_s - b_lse[:, None], float("-inf")))  # [BM, NP], blocked and padding -> 0
        b_dp = _mma(b_do, tl.trans(b_v), INPUT_PRECISION, INTERP_BF16)  # [BM, NP]
        b_delta = tl.sum(b_p * b_dp, 1)  # [BM]
        b_ds = b_p * (b_dp - b_delta[:, None])  # [BM, NP]
        b_dq = _mma(_cast(b_ds, b_k.dtype, INTERP_BF16), b_k, INPUT_PRECISION, INTERP_BF16) * sm_scale  # [BM, D]
        tl.store(DQ + p_g + o_m[:, None] * stride_gn + o_d[None, :] * stride_gd,
                 _cast(b_dq, DQ.dtype.element_ty, INTERP_BF16), mask=m_m[:, None])
        b_dv += _mma(tl.trans(_cast(b_p, b_do.dtype, INTERP_BF16)), b_do, INPUT_PRECISION, INTERP_BF16)  # [NP, D]
        b_dk += _mma(tl.trans(_cast(b_ds, b_q.dtype, INTERP_BF16)), b_q, INPUT_PRECISION, INTERP_BF16)  # [NP, D]
    p_kv = p_g + o_n[:, None] * stride_gn + o_d[None, :] * stride_gd
    tl.store(DK + p_kv, _cast(b_dk * sm_scale, DK.dtype.element_ty, INTERP_BF16), mask=m_n[:, None])
    tl.store(DV + p_kv, _cast(b_dv, DV.dtype.element_ty, INTERP_BF16), mask=m_n[:, None])


def _autotune(kernel, configs: list[triton.Config], prune):
    return triton.autotune(configs=configs, key=AUTOTUNE_KEY, prune_configs_by={"early_config_prune": prune},
                           do_bench=_benchmark)(kernel)


@functools.cache
def _autotuned_fwd():
    return _autotune(frame_attention_fwd_kernel, _fwd_configs(), _prune_fwd)


@functools.cache
def _autotuned_dkdv():
    return _autotune(frame_attention_bwd_dkdv_kernel, _bwd_configs(), _prune_bwd)


@functools.cache
def _autotuned_dq():
    return _autotune(frame_attention_bwd_dq_kernel, _bwd_configs(), _prune_bwd)


@functools.cache
def _autotuned_resident_fwd():
    return _autotune(frame_attention_resident_fwd_kernel, _resident_configs(), _prune_resident)


@functools.cache
def _autotuned_resident_bwd():
    return _autotune(frame_attention_resident_bwd_kernel, _resident_configs(), _prune_resident)


def _clear_autotuners() -> None:
    for factory in (_autotuned_fwd, _autotuned_dkdv, _autotuned_dq, _autotuned_resident_fwd,
                    _autotuned_resident_bwd):
        factory.cache_clear()


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


def fp32_precision() -> str:
    """The ``tl.dot`` input precision for fp32 inputs, from ``HITRS_FAST_FP32_PRECISION`` (default tf32x3)."""
    value = os.environ.get(FP32_PRECISION_ENV, FP32_PRECISIONS[0]).strip().lower()
    if value not in FP32_PRECISIONS:
        raise ValueError(f"{FP32_PRECISION_ENV}={value!r}: expected one of {', '.join(FP32_PRECISIONS)}")
    return value


def _precision(dtype: torch.dtype) -> str:
    # 16-bit operands always take the tensor cores; the value only matters for fp32.
    return fp32_precision() if dtype == torch.float32 else "tf32"


def bh_bucket(num_heads_total: int) -> int:
    """The autotune key's batch bucket: ``k`` for ``B * H`` in ``[2^(k-1), 2^k)``."""
    return int(num_heads_total).bit_length()


def _grid(bh: int, n: int, block: str):
    """One grid axis of ``B * H * cdiv(N, meta[block])`` programs (decoded by ``_head_and_tile``)."""
    return lambda meta: (bh * triton.cdiv(n, meta[block]),)


def _common_meta(q: torch.Tensor, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                 has_lengths: bool, cls_last_key: bool) -> dict:
    return {"HEAD_DIM": q.shape[-1], "N_POW2": max(16, triton.next_power_of_2(q.shape[2])), "MASK_KIND": mask_kind,
            "FRAME_SIZE": frame_size, "CLS_POS": cls_pos, "ALLOW_SELF": allow_self, "HAS_LENGTHS": has_lengths,
            "CLS_LAST_KEY": cls_last_key, "INPUT_PRECISION": _precision(q.dtype),
            "INTERP_BF16": q.dtype == torch.bfloat16 and _interpreting()}


def _bnhd_like(q: torch.Tensor) -> torch.Tensor:
    """Fresh ``[B, N, H, D]`` buffer returned as its ``[B, H, N, D]`` view (free reshape to [B, N, H*D])."""
    b, h, n, d = q.shape
    return torch.empty((b, n, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)


def _variant(q: torch.Tensor, variant: str | None, direction: str) -> str:
    """The kernel that runs ``direction``: ``variant`` if given (checked), else the environment's choice
    (:func:`hitrs_fast.kernels.capabilities.frame_attention_kernel`)."""
    n, d = q.shape[2], q.shape[3]
    if variant is None:
        return capabilities.frame_attention_kernel(n, d, q.dtype, direction)
    if variant not in capabilities.FRAME_ATTENTION_KERNELS:
        raise ValueError(f"frame_attention: variant must be one of {capabilities.FRAME_ATTENTION_KERNELS}, "
                         f"got {variant!r}")
    if variant == "resident" and not capabilities.resident_fits(n, d, q.dtype):
        raise ValueError(f"frame_attention: the resident kernel does not fit N = {n}, D = {d}, {q.dtype} "
                         f"(at most {capabilities.RESIDENT_MAX_KEYS} padded keys and "
                         f"{capabilities.RESIDENT_MAX_BYTES} bytes of K, V, dK, dV)")
    return variant


def _explicit(config: dict) -> tuple[dict, int]:
    cfg = dict(config)
    return cfg, cfg.pop("num_warps", 4)


def frame_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                        scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        cls_last_key: bool, config: dict | None = None,
                        variant: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward launcher.

    Args:
        q, k, v: ``[B, H, N, D]``, any strides, one dtype.
        lengths: int ``[B]`` key lengths or None.
        scale: softmax scale (usually ``1 / sqrt(D)``).
        mask_kind, frame_size, cls_pos, allow_self, cls_last_key: the mask (module docstring).
        config: explicit config instead of autotuning (tests use it to reach every variant and tile skipping):
            ``{"BLOCK_M", "BLOCK_N", "WHOLE_ROW", "num_warps"}`` for the split kernels, ``{"BLOCK_M",
            "num_warps"}`` for the resident one.
        variant: ``"resident"`` or ``"split"``; None = ``HITRS_FAST_ATTENTION_KERNEL`` (module docstring).

    Returns:
        ``o`` ``[B, H, N, D]`` (a view of a ``[B, N, H, D]`` buffer), ``lse`` fp32 ``[B, H, N]``.
    """
    _check_inputs("frame_attention_fwd", q, k, v, lengths)
    variant = _variant(q, variant, "fwd")
    b, h, n, _ = q.shape
    o = _bnhd_like(q)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    meta = _common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    # Without lengths, q stands in as a pointer that is never read (never an output: torch.compile
    # must not see a written buffer aliased by a read-only argument).
    lens = lengths if lengths is not None else q
    args = (q, k, v, o, lse, lens, *q.stride(), *k.stride(), *v.stride(), *o.stride(), h, n, scale * LOG2E,
            bh_bucket(b * h))
    if variant == "resident":
        kernel, grid, autotuned = frame_attention_resident_fwd_kernel, (b * h,), _autotuned_resident_fwd
    else:
        kernel, grid, autotuned = frame_attention_fwd_kernel, _grid(b * h, n, "BLOCK_M"), _autotuned_fwd
    if config is not None:
        cfg, num_warps = _explicit(config)
        kernel[grid](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        launchable(autotuned(), q)[grid](*args, **meta)
    return o, lse


def frame_attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                        lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                        frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                        config: dict | None = None, variant: str | None = None,
                        grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward launcher.

    resident: one kernel per (sequence, head) (O is not read). split: preprocess (delta = rowsum(dO * O)),
    then the dK/dV kernel, then the dQ kernel.

    Args:
        do, o: ``[B, H, N, D]`` upstream gradient and forward output (any strides).
        q, k, v, lse, lengths, scale, mask fields: as given to / returned by :func:`frame_attention_fwd`.
        config, variant: as in :func:`frame_attention_fwd` (split configs: ``{"BLOCK_M", "BLOCK_N",
            "num_warps"}``).
        grads: ``(dq, dk, dv)`` ``[B, H, N, D]`` buffers to write, all three with the same strides (e.g. views
            of one ``[B, N, 3, H, D]`` tensor); None allocates three ``[B, N, H, D]`` buffers.

    Returns:
        ``dq, dk, dv`` ``[B, H, N, D]``.
    """
    _check_inputs("frame_attention_bwd", q, k, v, lengths)
    if do.shape != q.shape or o.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(f"frame_attention_bwd: do {tuple(do.shape)} / o {tuple(o.shape)} must be {tuple(q.shape)} "
                         f"and lse {tuple(lse.shape)} must be {tuple(q.shape[:3])}")
    if not lse.is_contiguous() or lse.dtype != torch.float32:
        raise ValueError("frame_attention_bwd: lse must be a contiguous float32 [B, H, N] tensor")
    if grads is not None and not (all(g.shape == q.shape and g.dtype == q.dtype for g in grads)
                                  and grads[0].stride() == grads[1].stride() == grads[2].stride()):
        raise ValueError(f"frame_attention_bwd: grads must be three {tuple(q.shape)} {q.dtype} tensors with one "
                         "set of strides")
    variant = _variant(q, variant, "bwd")
    b, h, n, d = q.shape
    do = do.to(q.dtype)
    dq, dk, dv = grads if grads is not None else (_bnhd_like(q), _bnhd_like(q), _bnhd_like(q))
    meta = _common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    lens = lengths if lengths is not None else q
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride())
    tail = (h, n, scale, scale * LOG2E, bh_bucket(b * h))
    if variant == "resident":
        args = (q, k, v, do, lse, dq, dk, dv, lens, *strides, *tail)
        if config is not None:
            cfg, num_warps = _explicit(config)
            frame_attention_resident_bwd_kernel[(b * h,)](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
        else:
            launchable(_autotuned_resident_bwd(), q)[(b * h,)](*args, **meta)
        return dq, dk, dv
    delta = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    block_pre = 64
    launchable(frame_attention_bwd_preprocess_kernel, q)[(b * h * triton.cdiv(n, block_pre),)](
        o, do, delta, *o.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_M=block_pre)
    dkdv_args = (q, k, v, do, lse, delta, dk, dv, lens, *strides, *tail)
    dq_args = (q, k, v, do, lse, delta, dq, lens, *strides, *tail)
    if config is not None:
        cfg, num_warps = _explicit(config)
        cfg.pop("WHOLE_ROW", None)
        frame_attention_bwd_dkdv_kernel[_grid(b * h, n, "BLOCK_N")](
            *dkdv_args, **meta, **cfg, num_warps=num_warps, num_stages=1)
        frame_attention_bwd_dq_kernel[_grid(b * h, n, "BLOCK_M")](
            *dq_args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        launchable(_autotuned_dkdv(), q)[_grid(b * h, n, "BLOCK_N")](*dkdv_args, **meta)
        launchable(_autotuned_dq(), q)[_grid(b * h, n, "BLOCK_M")](*dq_args, **meta)
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
    if _interpreting():
        op = torch.library.custom_op(name, mutates_args=())(fn)
        op.register_fake(fake)
        return op
    return triton_op(name, mutates_args=())(fn)


_register("hitrs_fast::frame_attention_fwd", _frame_attention_fwd_op, _fwd_fake)
_register("hitrs_fast::frame_attention_bwd", _frame_attention_bwd_op, _bwd_fake)


def qkv_views(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, H, N, D]`` as views of one ``[B, N, 3 * H * D]`` projection (columns: q | k | v)."""
    b, n, width = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"frame_attention_qkv: qkv width {width} is not 3 * heads ({heads}) * head_dim")
    return tuple(t.transpose(1, 2) for t in qkv.view(b, n, 3, heads, width // (3 * heads)).unbind(2))


def _frame_attention_qkv_fwd_op(qkv: torch.Tensor, lengths: torch.Tensor | None, heads: int, scale: float,
                                mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                                cls_last_key: bool) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, _ = qkv.shape
    o, lse = frame_attention_fwd(*qkv_views(qkv, heads), lengths, scale, mask_kind, frame_size, cls_pos, allow_self,
                                 cls_last_key)
    return o.transpose(1, 2).reshape(b, n, -1), lse


def _frame_attention_qkv_bwd_op(do: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                                lengths: torch.Tensor | None, heads: int, scale: float, mask_kind: int,
                                frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool) -> torch.Tensor:
    b, n, width = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv_views(qkv, heads)
    # dQ, dK, dV written straight into one [B, N, 3, H, D] buffer: the projection's gradient, no cat.
    dqkv = torch.empty((b, n, 3, heads, d), dtype=qkv.dtype, device=qkv.device)
    grads = tuple(g.transpose(1, 2) for g in dqkv.unbind(2))
    as_bhnd = lambda t: t.reshape(b, n, heads, d).transpose(1, 2)
    frame_attention_bwd(as_bhnd(do), q, k, v, as_bhnd(o), lse, lengths, scale, mask_kind, frame_size, cls_pos,
                        allow_self, cls_last_key, grads=grads)
    return dqkv.view(b, n, width)


def _qkv_fwd_fake(qkv, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
    b, n, width = qkv.shape
    return qkv.new_empty((b, n, width // 3)), qkv.new_empty((b, heads, n), dtype=torch.float32)


def _qkv_bwd_fake(do, qkv, o, lse, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


_register("hitrs_fast::frame_attention_qkv_fwd", _frame_attention_qkv_fwd_op, _qkv_fwd_fake)
_register("hitrs_fast::frame_attention_qkv_bwd", _frame_attention_qkv_bwd_op, _qkv_bwd_fake)


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


class FrameAttentionQKVFunction(torch.autograd.Function):
    """Autograd wrapper over one ``[B, N, 3 * H * D]`` projection: returns ``o [B, N, H * D]`` and takes back
    one ``dqkv`` of the projection's shape, written by the kernel (no cat of dQ, dK, dV).

    ``apply(qkv, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key) -> o``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, qkv, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key):
        params = (heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)
        o, lse = torch.ops.hitrs_fast.frame_attention_qkv_fwd(qkv, lengths, *params)
        ctx.save_for_backward(qkv, o, lse, lengths)
        ctx.params = params
        return o

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do):
        qkv, o, lse, lengths = ctx.saved_tensors
        dqkv = torch.ops.hitrs_fast.frame_attention_qkv_bwd(do, qkv, o, lse, lengths, *ctx.params)
        return dqkv, None, None, None, None, None, None, None, None


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


def frame_attention_qkv(qkv: torch.Tensor, heads: int, *, scale: float | None = None, mask_kind: int = MASK_FRAME,
                        frame_size: int = 25, cls: str = "last", allow_self: bool = True,
                        lengths: torch.Tensor | None = None, cls_last_key: bool = True) -> torch.Tensor:
    """:func:`frame_attention` on one fused projection, the layout of a ``[3 * H * D, C]`` QKV weight.

    Args:
        qkv: ``[B, N, 3 * H * D]`` (columns q | k | v, each head-major), read in place.
        heads: H. Other arguments as in :func:`frame_attention`.

    Returns:
        ``o [B, N, H * D]`` in qkv's dtype, ready for the output projection. Its gradient comes back as one
        ``[B, N, 3 * H * D]`` tensor.
    """
    if cls not in CLS_CODES:
        raise ValueError(f"frame_attention_qkv: cls must be one of {tuple(CLS_CODES)}, got {cls!r}")
    if qkv.dim() != 3:
        raise ValueError(f"frame_attention_qkv: qkv must be [B, N, 3 * H * D], got {tuple(qkv.shape)}")
    head_dim = qkv.shape[-1] // (3 * heads)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    return FrameAttentionQKVFunction.apply(qkv, lengths, int(heads), scale, int(mask_kind), int(frame_size),
                                           CLS_CODES[cls], bool(allow_self), bool(cls_last_key))
