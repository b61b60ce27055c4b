"""Fused F-TRS joint embedding: ``y = LayerNorm(GELU(x W^T + b)) * gamma + beta + PE[v]``.

For every token (one joint of one frame) the forward loads its C coordinates (C = 3),
computes the Linear, the exact erf GELU, the LayerNorm (fp32 statistics) and the
positional-embedding add in registers, and writes ``[..., V, d]`` once, in the input
dtype or a requested one (bf16 out from fp32 in under autocast). Weights, LN affine and
PE stay in L1/L2. Saved for backward: x and per-token fp32 ``mean`` / ``rstd``
(8 B/token); the Linear and GELU are recomputed from x.

Backward recomputes ``h = x W^T + b``, ``g = GELU(h)``, ``n = (g - mean) * rstd`` and
produces dx plus the weight-like gradients dW, db, dgamma, dbeta and dPE. Those are
accumulated per program in fp32 registers and written as per-program partials, then
summed on the host with ``torch.sum`` over the program axis: no atomics, so the
result is bitwise deterministic for a given shape and device (the persistent
partial-sum backward of Liger's and FLA's LayerNorm kernels; written here). dbeta is
``sum_v dPE[v]``, so it costs no extra accumulator.

Shapes and dtypes: x ``[..., V, C]`` with any V and small C (<= 16, unrolled), any d
(padded to a power of two and masked); x, weights and output each in fp32, bf16 or fp16,
independently (e.g. fp32 coordinates into bf16 parameters: the coordinates are read as
they are, never rounded), all arithmetic in fp32; gradients in each input's own dtype.
x may have any strides; the output and the statistics are contiguous.

Grid:
- forward: one program per ``BLOCK_M`` consecutive tokens (flattened ``[..., V]``),
  ``BLOCK_M * BLOCK_D`` ~ 4096 elements;
- backward: a persistent grid of at most 2 programs per SM, each owning a contiguous
  run of frames; its tile is ``BLOCK_F`` whole frames of ``V_PAD`` joint rows (2 frames at
  V = 25, d = 128), so row r of every frame is joint r. The accumulators are folded every
  iteration (dPE ``[V_PAD, d]`` by summing the tile's frames, dgamma and db ``[d]``, dW
  ``[C, d]``), so the registers go to the frames in flight rather than to accumulators
  that grow with the tile (docs/kernels/joint_embedding.md has the latency model).

Registered as ``torch.ops.hitrs_fast.joint_embedding_fwd`` / ``joint_embedding_bwd``
through ``torch.library.triton_op`` so ``torch.compile`` traces through the op.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from triton.runtime.jit import JITFunction

from hitrs_fast.kernels import capabilities

# Elements per forward register tile.
_TILE_ELEMENTS = 4096
# Elements per backward tile (BLOCK_F whole frames): 2 frames of 32 x 128 at the model's V = 25, d = 128.
# Compiled for sm_90 the backward holds ~250 registers per thread at 8 warps whatever the tile (one program
# per SM), so the frames per iteration set the bytes in flight: 2 frames spill 64 B (168 B with fp32 out), 4 frames
# 664 B.
_BWD_TILE_ELEMENTS = 8192
# Coordinates per token: the channel loops are unrolled (C = 3 in Hi-TRS).
MAX_CHANNELS = capabilities.JOINT_EMBEDDING_MAX_CHANNELS


def _fwd_config(block_d: int) -> tuple[int, int]:
    """(BLOCK_M, num_warps) for the forward tile ``[BLOCK_M, BLOCK_D]``."""
    block_m = max(1, min(128, _TILE_ELEMENTS // block_d))
    return block_m, 4 if block_m * block_d <= _TILE_ELEMENTS else 8


def _bwd_config(v_pad: int, block_d: int) -> tuple[int, int]:
    """(BLOCK_F, num_warps) for the backward tile ``[BLOCK_F * V_PAD, BLOCK_D]``."""
    block_f = max(1, _BWD_TILE_ELEMENTS // (v_pad * block_d))
    return block_f, 8 if block_f * v_pad * block_d >= _TILE_ELEMENTS else 4


@functools.cache
def _max_programs(device: torch.device) -> int:
    """Persistent backward grid size: 2 per SM on CUDA; a few under the CPU interpreter."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


@triton.jit
def _gelu_and_grad(b_h):
    """Exact GELU ``h * Phi(h)`` and its derivative ``Phi(h) + h * phi(h)``."""
    b_cdf = 0.5 * (1.0 + tl.erf(b_h * 0.7071067811865476))
    b_pdf = tl.exp(-0.5 * b_h * b_h) * 0.3989422804014327  # 1 / sqrt(2 pi)
    return b_h * b_cdf, b_cdf + b_h * b_pdf


@triton.jit(do_not_specialize=["num_tokens"])
def joint_embedding_fwd_kernel(
    x_ptr, w_ptr, b_ptr, gamma_ptr, beta_ptr, pos_ptr, out_ptr, mean_ptr, rstd_ptr,
    num_tokens, V, D, eps,
    stride_xf, stride_xv, stride_xc, stride_wd, stride_wc, stride_pv, stride_pd,
    C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, SAVE_STATS: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    o_t = pid * BLOCK_M + tl.arange(0, BLOCK_M)  # [BM] flattened token index
    m_t = o_t < num_tokens
    o_f = o_t // V  # frame (all leading dims flattened)
    o_v = o_t % V  # joint: selects the PE row
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D

    # Padded channels get W = b = 0, hence h = GELU(h) = 0: they drop out of the LN sums.
    b_bias = tl.load(b_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_h = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
    for c in tl.static_range(C):
        b_xc = tl.load(x_ptr + o_f * stride_xf + o_v * stride_xv + c * stride_xc, mask=m_t, other=0.0)
        b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0)
        b_h += b_xc.to(tl.float32)[:, None] * b_wc.to(tl.float32)[None, :]  # [BM, BD]
    b_g, _ = _gelu_and_grad(b_h)

    b_mean = tl.sum(b_g, axis=1) / D  # [BM]
    b_cen = tl.where(m_d[None, :], b_g - b_mean[:, None], 0.0)  # [BM, BD]
    b_var = tl.sum(b_cen * b_cen, axis=1) / D
    b_rstd = 1.0 / tl.sqrt(b_var + eps)  # [BM]

    b_gamma = tl.load(gamma_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_beta = tl.load(beta_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    m_td = m_t[:, None] & m_d[None, :]
    b_pos = tl.load(pos_ptr + o_v[:, None] * stride_pv + o_d[None, :] * stride_pd, mask=m_td, other=0.0)
    b_y = b_cen * b_rstd[:, None] * b_gamma[None, :] + b_beta[None, :] + b_pos.to(tl.float32)  # [BM, BD]
    tl.store(out_ptr + o_t[:, None] * D + o_d[None, :], b_y.to(out_ptr.dtype.element_ty), mask=m_td)
    if SAVE_STATS:
        tl.store(mean_ptr + o_t, b_mean, mask=m_t)
        tl.store(rstd_ptr + o_t, b_rstd, mask=m_t)


@triton.jit(do_not_specialize=["num_frames"])
def joint_embedding_bwd_kernel(
    x_ptr, w_ptr, b_ptr, gamma_ptr, mean_ptr, rstd_ptr, dy_ptr, dx_ptr,
    dw_part_ptr, db_part_ptr, dgamma_part_ptr, dpos_part_ptr,
    num_frames, frames_per_program, V, D,
    stride_xf, stride_xv, stride_xc, stride_wd, stride_wc,
    C: tl.constexpr, C_PAD: tl.constexpr, V_PAD: tl.constexpr, BLOCK_F: tl.constexpr, BLOCK_D: tl.constexpr,
):
    ROWS: tl.constexpr = BLOCK_F * V_PAD
    pid = tl.program_id(0).to(tl.int64)
    o_r = tl.arange(0, ROWS)
    o_fl = o_r // V_PAD  # frame within the tile
    o_v = o_r % V_PAD  # joint: fixed per row, so dPE accumulates row-wise
    m_v = o_v < V
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_c = tl.arange(0, C_PAD)

    b_bias = tl.load(b_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    b_gamma = tl.load(gamma_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)  # [BD]
    # Accumulators folded every iteration, so their size does not grow with the BLOCK_F frames of the tile
    # (the registers go to the tile itself): dPE per joint, dgamma and db per channel, dW per (c, channel).
    acc_dpos = tl.zeros([V_PAD, BLOCK_D], dtype=tl.float32)  # sum of dy, per joint
    acc_dgamma = tl.zeros([BLOCK_D], dtype=tl.float32)  # sum of dy * n
    acc_db = tl.zeros([BLOCK_D], dtype=tl.float32)  # sum of dh
    acc_dw = tl.zeros([C_PAD, BLOCK_D], dtype=tl.float32)  # sum of x_c * dh, row c

    f_start = pid * frames_per_program
    f_end = tl.minimum(f_start + frames_per_program, num_frames)
    for f0 in range(f_start, f_end, BLOCK_F):
        o_f = f0 + o_fl  # [R]
        m_r = m_v & (o_f < f_end)
        m_rd = m_r[:, None] & m_d[None, :]
        o_t = o_f * V + o_v  # [R] token index into the contiguous dy / dx / stats
        o_x = o_f * stride_xf + o_v * stride_xv

        b_h = tl.zeros([ROWS, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
        for c in tl.static_range(C):
            b_xc = tl.load(x_ptr + o_x + c * stride_xc, mask=m_r, other=0.0).to(tl.float32)
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_h += b_xc[:, None] * b_wc[None, :]  # [R, BD]
        b_g, b_dgelu = _gelu_and_grad(b_h)
        b_mean = tl.load(mean_ptr + o_t, mask=m_r, other=0.0)  # [R]
        b_rstd = tl.load(rstd_ptr + o_t, mask=m_r, other=0.0)
        b_n = tl.where(m_rd, (b_g - b_mean[:, None]) * b_rstd[:, None], 0.0)  # [R, BD]

        b_dy = tl.load(dy_ptr + o_t[:, None] * D + o_d[None, :], mask=m_rd, other=0.0).to(tl.float32)
        # Row r of every frame of the tile is the same joint: fold the frames into [V_PAD, BD].
        acc_dpos += tl.sum(tl.reshape(b_dy, (BLOCK_F, V_PAD, BLOCK_D)), axis=0)
        acc_dgamma += tl.sum(b_dy * b_n, axis=0)
        # LayerNorm backward: dg = rstd * (dn - mean(dn) - n * mean(dn * n)), means over the d real channels.
        b_dn = b_dy * b_gamma[None, :]
        b_c1 = tl.sum(b_dn * b_n, axis=1) / D  # [R]
        b_c2 = tl.sum(b_dn, axis=1) / D
        # Padded channels would get -c2 * rstd here: mask them before they reach dx and dW.
        b_dh = tl.where(m_rd, (b_dn - b_n * b_c1[:, None] - b_c2[:, None]) * b_rstd[:, None] * b_dgelu, 0.0)
        acc_db += tl.sum(b_dh, axis=0)

        for c in tl.static_range(C):
            b_wc = tl.load(w_ptr + o_d * stride_wd + c * stride_wc, mask=m_d, other=0.0).to(tl.float32)
            b_dxc = tl.sum(b_dh * b_wc[None, :], axis=1)  # [R]
            tl.store(dx_ptr + o_t * C + c, b_dxc.to(dx_ptr.dtype.element_ty), mask=m_r)
            b_xc = tl.load(x_ptr + o_x + c * stride_xc, mask=m_r, other=0.0).to(tl.float32)
            b_dwc = tl.sum(b_dh * b_xc[:, None], axis=0)  # [BD]
            acc_dw += tl.where(o_c[:, None] == c, b_dwc[None, :], 0.0)  # [C_PAD, BD]

    o_vp = tl.arange(0, V_PAD)
    m_vd = (o_vp < V)[:, None] & m_d[None, :]
    tl.store(dpos_part_ptr + pid * V * D + o_vp[:, None] * D + o_d[None, :], acc_dpos, mask=m_vd)
    tl.store(dgamma_part_ptr + pid * D + o_d, acc_dgamma, mask=m_d)
    tl.store(db_part_ptr + pid * D + o_d, acc_db, mask=m_d)
    m_cd = (o_c < C)[:, None] & m_d[None, :]
    tl.store(dw_part_ptr + pid * C * D + o_c[:, None] * D + o_d[None, :], acc_dw, mask=m_cd)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(f"kernels/joint_embedding.py: {message}")


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
    wrap_triton(joint_embedding_fwd_kernel)[grid](
        xf, weight, bias, ln_weight, ln_bias, pos, out, mean, rstd,
        num_tokens, v, d, eps,
        xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1), pos.stride(0), pos.stride(1),
        C=c, BLOCK_M=block_m, BLOCK_D=block_d, SAVE_STATS=save_stats, num_warps=num_warps,
    )
    return out, mean, rstd


def joint_embedding_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        ln_weight: torch.Tensor, pos: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launches the backward kernel and reduces its per-program partials on the host.

    Args:
        dy ``[..., V, d]``: upstream gradient. x, weight, bias, ln_weight, pos: as in the
        forward (pos only supplies the dPE dtype). mean, rstd ``[tokens]``: from the forward.

    Returns:
        ``(dx [..., V, C], dW [d, C], db [d], dgamma [d], dbeta [d], dPE [V, d])``, dx in
        x's dtype and the rest in their parameter's dtype.
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

    block_d = triton.next_power_of_2(max(d, 1))
    v_pad = triton.next_power_of_2(v)
    block_f, num_warps = _bwd_config(v_pad, block_d)
    frame_blocks = max(1, triton.cdiv(num_frames, block_f))
    programs = min(frame_blocks, _max_programs(x.device))
    # Whole tiles per program, so only the last program sees a ragged tile.
    frames_per_program = triton.cdiv(frame_blocks, programs) * block_f
    programs = max(1, triton.cdiv(num_frames, frames_per_program))

    f32 = dict(device=x.device, dtype=torch.float32)
    dw_part = torch.empty((programs, c, d), **f32)
    db_part = torch.empty((programs, d), **f32)
    dgamma_part = torch.empty((programs, d), **f32)
    dpos_part = torch.empty((programs, v, d), **f32)
    if num_frames == 0 or d == 0:
        for t in (dx, dw_part, db_part, dgamma_part, dpos_part):
            t.zero_()
    else:
        wrap_triton(joint_embedding_bwd_kernel)[(programs,)](
            xf, weight, bias.contiguous(), ln_weight.contiguous(), mean, rstd, dy, dx,
            dw_part, db_part, dgamma_part, dpos_part,
            num_frames, frames_per_program, v, d,
            xf.stride(0), xf.stride(1), xf.stride(2), weight.stride(0), weight.stride(1),
            C=c, C_PAD=triton.next_power_of_2(c), V_PAD=v_pad, BLOCK_F=block_f, BLOCK_D=block_d,
            num_warps=num_warps,
        )
    # torch.sum over a fixed-size axis has a fixed order: deterministic, unlike atomics.
    dpos = dpos_part.sum(0)  # [V, d]
    dbeta = dpos.sum(0)  # dbeta = sum over joints of dPE
    return (dx, dw_part.sum(0).t().to(weight.dtype).contiguous(), db_part.sum(0).to(bias.dtype),
            dgamma_part.sum(0).to(ln_weight.dtype), dbeta.to(ln_weight.dtype), dpos.to(pos.dtype))


def _register_op(name: str):
    """``triton_op`` on CUDA builds; a plain opaque ``custom_op`` under TRITON_INTERPRET=1.

    triton_op lets torch.compile see the kernel by re-running the body under
    FunctionalTensorMode through ``wrap_triton``; an interpreter kernel (not a
    ``JITFunction``) cannot be wrapped and would touch fake data, so there the op stays
    opaque and compiles as a single call.
    """
    if isinstance(joint_embedding_fwd_kernel, JITFunction):
        return triton_op(name, mutates_args=())
    return torch.library.custom_op(name, mutates_args=())


@_register_op("hitrs_fast::joint_embedding_fwd")
def _joint_embedding_fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                            ln_bias: torch.Tensor, pos: torch.Tensor, eps: float, out_dtype: torch.dtype,
                            save_stats: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return joint_embedding_fwd(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats)


@_register_op("hitrs_fast::joint_embedding_bwd")
def _joint_embedding_bwd_op(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                            ln_weight: torch.Tensor, pos: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                       torch.Tensor]:
    return joint_embedding_bwd(dy, x, weight, bias, ln_weight, pos, mean, rstd)


# Fake (meta) implementations: shapes and dtypes only. The interpreter's opaque custom_op
# needs them; with triton_op they also spare tracing the launcher under FakeTensorMode.
@_joint_embedding_fwd_op.register_fake
def _(x, weight, bias, ln_weight, ln_bias, pos, eps, out_dtype, save_stats):
    n_stats = x.numel() // x.shape[-1] if save_stats else 0
    return (x.new_empty((*x.shape[:-1], weight.shape[0]), dtype=out_dtype),
            x.new_empty(n_stats, dtype=torch.float32), x.new_empty(n_stats, dtype=torch.float32))


@_joint_embedding_bwd_op.register_fake
def _(dy, x, weight, bias, ln_weight, pos, mean, rstd):
    return (torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias), torch.empty_like(ln_weight),
            torch.empty_like(ln_weight), torch.empty_like(pos))


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
        grads = torch.ops.hitrs_fast.joint_embedding_bwd(dy, x, weight, bias, ln_weight, pos, mean, rstd)
        return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:6], strict=True)),
                None, None, None)
