"""Host side of frame-masked attention: launchers (shape checks, allocation, grid), the ``torch.library``
registration that lets ``torch.compile`` trace through, the ``autograd.Function`` wrappers and the
functional entry points. What the kernels compute and why: :mod:`hitrs_fast.kernels.frame_attention`."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton

from hitrs_fast.kernels import capabilities
from hitrs_fast.kernels.common.jit import LOG2E, input_precision
from hitrs_fast.kernels.common.launch import launch_autotuned, launchable
from hitrs_fast.kernels.common.masks import CLS_CODES
from hitrs_fast.kernels.common.registration import register
from hitrs_fast.kernels.common.tuning import interpreting
from hitrs_fast.kernels.frame_attention.kernels import (
    attention_dropout_mask_kernel,
    frame_attention_bwd_dbias_kernel,
    frame_attention_bwd_dkdv_kernel,
    frame_attention_bwd_dq_kernel,
    frame_attention_bwd_preprocess_kernel,
    frame_attention_fwd_kernel,
    frame_attention_resident_bwd_kernel,
    frame_attention_resident_fwd_kernel,
)
from hitrs_fast.kernels.frame_attention.tuning import (
    autotuned_dbias,
    autotuned_dkdv,
    autotuned_dq,
    autotuned_fwd,
    autotuned_resident_bwd,
    autotuned_resident_fwd,
)

MASK_NONE, MASK_FRAME, MASK_WINDOW = capabilities.MASK_NONE, capabilities.MASK_FRAME, capabilities.MASK_WINDOW
FRAMES_FRAME_MAJOR = capabilities.FRAMES_FRAME_MAJOR
FRAMES_JOINT_MAJOR = capabilities.FRAMES_JOINT_MAJOR
FRAMES_FROM_IDS = capabilities.FRAMES_FROM_IDS
# The limits the dispatcher reads (declared once, in a module that imports no triton).
SUPPORTED_DTYPES = capabilities.FRAME_ATTENTION_DTYPES
SUPPORTED_HEAD_DIMS = capabilities.FRAME_ATTENTION_HEAD_DIMS
MAX_TOKENS = capabilities.FRAME_ATTENTION_MAX_TOKENS
IS_DETERMINISTIC = capabilities.FRAME_ATTENTION_DETERMINISTIC
MIN_BLOCK = capabilities.FRAME_ATTENTION_MIN_BLOCK
MAX_GRID = capabilities.MAX_GRID
not_supported_reasons = capabilities.frame_attention_reasons

DBIAS_TARGET_PROGRAMS = 1024
"""The dBias kernel splits a bias shared by the batch into groups of sequences (one fp32 partial each, summed
after) until about this many programs run; the groups depend on the shapes only, so the sum is reproducible."""


class Features(NamedTuple):
    """The split kernels' optional features, all off by default (the kernels then compile the code they had
    without them). Tensors are as the kernels read them (:func:`prepare_features` makes them).

    bias: ``[B|1, H|1, N|1, N|1]``, float32 / float16 / bfloat16, added to the scores.
    q_ids, k_ids: int32 ``[B|1, N]`` token frame ids (``frame_source == FRAMES_FROM_IDS``), -1 = global token.
    frame_source: ``FRAMES_FRAME_MAJOR``, ``FRAMES_JOINT_MAJOR`` or ``FRAMES_FROM_IDS``.
    num_frames: frames of joint-major tokens (``FRAMES_JOINT_MAJOR`` only, else 0).
    window: radius of the window rule (``MASK_WINDOW`` only, else 0).
    seed: int64 ``[1]`` on the inputs' device, the dropout seed; dropout_p: attention dropout (0: none).
    """

    bias: torch.Tensor | None = None
    q_ids: torch.Tensor | None = None
    k_ids: torch.Tensor | None = None
    frame_source: int = FRAMES_FRAME_MAJOR
    num_frames: int = 0
    window: int = 0
    seed: torch.Tensor | None = None
    dropout_p: float = 0.0

    @property
    def plain(self) -> bool:
        """No feature in use: the resident kernels can run."""
        return (self.bias is None and self.frame_source == FRAMES_FRAME_MAJOR and self.window == 0
                and self.dropout_p == 0.0)


PLAIN = Features()


def features_of(bias: torch.Tensor | None, q_ids: torch.Tensor | None, k_ids: torch.Tensor | None, frame_source: int,
                num_frames: int, window: int, seed: torch.Tensor | None, dropout_p: float) -> Features:
    """The :class:`Features` of an op's flat arguments; :data:`PLAIN` itself when none is used (no checks then)."""
    if bias is None and q_ids is None and k_ids is None and frame_source == FRAMES_FRAME_MAJOR and not num_frames \
            and not window and seed is None and not dropout_p:
        return PLAIN
    return Features(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)


def _check_inputs(where: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                  features: Features = PLAIN) -> None:
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
    if features is not PLAIN:
        _check_features(where, q, features)


def _check_features(where: str, q: torch.Tensor, f: Features) -> None:
    b, h, n, _ = q.shape
    if f.bias is not None:
        bias = f.bias
        if bias.dim() != 4 or any(s not in (1, full) for s, full in zip(bias.shape, (b, h, n, n), strict=True)):
            raise ValueError(f"{where}: bias must be [B|1, H|1, N|1, N|1] for [{b}, {h}, {n}, {n}], got "
                             f"{tuple(bias.shape)}")
        reasons = capabilities.frame_attention_bias_reasons(bias, b, h, n)
        if reasons or bias.device != q.device:
            raise ValueError(f"{where}: " + "; ".join(reasons or [f"bias on {bias.device}, q on {q.device}"]))
    if (f.frame_source == FRAMES_FROM_IDS) != (f.q_ids is not None and f.k_ids is not None):
        raise ValueError(f"{where}: q_ids and k_ids go with frame_source FRAMES_FROM_IDS, and only with it")
    for name, ids in (("q_ids", f.q_ids), ("k_ids", f.k_ids)):
        if ids is not None and (ids.dtype != torch.int32 or ids.dim() != 2 or ids.shape[0] not in (1, b)
                                or ids.shape[1] != n or ids.stride(1) != 1 or ids.device != q.device):
            raise ValueError(f"{where}: {name} must be int32 [B|1, N] = [{b}|1, {n}] with unit stride on {q.device}, "
                             f"got {ids.dtype} {tuple(ids.shape)} on {ids.device}")
    if (f.frame_source == FRAMES_JOINT_MAJOR) != (f.num_frames > 0):
        raise ValueError(f"{where}: num_frames (> 0) goes with frame_source FRAMES_JOINT_MAJOR, and only with it")
    if f.window < 0:
        raise ValueError(f"{where}: window must be >= 0, got {f.window}")
    if not 0.0 <= f.dropout_p < 1.0 or ((f.dropout_p > 0.0) != (f.seed is not None)):
        raise ValueError(f"{where}: dropout_p must be in [0, 1) and comes with a seed, got {f.dropout_p}")
    if f.seed is not None and (f.seed.dtype != torch.int64 or f.seed.numel() != 1 or f.seed.device != q.device):
        raise ValueError(f"{where}: seed must be one int64 on {q.device}")


def prepare_features(q: torch.Tensor, *, bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                     k_ids: torch.Tensor | None = None, order: str = "frame_major", num_frames: int = 0,
                     window: int = 0, dropout_p: float = 0.0, seed: torch.Tensor | None = None) -> Features:
    """The :class:`Features` of user-facing arguments: bias broadcastable to ``[B, H, N, N]`` viewed as 4-D; ids
    ``[N]`` or ``[B, N]`` (any integer type) as int32 ``[B|1, N]``; ``order`` ``"frame_major"`` or
    ``"joint_major"`` (with ``num_frames``); with ``dropout_p > 0`` a seed drawn from PyTorch's generator on q's
    device unless given (so ``torch.manual_seed`` repeats the mask)."""
    if bias is not None and bias.dim() < 4:
        bias = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))
    if q_ids is not None:
        k_ids = q_ids if k_ids is None else k_ids
        q_ids, k_ids = (t.to(device=q.device, dtype=torch.int32).reshape(-1, t.shape[-1]).contiguous()
                        for t in (q_ids, k_ids))
        source = FRAMES_FROM_IDS
    elif order == "joint_major":
        source = FRAMES_JOINT_MAJOR
    elif order == "frame_major":
        source, num_frames = FRAMES_FRAME_MAJOR, 0
    else:
        raise ValueError(f"frame_attention: order must be 'frame_major' or 'joint_major', got {order!r}")
    if dropout_p > 0.0 and seed is None:
        seed = torch.randint(0, 2**31 - 1, (1,), device=q.device, dtype=torch.int64)
    return features_of(bias, q_ids, k_ids, source, int(num_frames) if source == FRAMES_JOINT_MAJOR else 0,
                       int(window), seed if dropout_p > 0.0 else None, float(dropout_p))


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


def feature_meta(features: Features) -> dict:
    """The split kernels' feature constexprs (:class:`Features`)."""
    return {"HAS_BIAS": features.bias is not None, "FRAME_SOURCE": features.frame_source,
            "NUM_FRAMES": features.num_frames, "WINDOW": features.window, "DROPOUT": features.dropout_p > 0.0}


def feature_args(q: torch.Tensor, features: Features) -> tuple:
    """The split kernels' feature arguments: bias and its ``[B, H, N, N]`` broadcast strides, the two ids tensors
    and their batch strides, the seed and the dropout rate. q stands in for each absent tensor (never read)."""
    b, h, n, _ = q.shape
    bias = features.bias
    z_strides = bias.expand(b, h, n, n).stride() if bias is not None else (0, 0, 0, 0)

    def batch_stride(ids):
        return ids.stride(0) if ids is not None and ids.shape[0] > 1 else 0

    q_ids, k_ids = features.q_ids, features.k_ids
    return (bias if bias is not None else q, *z_strides, q_ids if q_ids is not None else q,
            k_ids if k_ids is not None else q, batch_stride(q_ids), batch_stride(k_ids),
            features.seed if features.seed is not None else q, features.dropout_p)


def _bnhd_like(q: torch.Tensor) -> torch.Tensor:
    """Fresh ``[B, N, H, D]`` buffer returned as its ``[B, H, N, D]`` view (free reshape to [B, N, H*D])."""
    b, h, n, d = q.shape
    return torch.empty((b, n, h, d), dtype=q.dtype, device=q.device).transpose(1, 2)


def _variant(q: torch.Tensor, variant: str | None, direction: str, plain: bool = True) -> str:
    """The kernel that runs ``direction``: ``variant`` if given (checked), else the environment's choice
    (:func:`hitrs_fast.kernels.capabilities.frame_attention_kernel`); always ``split`` with a feature (the
    resident kernels take none)."""
    n, d = q.shape[2], q.shape[3]
    if variant is None:
        return capabilities.frame_attention_kernel(n, d, q.dtype, direction) if plain else "split"
    if variant not in capabilities.FRAME_ATTENTION_KERNELS:
        raise ValueError(f"frame_attention: variant must be one of {capabilities.FRAME_ATTENTION_KERNELS}, "
                         f"got {variant!r}")
    if variant == "resident" and not capabilities.resident_fits(n, d, q.dtype):
        raise ValueError(f"frame_attention: the resident kernel does not fit N = {n}, D = {d}, {q.dtype} "
                         f"(at most {capabilities.RESIDENT_MAX_KEYS} padded keys and "
                         f"{capabilities.RESIDENT_MAX_BYTES} bytes of K, V, dK, dV)")
    if variant == "resident" and not plain:
        raise ValueError("frame_attention: the resident kernel takes no bias, ids, joint-major frames, window or "
                         "dropout (the split kernel does)")
    return variant


def _explicit(config: dict) -> tuple[dict, int]:
    cfg = dict(config)
    return cfg, cfg.pop("num_warps", 4)


def frame_attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                        scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                        cls_last_key: bool, config: dict | None = None, variant: str | None = None,
                        features: Features = PLAIN) -> tuple[torch.Tensor, torch.Tensor]:
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
        features: bias, ids, joint-major frames, window, dropout (:class:`Features`; split kernels only).

    Returns:
        ``o`` ``[B, H, N, D]`` (a view of a ``[B, N, H, D]`` buffer), ``lse`` fp32 ``[B, H, N]`` (of the scores
        before dropout).
    """
    _check_inputs("frame_attention_fwd", q, k, v, lengths, features)
    variant = _variant(q, variant, "fwd", features.plain)
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
        args, meta = (*args, *feature_args(q, features)), {**meta, **feature_meta(features)}
    if config is not None:
        cfg, num_warps = _explicit(config)
        kernel[grid](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        launch_autotuned(autotuned(), grid, args, meta, (q,))
    return o, lse


def _delta(o: torch.Tensor, do: torch.Tensor) -> torch.Tensor:
    """``rowsum(dO * O)`` fp32 ``[B, H, N]``, the softmax-backward row term (the preprocess kernel)."""
    b, h, n, d = o.shape
    delta = torch.empty((b, h, n), dtype=torch.float32, device=o.device)
    block_pre = 64
    launchable(frame_attention_bwd_preprocess_kernel, o)[(b * h * triton.cdiv(n, block_pre),)](
        o, do, delta, *o.stride(), *do.stride(), h, n, HEAD_DIM=d, BLOCK_M=block_pre)
    return delta


def frame_attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                        lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                        frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                        config: dict | None = None, variant: str | None = None,
                        grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                        features: Features = PLAIN) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward launcher.

    resident: one kernel per (sequence, head) (O is not read). split: preprocess (delta = rowsum(dO * O)),
    then the dK/dV kernel, then the dQ kernel.

    Args:
        do, o: ``[B, H, N, D]`` upstream gradient and forward output (any strides).
        q, k, v, lse, lengths, scale, mask fields, features: as given to / returned by :func:`frame_attention_fwd`.
        config, variant: as in :func:`frame_attention_fwd` (split configs: ``{"BLOCK_M", "BLOCK_N",
            "num_warps"}``).
        grads: ``(dq, dk, dv)`` ``[B, H, N, D]`` buffers to write, all three with the same strides (e.g. views
            of one ``[B, N, 3, H, D]`` tensor); None allocates three ``[B, N, H, D]`` buffers.

    Returns:
        ``dq, dk, dv`` ``[B, H, N, D]`` (the bias gradient: :func:`frame_attention_dbias`).
    """
    _check_inputs("frame_attention_bwd", q, k, v, lengths, features)
    if do.shape != q.shape or o.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(f"frame_attention_bwd: do {tuple(do.shape)} / o {tuple(o.shape)} must be {tuple(q.shape)} "
                         f"and lse {tuple(lse.shape)} must be {tuple(q.shape[:3])}")
    if not lse.is_contiguous() or lse.dtype != torch.float32:
        raise ValueError("frame_attention_bwd: lse must be a contiguous float32 [B, H, N] tensor")
    if grads is not None and not (all(g.shape == q.shape and g.dtype == q.dtype for g in grads)
                                  and grads[0].stride() == grads[1].stride() == grads[2].stride()):
        raise ValueError(f"frame_attention_bwd: grads must be three {tuple(q.shape)} {q.dtype} tensors with one "
                         "set of strides")
    variant = _variant(q, variant, "bwd", features.plain)
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
    delta = _delta(o, do)
    extra = feature_args(q, features)
    meta = {**meta, **feature_meta(features)}
    dkdv_args = (q, k, v, do, lse, delta, dk, dv, lens, *strides, *tail, *extra)
    dq_args = (q, k, v, do, lse, delta, dq, lens, *strides, *tail, *extra)
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


def dbias_groups(batch: int, bias_batch: int, bias_heads: int, n: int) -> tuple[int, int]:
    """``(groups, sequences per group)`` of the dBias kernel: a per-sample bias has one group per sequence; a bias
    shared by the batch is split into groups until about :data:`DBIAS_TARGET_PROGRAMS` programs run (64 x 64
    tiles assumed), each group's partial summed after. Shapes only: the same inputs always sum the same way."""
    if bias_batch == batch:
        return batch, 1
    tiles = triton.cdiv(n, 64) ** 2
    groups = min(batch, max(1, triton.cdiv(DBIAS_TARGET_PROGRAMS, bias_heads * tiles)))
    per_group = triton.cdiv(batch, groups)
    return triton.cdiv(batch, per_group), per_group


def frame_attention_dbias(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                          lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                          frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                          features: Features, config: dict | None = None) -> torch.Tensor:
    """Gradient of the additive bias: ``dS = P * (dP - delta)`` summed over the dimensions the bias broadcasts.

    Args: as :func:`frame_attention_bwd` (``features.bias`` required). Returns a tensor of the bias's 4-D shape
    and dtype. The per-(sequence, head) terms are accumulated in a fixed order by one program each and the group
    partials summed by ``torch.sum``: no atomics, deterministic.
    """
    if features.bias is None:
        raise ValueError("frame_attention_dbias: features.bias is None")
    _check_inputs("frame_attention_dbias", q, k, v, lengths, features)
    b, h, n, _ = q.shape
    bias = features.bias
    per_head = bias.shape[1] == h
    heads_z = h if per_head else 1
    groups, per_group = dbias_groups(b, bias.shape[0], heads_z, n)
    do = do.to(q.dtype)
    delta = _delta(o, do)
    partial = torch.empty((groups, heads_z, n, n), dtype=torch.float32, device=q.device)
    meta = {**common_meta(q, mask_kind, frame_size, cls_pos, allow_self, lengths is not None, cls_last_key),
            **feature_meta(features), "BIAS_PER_HEAD": per_head}
    lens = lengths if lengths is not None else q
    args = (q, k, v, do, lse, delta, partial, lens, *q.stride(), *k.stride(), *v.stride(), *do.stride(), h, n,
            scale * LOG2E, bh_bucket(b * h), *feature_args(q, features), b, per_group)

    def grid(meta):
        return (groups * heads_z * triton.cdiv(n, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    if config is not None:
        cfg, num_warps = _explicit(config)
        cfg.pop("WHOLE_ROW", None)
        frame_attention_bwd_dbias_kernel[grid](*args, **meta, **cfg, num_warps=num_warps, num_stages=1)
    else:
        launch_autotuned(autotuned_dbias(), grid, args, meta, (q,))
    dbias = partial if groups == bias.shape[0] else partial.sum(0, keepdim=True)
    reduce = [dim for dim in (2, 3) if bias.shape[dim] == 1]
    if reduce:
        dbias = dbias.sum(reduce, keepdim=True)
    return dbias.to(bias.dtype)


def attention_dropout_mask(seed: torch.Tensor, batch: int, heads: int, n: int, dropout_p: float) -> torch.Tensor:
    """The keep mask the kernels draw for ``seed`` (int64 ``[1]``): bool ``[B, H, N, N]`` (True = kept). What the
    kernels drop, written out, e.g. to check them against a reference that applies this mask."""
    out = torch.empty((batch * heads, n, n), dtype=torch.int8, device=seed.device)
    block = 32
    launchable(attention_dropout_mask_kernel, seed)[(batch * heads * triton.cdiv(n, block),)](
        seed, out, n, float(dropout_p), BLOCK=block)
    return out.view(batch, heads, n, n).bool()


def _frame_attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor | None,
                            scale: float, mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                            cls_last_key: bool, bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                            k_ids: torch.Tensor | None = None, frame_source: int = 0, num_frames: int = 0,
                            window: int = 0, seed: torch.Tensor | None = None,
                            dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    features = features_of(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)
    return frame_attention_fwd(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key,
                               features=features)


def _frame_attention_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                            lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                            frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                            bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                            k_ids: torch.Tensor | None = None, frame_source: int = 0, num_frames: int = 0,
                            window: int = 0, seed: torch.Tensor | None = None,
                            dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    features = features_of(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)
    return frame_attention_bwd(do, q, k, v, o, lse, lengths, scale, mask_kind, frame_size, cls_pos, allow_self,
                               cls_last_key, features=features)


def _frame_attention_dbias_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                              lse: torch.Tensor, lengths: torch.Tensor | None, scale: float, mask_kind: int,
                              frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                              bias: torch.Tensor, q_ids: torch.Tensor | None, k_ids: torch.Tensor | None,
                              frame_source: int, num_frames: int, window: int, seed: torch.Tensor | None,
                              dropout_p: float) -> torch.Tensor:
    features = features_of(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)
    return frame_attention_dbias(do, q, k, v, o, lse, lengths, scale, mask_kind, frame_size, cls_pos, allow_self,
                                 cls_last_key, features)


def _fwd_fake(q, k, v, *args, **kwargs):
    return _bnhd_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


def _bwd_fake(do, q, *args, **kwargs):
    return _bnhd_like(q), _bnhd_like(q), _bnhd_like(q)


def _dbias_fake(do, q, k, v, o, lse, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key, bias,
                *args):
    return torch.empty_like(bias, memory_format=torch.contiguous_format)


register("hitrs_fast::frame_attention_fwd", _frame_attention_fwd_op, _fwd_fake)
register("hitrs_fast::frame_attention_bwd", _frame_attention_bwd_op, _bwd_fake)
register("hitrs_fast::frame_attention_dbias", _frame_attention_dbias_op, _dbias_fake)


def qkv_views(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[B, H, N, D]`` as views of one ``[B, N, 3 * H * D]`` projection (columns: q | k | v)."""
    b, n, width = qkv.shape
    if width % (3 * heads):
        raise ValueError(f"frame_attention_qkv: qkv width {width} is not 3 * heads ({heads}) * head_dim")
    return tuple(t.transpose(1, 2) for t in qkv.view(b, n, 3, heads, width // (3 * heads)).unbind(2))


def _frame_attention_qkv_fwd_op(qkv: torch.Tensor, lengths: torch.Tensor | None, heads: int, scale: float,
                                mask_kind: int, frame_size: int, cls_pos: int, allow_self: bool,
                                cls_last_key: bool, bias: torch.Tensor | None = None,
                                q_ids: torch.Tensor | None = None, k_ids: torch.Tensor | None = None,
                                frame_source: int = 0, num_frames: int = 0, window: int = 0,
                                seed: torch.Tensor | None = None,
                                dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    b, n, _ = qkv.shape
    features = features_of(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)
    o, lse = frame_attention_fwd(*qkv_views(qkv, heads), lengths, scale, mask_kind, frame_size, cls_pos, allow_self,
                                 cls_last_key, features=features)
    return o.transpose(1, 2).reshape(b, n, -1), lse


def _frame_attention_qkv_bwd_op(do: torch.Tensor, qkv: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
                                lengths: torch.Tensor | None, heads: int, scale: float, mask_kind: int,
                                frame_size: int, cls_pos: int, allow_self: bool, cls_last_key: bool,
                                bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                                k_ids: torch.Tensor | None = None, frame_source: int = 0, num_frames: int = 0,
                                window: int = 0, seed: torch.Tensor | None = None,
                                dropout_p: float = 0.0) -> torch.Tensor:
    b, n, width = qkv.shape
    d = width // (3 * heads)
    q, k, v = qkv_views(qkv, heads)
    # dQ, dK, dV written straight into one [B, N, 3, H, D] buffer: the projection's gradient, no cat.
    dqkv = torch.empty((b, n, 3, heads, d), dtype=qkv.dtype, device=qkv.device)
    grads = tuple(g.transpose(1, 2) for g in dqkv.unbind(2))
    as_bhnd = lambda t: t.reshape(b, n, heads, d).transpose(1, 2)
    features = features_of(bias, q_ids, k_ids, frame_source, num_frames, window, seed, dropout_p)
    frame_attention_bwd(as_bhnd(do), q, k, v, as_bhnd(o), lse, lengths, scale, mask_kind, frame_size, cls_pos,
                        allow_self, cls_last_key, grads=grads, features=features)
    return dqkv.view(b, n, width)


def _qkv_fwd_fake(qkv, lengths, heads, *args, **kwargs):
    b, n, width = qkv.shape
    return qkv.new_empty((b, n, width // 3)), qkv.new_empty((b, heads, n), dtype=torch.float32)


def _qkv_bwd_fake(do, qkv, *args, **kwargs):
    return torch.empty_like(qkv, memory_format=torch.contiguous_format)


register("hitrs_fast::frame_attention_qkv_fwd", _frame_attention_qkv_fwd_op, _qkv_fwd_fake)
register("hitrs_fast::frame_attention_qkv_bwd", _frame_attention_qkv_bwd_op, _qkv_bwd_fake)


class FrameAttentionFunction(torch.autograd.Function):
    """Autograd wrapper; saves q, k, v, o and the fp32 LSE (no ``[N, N]`` tensor), and the features' tensors.

    ``apply(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key, *features)
    -> (o [B, H, N, D], lse [B, H, N])`` with ``features`` the fields of :class:`Features`; the LSE output is not
    differentiable; the bias (``features[0]``) gets its gradient from the dBias kernel when it requires one.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v, lengths, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key, *features):
        o, lse = torch.ops.hitrs_fast.frame_attention_fwd(q, k, v, lengths, scale, mask_kind, frame_size, cls_pos,
                                                          allow_self, cls_last_key, *features)
        ctx.save_for_backward(q, k, v, o, lse, lengths, *_feature_tensors(features))
        ctx.params = (scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)
        ctx.feature_values = _feature_values(features)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do, dlse):
        q, k, v, o, lse, lengths, *tensors = ctx.saved_tensors
        features = _features_back(tensors, ctx.feature_values)
        dq, dk, dv = torch.ops.hitrs_fast.frame_attention_bwd(do, q, k, v, o, lse, lengths, *ctx.params, *features)
        dbias = None
        if ctx.needs_input_grad[10]:
            dbias = torch.ops.hitrs_fast.frame_attention_dbias(do, q, k, v, o, lse, lengths, *ctx.params, *features)
        return dq, dk, dv, None, None, None, None, None, None, None, dbias, *([None] * (len(Features._fields) - 1))


class FrameAttentionQKVFunction(torch.autograd.Function):
    """Autograd wrapper over one ``[B, N, 3 * H * D]`` projection: returns ``o [B, N, H * D]`` and takes back
    one ``dqkv`` of the projection's shape, written by the kernel (no cat of dQ, dK, dV).

    ``apply(qkv, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key, *features) -> o``.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, qkv, lengths, heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key,
                *features):
        params = (heads, scale, mask_kind, frame_size, cls_pos, allow_self, cls_last_key)
        o, lse = torch.ops.hitrs_fast.frame_attention_qkv_fwd(qkv, lengths, *params, *features)
        ctx.save_for_backward(qkv, o, lse, lengths, *_feature_tensors(features))
        ctx.params = params
        ctx.feature_values = _feature_values(features)
        return o

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do):
        qkv, o, lse, lengths, *tensors = ctx.saved_tensors
        features = _features_back(tensors, ctx.feature_values)
        dqkv = torch.ops.hitrs_fast.frame_attention_qkv_bwd(do, qkv, o, lse, lengths, *ctx.params, *features)
        dbias = None
        if ctx.needs_input_grad[9]:
            heads, scale, *mask = ctx.params
            b, n, _ = qkv.shape
            o_bhnd = o.reshape(b, n, heads, -1).transpose(1, 2)
            do_bhnd = do.reshape(b, n, heads, -1).transpose(1, 2)
            dbias = torch.ops.hitrs_fast.frame_attention_dbias(do_bhnd, *qkv_views(qkv, heads), o_bhnd, lse, lengths,
                                                               scale, *mask, *features)
        return dqkv, None, None, None, None, None, None, None, None, dbias, *([None] * (len(Features._fields) - 1))


_TENSOR_FIELDS = (0, 1, 2, 6)  # bias, q_ids, k_ids, seed: saved with save_for_backward


def _feature_tensors(features: tuple) -> list:
    return [features[i] if i < len(features) else None for i in _TENSOR_FIELDS]


def _feature_values(features: tuple) -> tuple:
    full = Features(*features)
    return tuple(value for i, value in enumerate(full) if i not in _TENSOR_FIELDS)


def _features_back(tensors: list, values: tuple) -> Features:
    fields: list = [None] * len(Features._fields)
    for i, tensor in zip(_TENSOR_FIELDS, tensors, strict=True):
        fields[i] = tensor
    rest = iter(values)
    for i in range(len(fields)):
        if i not in _TENSOR_FIELDS:
            fields[i] = next(rest)
    return features_of(*fields)


def frame_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
                    mask_kind: int = MASK_FRAME, frame_size: int = 25, cls: str = "last", allow_self: bool = True,
                    lengths: torch.Tensor | None = None, cls_last_key: bool = True, return_lse: bool = False,
                    bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                    k_ids: torch.Tensor | None = None, order: str = "frame_major", num_frames: int = 0,
                    window: int = 0, dropout_p: float = 0.0,
                    seed: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Differentiable frame-masked attention on the Triton kernels (no dispatch, no fallback).

    Args:
        q, k, v: ``[B, H, N, D]``, any strides; float32 / float16 / bfloat16; D in {16, 32, 64, 128}.
        scale: default ``1 / sqrt(D)``.
        mask_kind: ``MASK_FRAME`` (1), ``MASK_WINDOW`` (2, radius ``window``) or ``MASK_NONE`` (0).
        frame_size, cls, allow_self: the frame rule (``cls`` in "first", "last", "none").
        lengths: optional int ``[B]`` key lengths (key padding), with ``cls_last_key`` keeping key N-1.
        return_lse: also return the natural-log LSE ``[B, H, N]`` fp32.
        bias: additive score bias broadcastable to ``[B, H, N, N]`` (differentiable: its gradient is reduced
            over the broadcast dimensions).
        q_ids, k_ids: per-token frame ids ``[N]`` or ``[B, N]`` (-1: global) instead of index arithmetic.
        order, num_frames: ``"joint_major"`` tokens (``j * num_frames + f``) instead of frame-major.
        dropout_p, seed: attention dropout drawn by the kernel from ``seed`` (int64 ``[1]``; default: drawn from
            PyTorch's generator), the same mask forward and backward (:func:`attention_dropout_mask`).

    Returns:
        ``o`` ``[B, H, N, D]`` in q's dtype, a view of a ``[B, N, H, D]`` buffer (and ``lse``).
    """
    if cls not in CLS_CODES:
        raise ValueError(f"frame_attention: cls must be one of {tuple(CLS_CODES)}, got {cls!r}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    features = prepare_features(q, bias=bias, q_ids=q_ids, k_ids=k_ids, order=order, num_frames=num_frames,
                                window=window, dropout_p=dropout_p, seed=seed)
    o, lse = FrameAttentionFunction.apply(q, k, v, lengths, scale, int(mask_kind), int(frame_size), CLS_CODES[cls],
                                          bool(allow_self), bool(cls_last_key), *features)
    return (o, lse) if return_lse else o


def frame_attention_qkv(qkv: torch.Tensor, heads: int, *, scale: float | None = None, mask_kind: int = MASK_FRAME,
                        frame_size: int = 25, cls: str = "last", allow_self: bool = True,
                        lengths: torch.Tensor | None = None, cls_last_key: bool = True,
                        bias: torch.Tensor | None = None, q_ids: torch.Tensor | None = None,
                        k_ids: torch.Tensor | None = None, order: str = "frame_major", num_frames: int = 0,
                        window: int = 0, dropout_p: float = 0.0, seed: torch.Tensor | None = None) -> torch.Tensor:
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
    features = prepare_features(qkv, bias=bias, q_ids=q_ids, k_ids=k_ids, order=order, num_frames=num_frames,
                                window=window, dropout_p=dropout_p, seed=seed)
    return FrameAttentionQKVFunction.apply(qkv, lengths, int(heads), scale, int(mask_kind), int(frame_size),
                                           CLS_CODES[cls], bool(allow_self), bool(cls_last_key), *features)
