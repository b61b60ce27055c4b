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
``FWD,BWD``; default ``split`` both ways, measured fastest on the first GPU run (docs/benchmarks.md), where
the performance model of docs/kernels/attention_blocks.md had predicted the resident backward faster;
``resident`` falls back to ``split`` where it does not fit):

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

Optional features of the split kernels (:class:`Features`; each a constexpr whose default compiles the code
the kernels had without it, checked on the sm_90 PTX): an additive bias broadcastable to ``[B, H, N, N]`` with
its gradient (``frame_attention_bwd_dbias_kernel``: one program per (q-tile, kv-tile) of a bias head and a group
of sequences, fp32 partials summed by the host, no atomics); the window rule (``MASK_WINDOW``: frames within
``WINDOW``); frames from joint-major arithmetic or from per-token int32 ids (``FRAME_SOURCE``); attention dropout
drawn from a seed (Philox on ``(q * N + k, b * H + h)``, redrawn in the backward; :func:`attention_dropout_mask`
writes it out). Tile skipping extends to the window and ids rules (frame spans of the two tiles). The resident
kernels take none of them (``split`` runs instead). A public-level guide: docs/attention.md.

For the fused projection layout, :func:`frame_attention_qkv` reads q, k, v in place from one
``[B, N, 3 * H * D]`` tensor and its backward writes dQ, dK, dV into one buffer of that shape.

Files: ``kernels.py`` (the ``@triton.jit`` kernels), ``tuning.py`` (config lists, prune functions, autotuners),
``ops.py`` (launchers, ``torch.library`` registration, autograd functions, :func:`frame_attention`); the mask
rule lives in :mod:`hitrs_fast.kernels.common.masks`.
"""

from hitrs_fast.kernels.common.jit import FP32_PRECISION_ENV, FP32_PRECISIONS, fp32_precision
from hitrs_fast.kernels.common.masks import CLS_CODES, CLS_FIRST, CLS_LAST, CLS_NONE
from hitrs_fast.kernels.frame_attention.ops import (
    FRAMES_FRAME_MAJOR,
    FRAMES_FROM_IDS,
    FRAMES_JOINT_MAJOR,
    IS_DETERMINISTIC,
    MASK_FRAME,
    MASK_NONE,
    MASK_WINDOW,
    MAX_GRID,
    MIN_BLOCK,
    PLAIN,
    SUPPORTED_DTYPES,
    SUPPORTED_HEAD_DIMS,
    Features,
    FrameAttentionFunction,
    FrameAttentionQKVFunction,
    attention_dropout_mask,
    bh_bucket,
    common_meta,
    dbias_groups,
    feature_meta,
    frame_attention,
    frame_attention_bwd,
    frame_attention_dbias,
    frame_attention_fwd,
    frame_attention_qkv,
    not_supported_reasons,
    prepare_features,
    qkv_views,
)
from hitrs_fast.kernels.frame_attention.tuning import (
    AUTOTUNE_KEY,
    SPLIT_KEY,
    autotune_configs,
    gpu_bwd_configs,
    gpu_fwd_configs,
    gpu_resident_configs,
    whole_row_fits,
)

__all__ = ["AUTOTUNE_KEY", "CLS_CODES", "CLS_FIRST", "CLS_LAST", "CLS_NONE", "FP32_PRECISIONS", "FP32_PRECISION_ENV",
           "FRAMES_FRAME_MAJOR", "FRAMES_FROM_IDS", "FRAMES_JOINT_MAJOR", "IS_DETERMINISTIC", "MASK_FRAME",
           "MASK_NONE", "MASK_WINDOW", "MAX_GRID", "MIN_BLOCK", "PLAIN", "SPLIT_KEY", "SUPPORTED_DTYPES",
           "SUPPORTED_HEAD_DIMS", "Features", "FrameAttentionFunction", "FrameAttentionQKVFunction",
           "attention_dropout_mask", "autotune_configs", "bh_bucket", "common_meta", "dbias_groups", "feature_meta",
           "fp32_precision", "frame_attention", "frame_attention_bwd", "frame_attention_dbias", "frame_attention_fwd",
           "frame_attention_qkv", "gpu_bwd_configs", "gpu_fwd_configs", "gpu_resident_configs",
           "not_supported_reasons", "prepare_features", "qkv_views", "whole_row_fits"]
