"""What each Triton kernel accepts, declared once and importable without triton.

The dispatcher (:mod:`hitrs_fast.dispatch`, through the backends of :mod:`hitrs_fast.attention` and
:mod:`hitrs_fast.embedding`) reads these limits to choose a backend before triton is loaded; the kernel
launchers read the same functions to validate their inputs. Every function returns the list of reasons
the kernel cannot take the inputs, ``[]`` when it can (devices are the dispatcher's business).
"""

from __future__ import annotations

import torch

MAX_GRID = 2**31 - 1
"""Programs on grid axis 0 (axes 1 and 2 stop at 65 535, which is why every kernel uses axis 0 only)."""
MIN_COMPUTE_CAPABILITY = (8, 0)
"""bf16 tensor-core dots need Ampere or newer."""

FRAME_ATTENTION_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FRAME_ATTENTION_HEAD_DIMS = (16, 32, 64, 128)
FRAME_ATTENTION_MAX_TOKENS = 4096
"""Largest N the launcher accepts; beyond it the online loop still works but is untested."""
FRAME_ATTENTION_MIN_BLOCK = 16
"""Smallest tile of any config: the launch grid is at most ``B * H * cdiv(N, MIN_BLOCK)`` programs."""
FRAME_ATTENTION_DETERMINISTIC = True
"""No atomics in the backward: two runs give bit-identical gradients."""

JOINT_EMBEDDING_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
JOINT_EMBEDDING_MAX_CHANNELS = 16
"""Input channels C held in registers per token."""
JOINT_EMBEDDING_MAX_BWD_TILE = 16384
"""Largest ``V_pad * d_pad`` the backward takes: the size of its per-program fp32 dPE accumulator (the frames
kernel keeps three such tiles on 256 threads, the tokens kernel one, as a tensor-core accumulator on 128 threads).
At the model's 32 * 128 neither spills on sm_90; at this limit they still compile and run correctly, spilling
registers to local memory."""


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def frame_attention_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.frame_attention` cannot take ``q, k, v [B, H, N, D]``."""
    if q.dim() != 4:
        return [f"q must be [B, H, N, D], got {q.dim()} dims"]
    reasons = []
    if not (q.dtype == k.dtype == v.dtype):
        reasons.append(f"q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    if q.dtype not in FRAME_ATTENTION_DTYPES:
        reasons.append(f"dtype {q.dtype} not in (float32, bfloat16, float16)")
    if q.shape[-1] not in FRAME_ATTENTION_HEAD_DIMS:
        reasons.append(f"head_dim {q.shape[-1]} not in {FRAME_ATTENTION_HEAD_DIMS}")
    if not 1 <= q.shape[2] <= FRAME_ATTENTION_MAX_TOKENS:
        reasons.append(f"N = {q.shape[2]} not in [1, {FRAME_ATTENTION_MAX_TOKENS}]")
    programs = q.shape[0] * q.shape[1] * -(-q.shape[2] // FRAME_ATTENTION_MIN_BLOCK)
    if programs > MAX_GRID:
        reasons.append(f"B * H * cdiv(N, {FRAME_ATTENTION_MIN_BLOCK}) = {programs} programs exceed grid axis 0 "
                       "(2^31 - 1)")
    return reasons


def joint_embedding_reasons(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                            ln_bias: torch.Tensor, pos: torch.Tensor, out_dtype: torch.dtype) -> list[str]:
    """Why :mod:`hitrs_fast.kernels.joint_embedding` cannot take ``x [..., V, C]`` and ``weight [d, C]`` etc."""
    reasons = []
    for name, t in (("x", x), ("weight", weight), ("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias),
                    ("pos", pos)):
        if t.dtype not in JOINT_EMBEDDING_DTYPES:
            reasons.append(f"{name} dtype {t.dtype} not in (float32, bfloat16, float16)")
    if out_dtype not in JOINT_EMBEDDING_DTYPES:
        reasons.append(f"output dtype {out_dtype} not in (float32, bfloat16, float16)")
    v, c = x.shape[-2:]
    if c > JOINT_EMBEDDING_MAX_CHANNELS:
        reasons.append(f"C = {c} > {JOINT_EMBEDDING_MAX_CHANNELS} input channels")
    tile = _next_pow2(v) * _next_pow2(weight.shape[0])
    if tile > JOINT_EMBEDDING_MAX_BWD_TILE:
        reasons.append(f"V_pad * d_pad = {tile} > {JOINT_EMBEDDING_MAX_BWD_TILE} (backward tile would spill "
                       "registers)")
    return reasons
