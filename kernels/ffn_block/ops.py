"""Host side of the fused feed-forward sublayer (:mod:`hitrs_fast.kernels.ffn_block`): autotuning, launchers,
``torch.library`` registration and the ``autograd.Function``."""

from __future__ import annotations

import functools

import torch
import triton

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.common.jit import input_precision
from hitrs_fast.kernels.common.launch import launch_autotuned
from hitrs_fast.kernels.common.registration import register
from hitrs_fast.kernels.common.tuning import autotune, interpreting, launch_args, single_config
from hitrs_fast.kernels.ffn_block.kernels import ffn_block_bwd_kernel, ffn_block_fwd_kernel

AUTOTUNE_KEY = ["C", "F_PAD", "BLOCK_M", "DROPOUT", "INPUT_PRECISION"]
"""The model's widths (constants of a level) and the variant; the row count M changes every batch and is absent."""
# HITRS_FAST_SINGLE_CONFIG / interpreter: C in 32-column chunks.
_SINGLE = triton.Config({"BLOCK_K": 32}, num_warps=4, num_stages=1)


def gpu_configs() -> list[triton.Config]:
    """C chunks of 32 or 64 columns, 4 or 8 warps (the row tile is the host's, :func:`block_rows`)."""
    return [triton.Config({"BLOCK_K": bk}, num_warps=w, num_stages=1) for bk in (32, 64) for w in (4, 8)]


def block_rows(hidden: int) -> int:
    """Rows per program: 64 (Hopper's warp-group MMA takes 64-row operands) while the four ``[rows, hidden]`` fp32
    tiles of the backward stay near 64 KiB, else 32. Fixed on the host, not tuned: the backward's per-program
    partial sums have one row per program, and their buffer is sized before the launch."""
    return 64 if max(16, triton.next_power_of_2(hidden)) <= 128 and not single_config() else 32


def _prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Drop C chunks wider than the padded width; never empty."""
    c_pad = triton.next_power_of_2(launch_args(named_args, kwargs)["C"])
    return [c for c in configs if c.kwargs["BLOCK_K"] <= max(16, c_pad)] or [_SINGLE]


@functools.cache
def _autotuned(kernel):
    configs = [_SINGLE] if single_config() else gpu_configs()
    return autotune(kernel, configs, AUTOTUNE_KEY, _prune)




def _check(where: str, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
           w2: torch.Tensor, b2: torch.Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{where}: x must be [M, C], got {tuple(x.shape)}")
    m, c = x.shape
    f = w1.shape[0]
    if w1.shape != (f, c) or w2.shape != (c, f) or b1.shape != (f,) or b2.shape != (c,):
        raise ValueError(f"{where}: expected w1 [F, C={c}], b1 [F], w2 [C, F], b2 [C], got {tuple(w1.shape)}, "
                         f"{tuple(b1.shape)}, {tuple(w2.shape)}, {tuple(b2.shape)}")
    if ln_w.shape != (c,) or ln_b.shape != (c,):
        raise ValueError(f"{where}: ln_w and ln_b must be [C={c}], got {tuple(ln_w.shape)}, {tuple(ln_b.shape)}")
    if w1.dtype != w2.dtype:
        raise ValueError(f"{where}: w1 and w2 must share the compute dtype, got {w1.dtype} and {w2.dtype}")
    on_gpu = x.device.type == "cuda"
    reasons = capabilities.ffn_block_reasons(m, c, f, x.dtype, w1.dtype, fp32_compute=not on_gpu, on_gpu=on_gpu)
    if reasons:
        raise ValueError(f"{where}: " + "; ".join(reasons))


def _meta(w1: torch.Tensor, dropout: bool) -> dict:
    f = w1.shape[0]
    return {"BLOCK_M": block_rows(f), "F_PAD": max(16, triton.next_power_of_2(f)), "DROPOUT": dropout,
            "INPUT_PRECISION": input_precision(w1.dtype), "INTERP_BF16": w1.dtype == torch.bfloat16 and interpreting()}


def ffn_block_fwd(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                  w2: torch.Tensor, b2: torch.Tensor, seed: torch.Tensor | None, eps: float, dropout_p: float,
                  save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward launcher.

    Args:
        x: ``[M, C]`` (any strides), the residual stream. ln_w, ln_b: ``[C]``. w1 ``[F, C]``, b1 ``[F]``, w2
            ``[C, F]``, b2 ``[C]`` (w1 and w2 in the compute dtype). seed: int64 ``[1]`` on x's device, or None
            (no dropout). eps: LayerNorm epsilon. dropout_p: drop probability (with a seed). save_stats: write the
            per-row mean and rstd (needed by the backward).

    Returns:
        ``(out [M, C] in x's dtype, mean [M], rstd [M])`` (statistics fp32, empty without ``save_stats``).
    """
    _check("ffn_block_fwd", x, ln_w, ln_b, w1, b1, w2, b2)
    m, c = x.shape
    out = torch.empty((m, c), dtype=x.dtype, device=x.device)
    n_stats = m if save_stats else 0
    mean = torch.empty(n_stats, dtype=torch.float32, device=x.device)
    rstd = torch.empty(n_stats, dtype=torch.float32, device=x.device)
    if m == 0:
        return out, mean, rstd
    dropout = seed is not None and dropout_p > 0.0
    stats = (mean, rstd) if save_stats else (x, x)  # never written without save_stats
    args = (x, ln_w, ln_b, w1, b1, w2, b2, out, *stats, seed if dropout else x,
            m, c, w1.shape[0], eps, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
            *x.stride(), *w1.stride(), *w2.stride())
    meta = {**_meta(w1, dropout), "SAVE_STATS": save_stats}
    launch_autotuned(_autotuned(ffn_block_fwd_kernel), (triton.cdiv(m, meta["BLOCK_M"]),), args, meta, (x,))
    return out, mean, rstd


def ffn_block_bwd(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor,
                  b1: torch.Tensor, w2: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                  seed: torch.Tensor | None, dropout_p: float) -> tuple[torch.Tensor, ...]:
    """Backward launcher: the fused kernel, then cuBLAS for the two weight gradients and a fixed-order sum of the
    per-program partials (no atomics: deterministic).

    Returns:
        ``(dx [M, C] in x's dtype, d ln_w, d ln_b, d w1, d b1, d w2, d b2)``, each parameter's in its own dtype.
    """
    _check("ffn_block_bwd", x, ln_w, ln_b, w1, b1, w2, w2.new_empty(x.shape[1]))
    m, c = x.shape
    f = w1.shape[0]
    if dy.shape != x.shape:
        raise ValueError(f"ffn_block_bwd: dy must be {tuple(x.shape)}, got {tuple(dy.shape)}")
    if mean.numel() != m or rstd.numel() != m:
        raise ValueError("ffn_block_bwd: mean/rstd were not saved by the forward (save_stats=False)")
    cdt, dev = w1.dtype, x.device
    dropout = seed is not None and dropout_p > 0.0
    dx = torch.empty((m, c), dtype=x.dtype, device=dev)
    xn = torch.empty((m, c), dtype=cdt, device=dev)
    g = torch.empty((m, f), dtype=cdt, device=dev)
    dz = torch.empty((m, c), dtype=cdt, device=dev)
    dh = torch.empty((m, f), dtype=cdt, device=dev)
    meta = _meta(w1, dropout)
    programs = triton.cdiv(m, meta["BLOCK_M"])
    parts = torch.empty((programs, 3 * c + f), dtype=torch.float32, device=dev)  # every program writes its row
    if m:
        args = (x, ln_w, ln_b, w1, b1, w2, dy, mean, rstd, seed if dropout else x, dx, xn, g, dz, dh, parts,
                m, c, f, dropout_p, 1.0 / (1.0 - dropout_p) if dropout else 1.0,
                *x.stride(), *w1.stride(), *w2.stride(), *dy.stride())
        launch_autotuned(_autotuned(ffn_block_bwd_kernel), (programs,), args, meta, (x,))
    sums = parts.sum(0)  # a fixed-order reduction over the program axis
    dw1 = dh.t() @ xn  # [F, C], cuBLAS with fp32 accumulation
    dw2 = dz.t() @ g  # [C, F]
    # copy=True: returns of a custom op must not alias each other (fp32 slices of sums would).
    return (dx, sums[:c].to(ln_w.dtype, copy=True), sums[c:2 * c].to(ln_b.dtype, copy=True), dw1.to(w1.dtype),
            sums[3 * c:].to(b1.dtype, copy=True), dw2.to(w2.dtype), sums[2 * c:3 * c].clone())


def _fwd_op(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
            w2: torch.Tensor, b2: torch.Tensor, seed: torch.Tensor | None, eps: float, dropout_p: float,
            save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ffn_block_fwd(x, ln_w, ln_b, w1, b1, w2, b2, seed, eps, dropout_p, save_stats)


def _bwd_op(dy: torch.Tensor, x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor,
            b1: torch.Tensor, w2: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, seed: torch.Tensor | None,
            dropout_p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                       torch.Tensor, torch.Tensor]:
    return ffn_block_bwd(dy, x, ln_w, ln_b, w1, b1, w2, mean, rstd, seed, dropout_p)


def _fwd_fake(x, ln_w, ln_b, w1, b1, w2, b2, seed, eps, dropout_p, save_stats):
    n_stats = x.shape[0] if save_stats else 0
    return (x.new_empty(x.shape), x.new_empty(n_stats, dtype=torch.float32),
            x.new_empty(n_stats, dtype=torch.float32))


def _bwd_fake(dy, x, ln_w, ln_b, w1, b1, w2, mean, rstd, seed, dropout_p):
    return (x.new_empty(x.shape), torch.empty_like(ln_w), torch.empty_like(ln_b), torch.empty_like(w1),
            torch.empty_like(b1), torch.empty_like(w2), w2.new_empty(x.shape[1], dtype=torch.float32))


register("hitrs_fast::ffn_block_fwd", _fwd_op, _fwd_fake)
register("hitrs_fast::ffn_block_bwd", _bwd_op, _bwd_fake)


class FfnBlockFunction(torch.autograd.Function):
    """Autograd wrapper; saves x, the parameters, the LayerNorm statistics and the dropout seed (the hidden
    activations are recomputed).

    ``apply(x [M, C], ln_w, ln_b, w1, b1, w2, b2, seed, eps, dropout_p) -> out [M, C]``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, ln_w, ln_b, w1, b1, w2, b2, seed, eps, dropout_p):
        need_grad = any(ctx.needs_input_grad[:7])
        out, mean, rstd = torch.ops.hitrs_fast.ffn_block_fwd(x, ln_w, ln_b, w1, b1, w2, b2, seed, eps, dropout_p,
                                                             need_grad)
        ctx.save_for_backward(x, ln_w, ln_b, w1, b1, w2, mean, rstd, seed)
        ctx.params = (dropout_p, b2.dtype)
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, ln_w, ln_b, w1, b1, w2, mean, rstd, seed = ctx.saved_tensors
        dropout_p, b2_dtype = ctx.params
        dx, dln_w, dln_b, dw1, db1, dw2, db2 = torch.ops.hitrs_fast.ffn_block_bwd(
            dy.contiguous(), x, ln_w, ln_b, w1, b1, w2, mean, rstd, seed, dropout_p)
        return dx, dln_w, dln_b, dw1, db1, dw2, db2.to(b2_dtype), None, None, None
