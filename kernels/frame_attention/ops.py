"""Host side of frame-masked attention: launchers (shape checks, allocation, grid), the ``torch.library``
registration that lets ``torch.compile`` trace through, the ``autograd.Function`` wrappers and the
functional entry points. What the kernels compute and why: :mod:`hitrs_fast.kernels.frame_attention`."""

from __future__ import annotations

import math

import torch
import triton

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.common.jit import LOG2E, input_precision
from hitrs_fast.kernels.common.launch import launch_autotuned, launchable
from hitrs_fast.kernels.common.masks import CLS_CODES
from hitrs_fast.kernels.common.registration import register
from hitrs_fast.kernels.common.tuning import interpreting
from hitrs_fast.kernels.frame_attention.kernels import (
    frame_attention_bwd_dkdv_kernel,
    frame_attention_bwd_dq_kernel,
    frame_attention_bwd_preprocess_kernel,
    frame_attention_fwd_kernel,
    frame_attention_resident_bwd_kernel,
    frame_attention_resident_fwd_kernel,
)
from hitrs_fast.kernels.frame_attention.tuning import (
    autotuned_dkdv,
    autotuned_dq,
    autotuned_fwd,
    autotuned_resident_bwd,
    autotuned_resident_fwd,
)

MASK_NONE, MASK_FRAME = capabilities.MASK_NONE, capabilities.MASK_FRAME
# The limits the dispatcher reads (declared once, in a module that imports no triton).
SUPPORTED_DTYPES = capabilities.FRAME_ATTENTION_DTYPES
SUPPORTED_HEAD_DIMS = capabilities.FRAME_ATTENTION_HEAD_DIMS
MAX_TOKENS = capabilities.FRAME_ATTENTION_MAX_TOKENS
IS_DETERMINISTIC = capabilities.FRAME_ATTENTION_DETERMINISTIC
MIN_BLOCK = capabilities.FRAME_ATTENTION_MIN_BLOCK
MAX_GRID = capabilities.MAX_GRID
not_supported_reasons = capabilities.frame_attention_reasons



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




def bh_bucket(num_heads_total: int) -> int:
    """The autotune key's batch bucket: ``k`` for ``B * H`` in ``[2^(k-1), 2^k)``."""
    return int(num_heads_total).bit_length()


def _grid(bh: int, n: int, block: str):
    """One grid axis of ``B * H * cdiv(N, meta[block])`` programs (decoded by ``_head_and_tile``)."""
    return lambda meta: (bh * triton.cdiv(n, meta[block]),)


def common_meta(q: torch.Tensor, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                 has_lengths: bool, cls_last_key: bool) -> dict:
    return {"HEAD_DIM": q.shape[-1], "N_POW2": max(16, triton.next_power_of_2(q.shape[2])), "MASK_KIND": mask_kind,
            "FRAME_SIZE": frame_size, "CLS_POS": cls_pos, "ALLOW_SELF": allow_self, "HAS_LENGTHS": has_lengths,
            "CLS_LAST_KEY": cls_last_key, "INPUT_PRECISION": input_precision(q.dtype),
            "INTERP_BF16": q.dtype == torch.bfloat16 and interpreting()}


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
    meta = common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    # Without lengths, q stands in as a pointer that is never read (never an output: torch.compile
    # must not see a written buffer aliased by a read-only argument).
    lens = lengths if lengths is not None else q
    args = (q, k, v, o, lse, lens, *q.stride(), *k.stride(), *v.stride(), *o.stride(), h, n, scale * LOG2E,
            bh_bucket(b * h))
    if variant == "resident":
        kernel, grid, autotuned = frame_attention_resident_fwd_kernel, (b * h,), autotuned_resident_fwd
    else:
        kernel, grid, autotuned = frame_attention_fwd_kernel, _grid(b * h, n, "BLOCK_M"), autotuned_fwd
    if config is not None:
        cfg, num_warps = _explicit(config)
        kernel[grid](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        launch_autotuned(autotuned(), grid, args, meta, (q,))
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
    meta = common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key)
    lens = lengths if lengths is not None else q
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride())
    tail = (h, n, scale, scale * LOG2E, bh_bucket(b * h))
    if variant == "resident":
        args = (q, k, v, do, lse, dq, dk, dv, lens, *strides, *tail)
        if config is not None:
            cfg, num_warps = _explicit(config)
            frame_attention_resident_bwd_kernel[(b * h,)](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
        else:
            launch_autotuned(autotuned_resident_bwd(), (b * h,), args, meta, (q,))
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
        launch_autotuned(autotuned_dkdv(), _grid(b * h, n, "BLOCK_N"), dkdv_args, meta, (q,))
        launch_autotuned(autotuned_dq(), _grid(b * h, n, "BLOCK_M"), dq_args, meta, (q,))
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


register("hitrs_fast::frame_attention_fwd", _frame_attention_fwd_op, _fwd_fake)
register("hitrs_fast::frame_attention_bwd", _frame_attention_bwd_op, _bwd_fake)


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


register("hitrs_fast::frame_attention_qkv_fwd", _frame_attention_qkv_fwd_op, _qkv_fwd_fake)
register("hitrs_fast::frame_attention_qkv_bwd", _frame_attention_qkv_bwd_op, _qkv_bwd_fake)


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

