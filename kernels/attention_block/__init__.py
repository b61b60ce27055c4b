"""The pre-LN attention sublayer fused into one Triton kernel each way (short sequences: F-TRS).

What it computes, for x ``[B, N, C]`` (B sequences of N tokens of width C), H heads of D, ``I = H * D``::

    xn  = LayerNorm(x) * ln_w + ln_b                          (fp32 statistics, eps)
    Q, K, V = xn W_q^T, xn W_k^T, xn W_v^T                    W_q, W_k, W_v: [I, C] (one [3I, C] weight)
    A_h = softmax(scale * Q_h K_h^T, masked) V_h              per sequence and head
    out = x + dropout(A W_o^T)                                W_o: [C, I]

the released Hi-TRS layer's attention half (no projection biases). Masks: none (F-TRS) or the C-TRS frame
rule inside each sequence (:class:`hitrs_fast.masks.FrameMask`; the integer rule of
:mod:`hitrs_fast.kernels.common.masks`).

Design (chosen by the performance model in docs/kernels/attention_blocks.md, candidate (d)): one program owns
a tile of ``ROWS`` rows holding ``G = ROWS // N`` whole sequences (5 frames of 25 joints in 128 rows) and
loops over the heads. Per head it projects Q, K, V of the whole tile (``[ROWS, C] x [C, D]`` dots, large
enough for Hopper's warp-group MMA), runs a block-diagonal single-pass softmax over the tile (a query sees
the keys of its own sequence only), and adds ``A_h W_o[:, h]^T`` to a ``[ROWS, C]`` fp32 accumulator; the
epilogue applies dropout and the residual. The only HBM traffic of the forward is x in and out out (plus
the weights, read from L2 by every program): Q, K, V and A never leave the chip.

Backward: the same tile walk recomputes LN, Q, K, V and the softmax (nothing but x and the dropout seed is
saved), regenerates the dropout mask, and per head computes ``dA = dZ W_o[:, h]``, ``dP = dA V^T``,
``delta = rowsum(P * dP)``, ``dS = P (dP - delta)``, dQ, dK, dV, and accumulates
``dxn += dQ W_q + dK W_k + dV W_v`` on chip for the LayerNorm backward, which writes dx (residual
included) and per-program partial sums of dln_w, dln_b. The weight gradients are reductions over every row
of the batch, which no tile can own: the kernel writes dQKV ``[B*N, 3I]``, A ``[B*N, I]``, xn ``[B*N, C]``
and (with dropout) dZ ``[B*N, C]``, and cuBLAS computes ``dW_qkv = dQKV^T xn`` and ``dW_o = dZ^T A``. The
partial LN sums are added on the host in a fixed order: no atomics, deterministic.

Dropout: counter-based (Philox, ``tl.rand``) on the element index ``row * C + col`` with a seed drawn
from PyTorch's generator (``torch.randint`` on the device, so ``torch.manual_seed`` makes it repeatable
and no host sync happens); the backward regenerates the same mask. It is not the mask ``nn.Dropout``
draws for the same seed (tests check its rate, scaling and forward/backward consistency).

Shapes and dtypes: x float32 / float16 / bfloat16, any strides; weights in one compute dtype, float16 or
bfloat16 (the dots run in it with fp32 accumulation; x may be fp32, e.g. under autocast); the output has x's
dtype. float32 dots (``tf32x3``) run under the CPU interpreter only: compiled for sm_90 the fp32 backward
needs 512 KiB of shared memory, so GPU fp32 takes the composed path. D in {16, 32, 64, 128}; C up to 256
(padded to a power of two); N <= ROWS (128 rows for C <= 128, 64 for C <= 256). Longer sequences (C-TRS,
N = 176) take the composed path (:func:`hitrs_fast.attention.frame_attention_block`), which the model
predicts faster there.

Grid: one axis of ``cdiv(B, G)`` programs (int64 offsets); axis 0 allows 2^31 - 1.

Files: ``kernels.py`` (the ``@triton.jit`` kernels), ``ops.py`` (configs, launchers, registration,
:class:`AttentionBlockFunction`).
"""

from hitrs_fast.kernels.attention_block.ops import (
    AUTOTUNE_KEY,
    AttentionBlockFunction,
    attention_block_bwd,
    attention_block_fwd,
    gpu_configs,
    tile_rows,
)

__all__ = ["AUTOTUNE_KEY", "AttentionBlockFunction", "attention_block_bwd", "attention_block_fwd", "gpu_configs",
           "tile_rows"]
