"""Host side of the fused joint embedding: tile and grid heuristics (no autotuning: the tile follows the
width, the backward grid the SM count), the launchers, the ``torch.library`` registration and the
``autograd.Function`` (:mod:`hitrs_fast.kernels.joint_embedding`)."""

from __future__ import annotations

import functools
import os

import torch
import triton
from triton.runtime.jit import JITFunction

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.common.launch import launchable
from hitrs_fast.kernels.common.registration import register
from hitrs_fast.kernels.joint_embedding.kernels import (
    joint_embedding_bwd_frames_kernel,
    joint_embedding_bwd_tokens_kernel,
    joint_embedding_fwd_kernel,
)

# Elements per register tile (forward and frames backward; the latter keeps three fp32 tiles of this size).
_TILE_ELEMENTS = 4096
# Coordinates per token: the channel loops are unrolled (C = 3 in Hi-TRS).
MAX_CHANNELS = capabilities.JOINT_EMBEDDING_MAX_CHANNELS
# Smallest tl.dot dimension: the one-hot dPE product pads V, the token tile and d to at least this.
MIN_DOT = 16
# Programs per SM in the persistent backward grids. Tokens: its compiled kernel at d = 128 (255 registers x 256
# threads on sm_90) fills the 64 K-register file once. Frames: the first planning value (255 registers x 256
# threads: one resident, the second runs as a second wave).
TOKENS_PROGRAMS_PER_SM = 1
FRAMES_PROGRAMS_PER_SM = 2
BWD_VARIANT_ENV = "HITRS_FAST_EMBEDDING_BWD"
BWD_VARIANTS = ("frames", "tokens")
"""Backward kernels; the first is the default (module docstring)."""


def _fwd_config(block_d: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps) for the forward tile ``[BLOCK_M, BLOCK_D]``."""
    block_m = max(1, min(128, _TILE_ELEMENTS // block_d))
    return block_m, 4 if block_m * block_d <= _TILE_ELEMENTS else 8


def _bwd_frames_config(v_pad: int, block_d: int) -> tuple[int, int]:
    """(BLOCK_F, num_warps) for the frames backward tile ``[BLOCK_F * V_PAD, BLOCK_D]``."""
    block_f = max(1, _TILE_ELEMENTS // (v_pad * block_d))
    return block_f, 8 if block_f * v_pad * block_d >= _TILE_ELEMENTS else 4


def _bwd_tokens_config(block_d: int) -> tuple[int, int, int]:
    """(BLOCK_T, num_warps, FOLD) for the tokens backward tile ``[BLOCK_T, BLOCK_D]``.

    16 fp32 elements per thread on 8 warps (32 tokens at d = 128): 255 registers without spills with triton 3.6
    (the GPU image's) and 3.9; the same density on 4 warps (16 tokens) spills 40 B per thread with triton 3.6 and
    its loop issues 53 % more instructions there; 32 per thread spill on both (docs/kernels/joint_embedding.md,
    "Backward: performance model"). FOLD is the row span of one pass of the CTA over the tile when dy is 16-bit
    (16 lanes x 8 elements per row at d = 128; fp32 dy spans half as many rows, of which FOLD is a multiple), so
    the column-sum partials fold in registers.
    """
    block_t = max(MIN_DOT, 16 * 32 * 8 // block_d)
    num_warps = min(16, max(8, block_t * block_d // (16 * 32)))  # more warps only where BLOCK_T hits MIN_DOT
    fold = min(block_t, max(1, 256 // block_d) * num_warps)
    return block_t, num_warps, fold


@functools.cache
def _max_programs(device: torch.device, per_sm: int) -> int:
    """Persistent backward grid size: ``per_sm`` programs per SM on CUDA; a few under the CPU interpreter."""
    if device.type == "cuda":
        return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def bwd_variant() -> str:
    """The backward kernel, from ``HITRS_FAST_EMBEDDING_BWD`` (default ``frames``, the faster on a GPU;
    ``tokens`` for A/B runs)."""
    value = os.environ.get(BWD_VARIANT_ENV, BWD_VARIANTS[0]).strip().lower()
    if value not in BWD_VARIANTS:
        raise ValueError(f"{BWD_VARIANT_ENV}={value!r}: expected one of {', '.join(BWD_VARIANTS)}")
    return value


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"joint_embedding: {message}")


def _frames_view(x: torch.Tensor, v: int, c: int) -> torch.Tensor:
    """``[..., V, C]`` as ``[F, V, C]`` (a view where the strides allow); F may be 0."""
    num_frames = x.numel() // (v * c) if v * c else 0
    return x.reshape(num_frames, v, c)


def joint_embedding_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                        ln_bias: torch.Tensor, pos: torch.Tensor, eps: float, out_dtype: torch.dtype,
                        save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the forward kernel.

    Args:
        x ``[..., V, C]``; weight ``[d, C]``; bias, ln_weight, ln_bias ``[d]``; pos ``[V, d]``.
        eps: LayerNorm epsilon. out_dtype: dtype of the output.
        save_stats: write the per-token fp32 mean and rstd (needed by the backward).

    Returns:
        ``(out [..., V, d] in out_dtype, mean [tokens], rstd [tokens])``; the statistics
        are empty when ``save_stats`` is False.
    """
    _check(x.dim() >= 2, f"x must be [..., V, C], got shape {tuple(x.shape)}")
    v, c = x.shape[-2], x.shape[-1]
    d = weight.shape[0]
    _check(weight.shape == (d, c), f"weight must be [d, C={c}], got {tuple(weight.shape)}")
    for name, t in (("bias", bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        _check(t.shape == (d,), f"{name} must be [d={d}], got {tuple(t.shape)}")
    _check(pos.shape == (v, d), f"pos must be [V={v}, d={d}], got {tuple(pos.shape)}")
    _check(1 <= c <= MAX_CHANNELS, f"C = {c} must be in [1, {MAX_CHANNELS}]")

    xf = _frames_view(x, v, c)  # [F, V, C]
    num_tokens = xf.shape[0] * v
    out = torch.empty((*x.shape[:-1], d), device=x.device, dtype=out_dtype)
    n_stats = num_tokens if save_stats else 0
    mean = torch.empty(n_stats, device=x.device, dtype=torch.float32)
    rstd = torch.empty(n_stats, device=x.device, dtype=torch.float32)
    if num_tokens == 0 or d == 0:
        return out, mean, rstd
    bias, ln_weight, ln_bias = bias.contiguous(), ln_weight.contiguous(), ln_bias.contiguous()
    block_d = triton.next_power_of_2(d)
    block_m, num_warps = _fwd_config(block_d)
    grid = (triton.cdiv(num_tokens, block_m),)
    launchable(joint_embedding_fwd_kernel, xf)[grid](
        xf, weight, bias, ln_weight, ln_bias, pos, out, mean, rstd,
        num_tokens, v, d, eps,
        xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1), pos.stride(0), pos.stride(1),
        C=c, BLOCK_M=block_m, BLOCK_D=block_d, SAVE_STATS=save_stats, num_warps=num_warps,
    )
    return out, mean, rstd


def joint_embedding_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        ln_weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Launches the backward kernel chosen by ``HITRS_FAST_EMBEDDING_BWD`` and sums its per-program partials.

    Args:
        dy ``[..., V, d]``: upstream gradient. x, weight, bias, ln_weight: as in the forward.
        mean, rstd ``[tokens]``: from the forward.

    Returns:
        ``(dx [..., V, C] in x's dtype, sums [(V + C + 3) * d] fp32)``; :func:`split_param_grads`
        turns ``sums`` into dW, db, dgamma, dbeta and dPE (one buffer: one reduction launch).
    """
    v, c = x.shape[-2], x.shape[-1]
    d = weight.shape[0]
    _check(dy.shape == (*x.shape[:-1], d), f"dy must be {(*x.shape[:-1], d)}, got {tuple(dy.shape)}")
    xf = _frames_view(x, v, c)
    num_frames = xf.shape[0]
    _check(mean.numel() == num_frames * v and rstd.numel() == num_frames * v,
           "mean/rstd were not saved by the forward (save_stats=False)")
    dy = dy.contiguous()
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    launch = _launch_bwd_tokens if bwd_variant() == "tokens" else _launch_bwd_frames
    programs, kernel, runtime, meta = launch(xf, dy, d) if num_frames and d else (1, None, (), {})
    part = torch.empty((programs, (v + c + 3) * d), device=x.device, dtype=torch.float32)
    if kernel is None:
        dx.zero_()
        part.zero_()
    else:
        launchable(kernel, xf)[(programs,)](
            xf, weight, bias.contiguous(), ln_weight.contiguous(), mean, rstd, dy, dx, part, *runtime,
            xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1), **meta,
        )
    # torch.sum over a fixed-size axis has a fixed order: deterministic, unlike atomics.
    return dx, part.sum(0)


def split_param_grads(sums: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                      pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dW [d, C], db [d], dgamma [d], dbeta [d], dPE [V, d])`` from the backward's ``sums``, each in its
    parameter's dtype (views of ``sums`` where that is fp32)."""
    (v, d), c = pos.shape, weight.shape[1]
    o_w, o_b = v * d, (v + c) * d
    return (sums[o_w:o_b].view(d, c).to(weight.dtype), sums[o_b:o_b + d].to(bias.dtype),
            sums[o_b + d:o_b + 2 * d].to(ln_weight.dtype), sums[o_b + 2 * d:].to(ln_weight.dtype),
            sums[:o_w].view(v, d).to(pos.dtype))


def _launch_bwd_tokens(xf: torch.Tensor, dy: torch.Tensor, d: int) -> tuple[int, JITFunction, tuple, dict]:
    """Programs, kernel, runtime scalars and meta-parameters of :func:`joint_embedding_bwd_tokens_kernel`
    for ``xf [F, V, C]`` and ``dy [F, V, d]``."""
    num_frames, v, c = xf.shape
    num_tokens = num_frames * v
    block_d = max(MIN_DOT, triton.next_power_of_2(d))
    block_t, num_warps, fold = _bwd_tokens_config(block_d)
    tiles = triton.cdiv(num_tokens, block_t)
    programs = min(tiles, _max_programs(xf.device, TOKENS_PROGRAMS_PER_SM))
    # Whole tiles per program, so only the last program sees a ragged tile.
    tokens_per_program = triton.cdiv(tiles, programs) * block_t
    programs = triton.cdiv(num_tokens, tokens_per_program)
    meta = dict(V=v, C=c, C_PAD=triton.next_power_of_2(c), V_PAD=max(MIN_DOT, triton.next_power_of_2(v)),
                BLOCK_T=block_t, BLOCK_D=block_d, FOLD=fold, SPLIT_DY=dy.dtype == torch.float32, num_warps=num_warps)
    return programs, joint_embedding_bwd_tokens_kernel, (num_tokens, tokens_per_program, d), meta


def _launch_bwd_frames(xf: torch.Tensor, dy: torch.Tensor, d: int) -> tuple[int, JITFunction, tuple, dict]:
    """Programs, kernel, runtime scalars and meta-parameters of :func:`joint_embedding_bwd_frames_kernel`
    for ``xf [F, V, C]`` and ``dy [F, V, d]``."""
    num_frames, v, c = xf.shape
    block_d = triton.next_power_of_2(d)
    v_pad = triton.next_power_of_2(v)
    block_f, num_warps = _bwd_frames_config(v_pad, block_d)
    frame_blocks = triton.cdiv(num_frames, block_f)
    programs = min(frame_blocks, _max_programs(xf.device, FRAMES_PROGRAMS_PER_SM))
    frames_per_program = triton.cdiv(frame_blocks, programs) * block_f
    programs = triton.cdiv(num_frames, frames_per_program)
    meta = dict(C=c, C_PAD=triton.next_power_of_2(c), V_PAD=v_pad, BLOCK_F=block_f, BLOCK_D=block_d,
                num_warps=num_warps)
    return programs, joint_embedding_bwd_frames_kernel, (num_frames, frames_per_program, v, d), meta


def _joint_embedding_fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                            ln_bias: torch.Tensor, pos: torch.Tensor, eps: float, out_dtype: torch.dtype,
                            save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return joint_embedding_fwd(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats)


def _joint_embedding_bwd_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            ln_weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    return joint_embedding_bwd(dy, x, weight, bias, ln_weight, mean, rstd)


def _fwd_fake(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats):
    n_stats = x.numel() // x.shape[-1] if save_stats else 0
    return (x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype),
            x.new_empty(n_stats, dtype=torch.float32), x.new_empty(n_stats, dtype=torch.float32))


def _bwd_fake(dy, x, weight, bias, ln_weight, mean, rstd):
    v, (d, c) = x.shape[-2], weight.shape
    return torch.empty_like(x), x.new_empty((v + c + 3) * d, dtype=torch.float32)


register("hitrs_fast::joint_embedding_fwd", _joint_embedding_fwd_op, _fwd_fake)
register("hitrs_fast::joint_embedding_bwd", _joint_embedding_bwd_op, _bwd_fake)


class JointEmbeddingFunction(torch.autograd.Function):
    """Autograd wrapper over the two registered ops.

    ``apply(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats)``;
    ``save_stats`` must be True whenever a gradient will be requested.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats):
        out, mean, rstd = torch.ops.hitrs_fast.joint_embedding_fwd(x, weight, bias, ln_weight, ln_bias, pos, eps,
                                                                   out_dtype, save_stats)
        ctx.save_for_backward(x, weight, bias, ln_weight, pos, mean, rstd)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, weight, bias, ln_weight, pos, mean, rstd = ctx.saved_tensors
        dx, sums = torch.ops.hitrs_fast.joint_embedding_bwd(dy, x, weight, bias, ln_weight, mean, rstd)
        grads = (dx, *split_param_grads(sums, weight, bias, ln_weight, pos))
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:6], strict=True)),
                None, None, None)

