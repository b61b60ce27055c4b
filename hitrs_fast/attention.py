"""``hitrs_fast.attention``: frame-masked attention, a drop-in for skeleton Transformers.

Functional form :func:`frame_masked_attention` (SDPA-like ``[B, H, N, D]``) and the
module :class:`MultiHeadAttention` / :class:`FrameMaskedAttention` with q/k/v/out
projections; the whole pre-LN attention sublayer as :func:`frame_attention_block` /
:class:`FrameAttentionBlock` (its own backends, :data:`BLOCK_PRIORITY`, same names).
Attention backends, in the order ``"auto"`` tries them (:data:`PRIORITY`):

- ``"triton"`` (:class:`TritonFrameAttention`): the Triton kernel ``hitrs_fast.kernels.frame_attention`` on
  CUDA; on CPU tensors through the interpreter when asked for by name under ``TRITON_INTERPRET=1``;
- ``"sdpa"`` (:class:`SdpaFrameAttention`): ``torch.nn.functional.scaled_dot_product_attention`` with the
  materialised boolean mask (PyTorch's fused kernels; about 3x the reference's speed on CPU);
- ``"torch"`` (:class:`ReferenceFrameAttention`): the reference (materialised mask, the released code's
  math; the oracle).

``"auto"`` runs the first that takes the inputs (:mod:`hitrs_fast.dispatch`): Triton on CUDA, SDPA
elsewhere; ``HITRS_FAST_DISABLE_KERNELS=1`` makes it run the reference, ``HITRS_FAST_STRICT=1`` makes
passing over Triton an error. The Triton kernel covers all three mask types (frame rule from indices,
key padding from a lengths vector).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from hitrs_fast.dispatch import Backend, TritonBackend, choose_backend
from hitrs_fast.kernels.capabilities import (
    ATTENTION_BLOCK_DETERMINISTIC,
    FRAME_ATTENTION_DETERMINISTIC,
    MASK_FRAME,
    MASK_NONE,
    attention_block_reasons,
    frame_attention_reasons,
)
from hitrs_fast.masks import AttentionMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention, naive_attention_block

OP_NAME = "frame_masked_attention"
MASK_TYPES = (FrameMask, NoMask, KeyPaddingMask)


@dataclass(frozen=True)
class AttentionInputs:
    """What a backend is asked to take: ``q, k, v [B, H, N, D]`` and the typed mask."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: AttentionMask


class TritonFrameAttention(TritonBackend):
    """The Triton kernel; its limits are declared in ``hitrs_fast.kernels.capabilities``."""

    NAME = "triton"
    IS_DETERMINISTIC = FRAME_ATTENTION_DETERMINISTIC

    @classmethod
    def not_supported_reasons(cls, inputs: AttentionInputs) -> list[str]:
        reasons = frame_attention_reasons(inputs.q, inputs.k, inputs.v)
        mask = inputs.mask
        if not isinstance(mask, MASK_TYPES):
            reasons.append(f"mask type {type(mask).__name__} not in (FrameMask, NoMask, KeyPaddingMask)")
        elif isinstance(mask, KeyPaddingMask) and (mask.lengths.is_floating_point() or mask.lengths.is_complex()):
            reasons.append(f"KeyPaddingMask.lengths dtype {mask.lengths.dtype} is not an integer type")
        return reasons

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float) -> torch.Tensor:
        # Imported here: triton is loaded only when the Triton backend is first used.
        from hitrs_fast.kernels.frame_attention import frame_attention

        return frame_attention(q, k, v, scale=scale, **kernel_mask_args(mask, q.device))


def kernel_mask_args(mask: AttentionMask, device: torch.device) -> dict:
    """The Triton attention kernels' mask arguments for a typed mask (FrameMask, KeyPaddingMask or NoMask)."""
    if isinstance(mask, FrameMask):
        return {"mask_kind": MASK_FRAME, "frame_size": mask.frame_size, "cls": mask.cls, "allow_self": mask.allow_self}
    if isinstance(mask, KeyPaddingMask):
        return {"mask_kind": MASK_NONE, "cls": "none", "lengths": mask.lengths.to(device=device, dtype=torch.int64),
                "cls_last_key": mask.cls_last}
    return {"mask_kind": MASK_NONE, "cls": "none"}


class SdpaFrameAttention(Backend):
    """PyTorch SDPA with the materialised boolean mask (True = attend); any device, any float dtype."""

    NAME = "sdpa"
    IS_KERNEL = True

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float) -> torch.Tensor:
        allowed = None if isinstance(mask, NoMask) else mask.materialize(q.shape[-2], k.shape[-2], device=q.device)
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale)


class ReferenceFrameAttention(Backend):
    """The reference: the released code's math with a materialised mask (the oracle)."""

    NAME = "torch"

    @staticmethod
    def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float) -> torch.Tensor:
        return naive_attention(q, k, v, mask, scale)


PRIORITY: tuple[type[Backend], ...] = (TritonFrameAttention, SdpaFrameAttention, ReferenceFrameAttention)
ATTENTION_BACKENDS = ("auto", *(b.NAME for b in PRIORITY))


def _check_args(q: torch.Size, k: torch.Size, v: torch.Size, mask: AttentionMask) -> None:
    """Checks the shapes of q, k, v (``[B, H, N, D]``, one shape) against the mask."""
    if len(q) != 4 or k != q or v != q:
        raise ValueError(f"{OP_NAME}: q, k, v must be [B, H, N, D] of one shape, got "
                         f"{tuple(q)}, {tuple(k)}, {tuple(v)}")
    if not isinstance(mask, MASK_TYPES):
        raise ValueError(f"{OP_NAME}: mask must be a FrameMask, NoMask or KeyPaddingMask, got {type(mask).__name__}")
    if isinstance(mask, FrameMask) and q[2] != mask.num_tokens:
        raise ValueError(f"{OP_NAME}: {mask.describe()} covers {mask.num_tokens} tokens, q has N = {q[2]}")
    if isinstance(mask, KeyPaddingMask) and tuple(mask.lengths.shape) != (q[0],):
        raise ValueError(f"{OP_NAME}: KeyPaddingMask.lengths must be [B] = [{q[0]}], "
                         f"got {tuple(mask.lengths.shape)}")


def frame_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                           *, scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Masked attention with a typed mask.

    Args:
        q, k, v: ``[B, H, N, D]`` (SDPA layout; any strides, e.g. the BNHD view
            ``proj(x).view(B, N, H, D).transpose(1, 2)``, read in place by the kernel).
            For a :class:`FrameMask`, N = frame_size * num_frames (+1 with CLS).
        mask: :class:`~hitrs_fast.masks.FrameMask`, ``NoMask`` or ``KeyPaddingMask``
            (lengths ``[B]``). A key-padding row with no visible key (length 0, no CLS)
            gives zeros on the Triton backend and the mean of V on the reference.
        scale: default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"triton"``, ``"sdpa"`` or ``"torch"`` (module docstring).

    Returns:
        ``[B, H, N, D]`` in q's dtype. The Triton backend returns a view of a
        ``[B, N, H, D]`` buffer, so ``out.transpose(1, 2).reshape(B, N, H * D)`` copies nothing.
        Triton: float32 / float16 / bfloat16, D in {16, 32, 64, 128}, 1 <= N <= 4096.

    Examples::

        mask = FrameMask(frame_size=25, num_frames=7)            # N = 176, CLS last
        q = k = v = torch.randn(2, 8, 176, 64, device="cuda", dtype=torch.bfloat16)
        out = frame_masked_attention(q, k, v, mask)              # [2, 8, 176, 64]
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{OP_NAME}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    _check_args(q.shape, k.shape, v.shape, mask)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    chosen = choose_backend(OP_NAME, PRIORITY, backend, AttentionInputs(q, k, v, mask), q.device)
    return chosen.run(q, k, v, mask, scale)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v/out projections (the released layer).

    Args:
        dim: model width d.
        num_heads, head_dim: inner width ``num_heads * head_dim`` (512 in Hi-TRS).
        backend: see :func:`frame_masked_attention`. The ``state_dict`` keys
            (``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``) do not depend on it.

    ``forward(x [B, N, d], mask) -> [B, N, d]``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, backend: str = "auto") -> None:
        super().__init__()
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"{type(self).__name__}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        inner = num_heads * head_dim
        self.num_heads, self.head_dim, self.backend = num_heads, head_dim, backend
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: AttentionMask = NoMask()) -> torch.Tensor:
        b, n, _ = x.shape
        # [B, N, H, D] viewed as [B, H, N, D]: the projection's own strides, no copy.
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        out = frame_masked_attention(q, k, v, mask, backend=self.backend)
        # The Triton output is a [B, N, H, D] buffer, so this reshape is a view there.
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class FrameMaskedAttention(MultiHeadAttention):
    """:class:`MultiHeadAttention` with a fixed mask (default: the C-TRS clip mask).

    Same ``state_dict`` keys as :class:`MultiHeadAttention`, so weights move between
    backends and between the two classes unchanged.

    Examples::

        attn = FrameMaskedAttention(256, 8, 64, FrameMask(frame_size=25, num_frames=7))
        y = attn(torch.randn(4, 176, 256))   # [4, 176, 256]
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, mask: AttentionMask = FrameMask(),
                 backend: str = "auto") -> None:
        super().__init__(dim, num_heads, head_dim, backend)
        self.mask = mask

    def forward(self, x: torch.Tensor, mask: AttentionMask | None = None) -> torch.Tensor:
        return super().forward(x, self.mask if mask is None else mask)


BLOCK_OP_NAME = "frame_attention_block"


@dataclass(frozen=True)
class BlockInputs:
    """What a block backend is asked to take: x ``[B, N, C]``, the sublayer's weights, the mask and H."""

    x: torch.Tensor
    ln_weight: torch.Tensor
    ln_bias: torch.Tensor
    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    w_o: torch.Tensor
    mask: AttentionMask
    heads: int

    @property
    def compute_dtype(self) -> torch.dtype:
        """The projections' dtype: the autocast dtype when autocast is on for x's device, else the weights'."""
        device = self.x.device.type
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.w_q.dtype

    @property
    def head_dim(self) -> int:
        return self.w_q.shape[0] // self.heads

    def attention_meta(self) -> AttentionInputs:
        """The attention the composed path would run, as ``[B, H, N, D]`` meta tensors (shapes and dtype only)."""
        b, n, _ = self.x.shape
        q = torch.empty((b, self.heads, n, self.head_dim), dtype=self.compute_dtype, device="meta")
        return AttentionInputs(q, q, q, self.mask)


class TritonAttentionBlock(TritonBackend):
    """The Triton block, on the design the performance model picks per shape (docs/kernels/attention_blocks.md).

    - fused (``hitrs_fast.kernels.attention_block``): LN, Q/K/V, attention, W_o, dropout and the residual in
      one kernel each way, for sequences that fit a program tile whole (F-TRS: 5 frames per 128 rows) with a
      frame mask or none. Forward HBM traffic: x in, out out. Backward: reads x and dy, writes dx and, for
      the cuBLAS weight gradients (reductions over every row), dQKV, A, LN(x) and dZ.
    - composed (longer sequences, key padding): LayerNorm, one cuBLAS GEMM with the concatenated
      ``[3I, C]`` weight, the attention kernel on that projection in place (its backward writes one
      ``[B, N, 3I]`` gradient), cuBLAS W_o, dropout and the residual in PyTorch.
    """

    NAME = "triton"
    IS_DETERMINISTIC = ATTENTION_BLOCK_DETERMINISTIC and FRAME_ATTENTION_DETERMINISTIC

    @staticmethod
    def fused_reasons(inputs: BlockInputs) -> list[str]:
        """Why the fused kernel does not take the inputs ([] when it does)."""
        b, n, c = inputs.x.shape
        reasons = attention_block_reasons(b, n, c, inputs.heads, inputs.head_dim, inputs.x.dtype,
                                          inputs.compute_dtype)
        if isinstance(inputs.mask, KeyPaddingMask):
            reasons.append("key padding is not fused")
        return reasons

    @classmethod
    def not_supported_reasons(cls, inputs: BlockInputs) -> list[str]:
        if not cls.fused_reasons(inputs):
            return []
        return TritonFrameAttention.not_supported_reasons(inputs.attention_meta())

    @classmethod
    def run(cls, inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        from hitrs_fast.kernels.frame_attention import frame_attention_qkv

        x, cdt = inputs.x, inputs.compute_dtype
        if not cls.fused_reasons(inputs):
            from hitrs_fast.kernels.attention_block import AttentionBlockFunction

            active = training and dropout > 0.0
            # The dropout seed comes from PyTorch's generator (repeatable under torch.manual_seed), on the device.
            seed = torch.randint(0, 2**31 - 1, (1,), device=x.device, dtype=torch.int64) if active else None
            mask = kernel_mask_args(inputs.mask, x.device)
            wqkv = torch.cat([inputs.w_q, inputs.w_k, inputs.w_v]).to(cdt)
            return AttentionBlockFunction.apply(
                x, inputs.ln_weight, inputs.ln_bias, wqkv, inputs.w_o.to(cdt), seed, inputs.heads, float(eps),
                scale, mask["mask_kind"], mask.get("frame_size", 1), _cls_code(mask["cls"]),
                mask.get("allow_self", True), float(dropout) if active else 0.0)
        xn = nn.functional.layer_norm(x, (x.shape[-1],), inputs.ln_weight, inputs.ln_bias, eps)
        qkv = nn.functional.linear(xn, torch.cat([inputs.w_q, inputs.w_k, inputs.w_v]))
        attended = frame_attention_qkv(qkv, inputs.heads, scale=scale, **kernel_mask_args(inputs.mask, x.device))
        return x + nn.functional.dropout(nn.functional.linear(attended, inputs.w_o), dropout, training)


def _cls_code(cls: str) -> int:
    from hitrs_fast.kernels.frame_attention import CLS_CODES

    return CLS_CODES[cls]


class SdpaAttentionBlock(Backend):
    """The released layer's composition around PyTorch SDPA (:class:`SdpaFrameAttention`)."""

    NAME = "sdpa"
    IS_KERNEL = True

    @staticmethod
    def run(inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        return naive_attention_block(*_block_tensors(inputs), inputs.mask, inputs.heads, eps=eps, dropout=dropout,
                                     training=training, scale=scale, attend=SdpaFrameAttention.run)


class ReferenceAttentionBlock(Backend):
    """The reference: the released layer's math, op by op (the oracle)."""

    NAME = "torch"

    @staticmethod
    def run(inputs: BlockInputs, eps: float, dropout: float, training: bool, scale: float) -> torch.Tensor:
        return naive_attention_block(*_block_tensors(inputs), inputs.mask, inputs.heads, eps=eps, dropout=dropout,
                                     training=training, scale=scale)


def _block_tensors(inputs: BlockInputs) -> tuple[torch.Tensor, ...]:
    return inputs.x, inputs.ln_weight, inputs.ln_bias, inputs.w_q, inputs.w_k, inputs.w_v, inputs.w_o


BLOCK_PRIORITY: tuple[type[Backend], ...] = (TritonAttentionBlock, SdpaAttentionBlock, ReferenceAttentionBlock)


def frame_attention_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w_q: torch.Tensor,
                          w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, mask: AttentionMask = NoMask(),
                          *, heads: int, eps: float = 1e-5, dropout: float = 0.0, training: bool = False,
                          scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """The pre-LN attention sublayer of the released TRS layer: ``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``.

    Args:
        x: ``[B, N, C]`` token features (layout in the README). For a :class:`~hitrs_fast.masks.FrameMask`,
            N = frame_size * num_frames (+1 with CLS).
        ln_weight, ln_bias: LayerNorm affine ``[C]``; eps its epsilon.
        w_q, w_k, w_v: ``[H * D, C]``; w_o: ``[C, H * D]`` (bias-free, as released).
        mask: ``FrameMask``, ``NoMask`` or ``KeyPaddingMask`` (lengths ``[B]``).
        heads: H.
        dropout, training: dropout after W_o (active when ``training`` and ``dropout > 0``). The torch and
            sdpa backends draw ``nn.Dropout``'s mask; the fused Triton kernel draws its own (same rate, from
            a seed taken from PyTorch's generator).
        scale: softmax scale, default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"triton"``, ``"sdpa"`` or ``"torch"`` (:class:`TritonAttentionBlock` for what
            Triton runs per shape).

    Returns:
        ``[B, N, C]`` in x's dtype (projections in the autocast dtype under autocast).

    Examples::

        x = torch.randn(4, 25, 128)                                  # 4 frames of 25 joints (F-TRS)
        w = [torch.randn(512, 128) * 0.05 for _ in range(3)]
        y = frame_attention_block(x, torch.ones(128), torch.zeros(128), *w, torch.randn(128, 512) * 0.05,
                                  heads=8)                             # [4, 25, 128]
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"{BLOCK_OP_NAME}: backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
    if x.dim() != 3:
        raise ValueError(f"{BLOCK_OP_NAME}: x must be [B, N, C], got {tuple(x.shape)}")
    b, n, c = x.shape
    if w_q.dim() != 2 or w_q.shape[1] != c or w_q.shape[0] % heads or w_k.shape != w_q.shape \
            or w_v.shape != w_q.shape or w_o.shape != (c, w_q.shape[0]):
        raise ValueError(f"{BLOCK_OP_NAME}: expected w_q, w_k, w_v [H*D, C={c}] with H = {heads} and w_o [C, H*D], "
                         f"got {tuple(w_q.shape)}, {tuple(w_k.shape)}, {tuple(w_v.shape)}, {tuple(w_o.shape)}")
    if ln_weight.shape != (c,) or ln_bias.shape != (c,):
        raise ValueError(f"{BLOCK_OP_NAME}: ln_weight and ln_bias must be [C={c}], got {tuple(ln_weight.shape)}, "
                         f"{tuple(ln_bias.shape)}")
    head_dim = w_q.shape[0] // heads
    q_shape = torch.Size((b, heads, n, head_dim))
    _check_args(q_shape, q_shape, q_shape, mask)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    inputs = BlockInputs(x, ln_weight, ln_bias, w_q, w_k, w_v, w_o, mask, int(heads))
    chosen = choose_backend(BLOCK_OP_NAME, BLOCK_PRIORITY, backend, inputs, x.device)
    return chosen.run(inputs, eps, float(dropout), bool(training), scale)


class FrameAttentionBlock(nn.Module):
    """The pre-LN attention sublayer of the released TRS layer, ``x + dropout(W_o attention(LN(x) W_q, ·W_k, ·W_v))``.

    Args:
        dim: model width C. num_heads, head_dim: H and D (inner width ``H * D``).
        dropout: dropout after W_o (p; active in training mode).
        backend: see :func:`frame_attention_block`.

    ``state_dict`` keys: ``attn_norm.{weight,bias}``, ``attn.{q,k,v,out}_proj.weight`` (the reference layer's
    attention half; every backend). ``forward(x [B, N, C], mask=NoMask()) -> [B, N, C]``.

    Examples::

        block = FrameAttentionBlock(256, 8, 64, dropout=0.2)
        y = block(torch.randn(4, 176, 256), FrameMask(frame_size=25, num_frames=7))   # [4, 176, 256]
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, head_dim, backend=backend)
        self.dropout = nn.Dropout(dropout)
        self.backend = backend

    def attention_block(self, x: torch.Tensor, mask: AttentionMask = NoMask()) -> torch.Tensor:
        attn = self.attn
        return frame_attention_block(x, self.attn_norm.weight, self.attn_norm.bias, attn.q_proj.weight,
                                     attn.k_proj.weight, attn.v_proj.weight, attn.out_proj.weight, mask,
                                     heads=attn.num_heads, eps=self.attn_norm.eps, dropout=self.dropout.p,
                                     training=self.training, backend=self.backend)

    def forward(self, x: torch.Tensor, mask: AttentionMask = NoMask()) -> torch.Tensor:
        return self.attention_block(x, mask)
