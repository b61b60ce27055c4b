"""Fused F-TRS joint embedding: ``y = LayerNorm(GELU(x W^T + b)) * gamma + beta + PE[v]``.

For every token (one joint of one frame) the forward loads its C coordinates (C = 3),
computes the Linear, the exact erf GELU, the LayerNorm (fp32 statistics) and the
positional-embedding add in registers, and writes ``[..., V, d]`` once, in the input
dtype or a requested one (bf16 out from fp32 in under autocast). Weights, LN affine and
PE stay in L1/L2. Saved for backward: x and per-token fp32 ``mean`` / ``rstd``
(8 B/token); the Linear and GELU are recomputed from x.

Backward recomputes ``h = x W^T + b``, ``g = GELU(h)``, ``n = (g - mean) * rstd`` and
produces dx plus the weight-like gradients dW, db, dgamma, dbeta and dPE. Those are
accumulated per program in fp32 registers and written as per-program partials into one
buffer, then summed with one ``torch.sum`` over the program axis: no atomics, so the
result is bitwise deterministic for a given shape and device (the persistent
partial-sum backward of Liger's and FLA's LayerNorm kernels; written here). Two kernels,
chosen by ``HITRS_FAST_EMBEDDING_BWD`` (docs/env.md):

- ``frames`` (default): tiles of ``BLOCK_F`` whole frames of ``V_PAD`` joint rows, so every
  row is a fixed joint and dPE accumulates row-wise. Measured faster than ``tokens`` on the
  first GPU run (H200, Triton 3.6, 8192 frames, fwd+bwd: 0.734 vs 0.756 ms with fp32 out,
  0.782 vs 0.902 ms with bf16 out; docs/benchmarks.md), against the performance model's
  prediction (docs/kernels/joint_embedding.md);
- ``tokens`` (kept for A/B runs): tiles of ``BLOCK_T`` consecutive tokens of the flattened
  ``[..., V]`` axis, across frame boundaries, so no row is padding (V = 25 in a 32-row
  frame tile wastes 22 %). A row's joint changes from tile to tile, so dPE is
  ``one_hot(joint)^T @ dy`` on the tensor cores into a ``[V_PAD, d]`` accumulator, and
  Triton's software pipeliner prefetches dy (a ``tl.dot`` operand) into shared memory;
  x, mean and rstd of the next tile are loaded before the current one is computed.
  dgamma, db and dW accumulate as ``FOLD``-row register partials, reduced across warps
  once per program.

Shapes and dtypes: x ``[..., V, C]`` with any V and small C (<= 16, unrolled), any d
(padded to a power of two and masked); x, weights and output each in fp32, bf16 or fp16,
independently (e.g. fp32 coordinates into bf16 parameters: the coordinates are read as
they are, never rounded), all arithmetic in fp32; gradients in each input's own dtype.
x may have any strides; the output and the statistics are contiguous.

Grid:
- forward: one program per ``BLOCK_M`` consecutive tokens (flattened ``[..., V]``),
  ``BLOCK_M * BLOCK_D`` ~ 4096 elements;
- backward: a persistent grid of at most ``k`` programs per SM (``k`` = 1 for tokens, 2 for frames),
  each owning a contiguous run of whole tiles: tokens (tokens kernel) or frames (frames kernel).
  The performance model behind these choices is in docs/kernels/joint_embedding.md.

Registered as ``torch.ops.hitrs_fast.joint_embedding_fwd`` / ``joint_embedding_bwd``
through ``torch.library.triton_op`` so ``torch.compile`` traces through the op.

Files: ``kernels.py`` (the ``@triton.jit`` kernels), ``ops.py`` (tile heuristics, launchers, registration,
:class:`JointEmbeddingFunction`).
"""

from hitrs_fast.kernels.joint_embedding.ops import (
    BWD_VARIANT_ENV,
    BWD_VARIANTS,
    MAX_CHANNELS,
    TOKENS_PROGRAMS_PER_SM,
    JointEmbeddingFunction,
    bwd_variant,
    joint_embedding_bwd,
    joint_embedding_fwd,
    split_param_grads,
)

__all__ = ["BWD_VARIANTS", "BWD_VARIANT_ENV", "MAX_CHANNELS", "TOKENS_PROGRAMS_PER_SM", "JointEmbeddingFunction",
           "bwd_variant", "joint_embedding_bwd", "joint_embedding_fwd", "split_param_grads"]
