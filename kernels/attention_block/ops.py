"""Host side of the fused attention sublayer (:mod:`hitrs_fast.kernels.attention_block`): autotuning (warps only;
the tile is fixed by the width), the launchers, the ``torch.library`` registration and the ``autograd.Function``."""

from __future__ import annotations

import functools

import torch
import triton

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.attention_block.kernels import attention_block_bwd_kernel, attention_block_fwd_kernel
from hitrs_fast.kernels.common.jit import LOG2E, input_precision
from hitrs_fast.kernels.common.launch import launch_autotuned
from hitrs_fast.kernels.common.registration import register
from hitrs_fast.kernels.common.tuning import autotune, interpreting, single_config

AUTOTUNE_KEY = ["ROWS", "C_PAD", "HEADS", "HEAD_DIM", "MASK_KIND", "FRAME_SIZE", "CLS_POS", "ALLOW_SELF", "DROPOUT",
                "INPUT_PRECISION"]
# HITRS_FAST_SINGLE_CONFIG / interpreter: 8 warps, the smallest count that does not spill kilobytes on sm_90.
_SINGLE = triton.Config({}, num_warps=8, num_stages=1)


def gpu_configs() -> list[triton.Config]:
    """Warps of the program (the tile, hence the grid, is fixed by the host). Compiled for sm_90 at the F-TRS
    shape in bf16: 4 warps spill 4.5-5.6 KiB of registers, 8 and 16 warps about 0.5 KiB forward and 1.7 KiB
    backward; a second pipeline stage doubles the shared memory (the backward no longer fits 227 KiB)."""
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (8, 16)]


@functools.cache
def _autotuned(kernel):
    configs = [_SINGLE] if single_config() else gpu_configs()
    return autotune(kernel, configs, AUTOTUNE_KEY)


def tile_rows(c: int) -> int:
    """Rows per program tile for width C (the fused path needs N <= this)."""
    return capabilities.attention_block_rows(c)


def _check(where: str, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
           heads: int) -> None:
    if x.dim() != 3:
        raise ValueError(f"{where}: x must be [B, N, C], got {tuple(x.shape)}")
    b, n, c = x.shape
    if wqkv.dim() != 2 or wqkv.shape[1] != c or wqkv.shape[0] % (3 * heads):
        raise ValueError(f"{where}: wqkv must be [3 * H * D, C={c}] with H = {heads}, got {tuple(wqkv.shape)}")
    head_dim = wqkv.shape[0] // (3 * heads)
    if wo.shape != (c, heads * head_dim):
        raise ValueError(f"{where}: wo must be [C={c}, H * D={heads * head_dim}], got {tuple(wo.shape)}")
    if ln_w.shape != (c,) or ln_b.shape != (c,):
        raise ValueError(f"{where}: ln_w and ln_b must be [C={c}], got {tuple(ln_w.shape)}, {tuple(ln_b.shape)}")
    if wo.dtype != wqkv.dtype:
        raise ValueError(f"{where}: wqkv and wo must share the compute dtype, got {wqkv.dtype} and {wo.dtype}")
    # fp32 dots only where no GPU is involved (the interpreter): they do not fit sm_90's shared memory.
    on_gpu = x.device.type == "cuda"
    reasons = capabilities.attention_block_reasons(b, n, c, heads, head_dim, x.dtype, wqkv.dtype,
                                                   fp32_compute=not on_gpu, on_gpu=on_gpu)
    if reasons:
        raise ValueError(f"{where}: " + "; ".join(reasons))


def _meta(x: torch.Tensor, wqkv: torch.Tensor, heads: int, mask_kind: int, frame_size: int, cls_pos: int,
          allow_self: bool, dropout: bool) -> dict:
    c = x.shape[2]
    return {"ROWS": tile_rows(c), "C_PAD": triton.next_power_of_2(c), "HEADS": heads,
            "HEAD_DIM": wqkv.shape[0] // (3 * heads), "MASK_KIND": mask_kind, "FRAME_SIZE": frame_size,
            "CLS_POS": cls_pos, "ALLOW_SELF": allow_self, "DROPOUT": dropout,
            "INPUT_PRECISION": input_precision(wqkv.dtype),
            "INTERP_BF16": wqkv.dtype == torch.bfloat16 and interpreting()}


def _programs(b: int, n: int, c: int) -> int:
    return triton.cdiv(b, tile_rows(c) // n)


def attention_block_fwd(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor,
                        wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float, scale: float,
                        mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        dropout_p: float) -> torch.Tensor:
    """Forward launcher.

    Args:
        x: ``[B, N, C]``, any strides. ln_w, ln_b: ``[C]``. wqkv: ``[3 * H * D, C]`` (rows q | k | v).
        wo: ``[C, H * D]``. seed: int64 ``[1]`` on x's device (dropout), or None for no dropout.
        heads: H. eps: LayerNorm epsilon. scale: softmax scale. mask_kind, frame_size, cls_pos, allow_self:
        the mask (``hitrs_fast.kernels.frame_attention`` codes). dropout_p: the drop probability (with a seed).

    Returns:
        ``[B, N, C]`` in x's dtype, contiguous.
    """
    _check("attention_block_fwd", x, ln_w, ln_b, wqkv, wo, heads)
    b, n, c = x.shape
    out = torch.empty((b, n, c), dtype=x.dtype, device=x.device)
    if b == 0:
        return out
    dropout = seed is not None and dropout_p > 0.0
    xr = x.reshape(b * n, c) if x.stride(1) == c * x.stride(2) else x.contiguous().view(b * n, c)
    meta = _meta(x, wqkv, heads, mask_kind, frame_size, cls_pos, allow_self, dropout)
    args = (xr, ln_w, ln_b, wqkv, wo, out, seed if dropout else xr,
            b, n, c, eps, scale * LOG2E, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
            *xr.stride(), *wqkv.stride(), *wo.stride())
    launch_autotuned(_autotuned(attention_block_fwd_kernel), (_programs(b, n, c),), args, meta, (x,))
    return out


def attention_block_bwd(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor,
                        wqkv: torch.Tensor, wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float,
                        scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        dropout_p: float) -> tuple[torch.Tensor, ...]:
    """Backward launcher: the fused kernel, then cuBLAS for the weight gradients and a fixed-order sum of
    the LN partials.

    Args:
        dy: ``[B, N, C]`` upstream gradient. Others as given to :func:`attention_block_fwd`.

    Returns:
        ``(dx [B, N, C], d ln_w [C], d ln_b [C], d wqkv [3 * H * D, C], d wo [C, H * D])``; dx in x's dtype, the
        rest in their parameter's dtype.
    """
    _check("attention_block_bwd", x, ln_w, ln_b, wqkv, wo, heads)
    b, n, c = x.shape
    if dy.shape != x.shape:
        raise ValueError(f"attention_block_bwd: dy must be {tuple(x.shape)}, got {tuple(dy.shape)}")
    inner = wo.shape[1]
    rows, cdt, dev = b * n, wqkv.dtype, x.device
    dropout = seed is not None and dropout_p > 0.0
    programs = _programs(b, n, c) if b else 0
    dx = torch.empty((b, n, c), dtype=x.dtype, device=dev)
    dqkv = torch.empty((rows, 3 * inner), dtype=cdt, device=dev)
    att = torch.empty((rows, inner), dtype=cdt, device=dev)
    xn = torch.empty((rows, c), dtype=cdt, device=dev)
    dz = torch.empty((rows, c), dtype=cdt, device=dev) if dropout else None
    parts = torch.empty((2, programs, c), dtype=torch.float32, device=dev)
    if b:
        xr = x.reshape(rows, c) if x.stride(1) == c * x.stride(2) else x.contiguous().view(rows, c)
        dyr = dy.reshape(rows, c)
        meta = _meta(x, wqkv, heads, mask_kind, frame_size, cls_pos, allow_self, dropout)
        args = (xr, ln_w, ln_b, wqkv, wo, dyr, seed if dropout else xr,
                dx, dqkv, att, xn, dz if dropout else xn, parts[0], parts[1],
                b, n, c, eps, scale * LOG2E, scale, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
                *xr.stride(), *wqkv.stride(), *wo.stride(), *dyr.stride())
        launch_autotuned(_autotuned(attention_block_bwd_kernel), (programs,), args, meta, (x,))
    # Reductions over every row of the batch: cuBLAS (fp32 accumulation) and a fixed-order partial sum.
    dz = dz if dropout else dy.reshape(rows, c).to(cdt)
    dwqkv = dqkv.t() @ xn  # [3I, C]
    dwo = dz.t() @ att  # [C, I]
    # Two separate sums: returns of a custom op must not alias each other.
    return (dx, parts[0].sum(0).to(ln_w.dtype), parts[1].sum(0).to(ln_b.dtype), dwqkv.to(wqkv.dtype),
            dwo.to(wo.dtype))


def _fwd_op(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor, wo: torch.Tensor,
            seed: torch.Tensor | None, heads: int, eps: float, scale: float, mask_kind: int, frame_size: int,
            cls_pos: int, allow_self: bool, dropout_p: float) -> torch.Tensor:
    return attention_block_fwd(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos,
                               allow_self, dropout_p)


def _bwd_op(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, wqkv: torch.Tensor,
            wo: torch.Tensor, seed: torch.Tensor | None, heads: int, eps: float, scale: float, mask_kind: int,
            frame_size: int, cls_pos: int, allow_self: bool,
            dropout_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_block_bwd(dy, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size,
                               cls_pos, allow_self, dropout_p)


def _fwd_fake(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
              dropout_p):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _bwd_fake(dy, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
              dropout_p):
    return (torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(ln_w),
            torch.empty_like(ln_b), torch.empty_like(wqkv), torch.empty_like(wo))


register("hitrs_fast::attention_block_fwd", _fwd_op, _fwd_fake)
register("hitrs_fast::attention_block_bwd", _bwd_op, _bwd_fake)


class AttentionBlockFunction(torch.autograd.Function):
    """Autograd wrapper; saves x, the parameters and the dropout seed only (everything else is recomputed).

    ``apply(x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
    dropout_p) -> out [B, N, C]``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, ln_w, ln_b, wqkv, wo, seed, heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self,
                dropout_p):
        params = (heads, eps, scale, mask_kind, frame_size, cls_pos, allow_self, dropout_p)
        out = torch.ops.hitrs_fast.attention_block_fwd(x, ln_w, ln_b, wqkv, wo, seed, *params)
        ctx.save_for_backward(x, ln_w, ln_b, wqkv, wo, seed)
        ctx.params = params
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, ln_w, ln_b, wqkv, wo, seed = ctx.saved_tensors
        grads = torch.ops.hitrs_fast.attention_block_bwd(dy, x, ln_w, ln_b, wqkv, wo, seed, *ctx.params)
        return (*grads, None, None, None, None, None, None, None, None, None)

