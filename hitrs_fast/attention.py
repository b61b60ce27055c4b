"""``hitrs_fast.attention``: frame-masked attention, a drop-in for skeleton Transformers.

Functional form :func:`frame_masked_attention` (SDPA-like ``[B, H, N, D]``) and the
module :class:`MultiHeadAttention` / :class:`FrameMaskedAttention` with q/k/v/out
projections. Backends, in the order ``"auto"`` tries them (:data:`PRIORITY`):

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
from hitrs_fast.kernels.capabilities import FRAME_ATTENTION_DETERMINISTIC, frame_attention_reasons
from hitrs_fast.masks import AttentionMask, FrameMask, KeyPaddingMask, NoMask
from hitrs_fast.reference.attention import naive_attention

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
        from hitrs_fast.kernels.frame_attention import MASK_FRAME, MASK_NONE, frame_attention

        if isinstance(mask, FrameMask):
            return frame_attention(q, k, v, scale=scale, mask_kind=MASK_FRAME, frame_size=mask.frame_size,
                                   cls=mask.cls, allow_self=mask.allow_self)
        if isinstance(mask, KeyPaddingMask):
            return frame_attention(q, k, v, scale=scale, mask_kind=MASK_NONE,
                                   lengths=mask.lengths.to(device=q.device, dtype=torch.int64),
                                   cls_last_key=mask.cls_last)
        return frame_attention(q, k, v, scale=scale, mask_kind=MASK_NONE)


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


def _check_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"{OP_NAME}: q, k, v must be [B, H, N, D] of one shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not isinstance(mask, MASK_TYPES):
        raise ValueError(f"{OP_NAME}: mask must be a FrameMask, NoMask or KeyPaddingMask, got {type(mask).__name__}")
    if isinstance(mask, FrameMask) and q.shape[2] != mask.num_tokens:
        raise ValueError(f"{OP_NAME}: {mask.describe()} covers {mask.num_tokens} tokens, q has N = {q.shape[2]}")
    if isinstance(mask, KeyPaddingMask) and tuple(mask.lengths.shape) != (q.shape[0],):
        raise ValueError(f"{OP_NAME}: KeyPaddingMask.lengths must be [B] = [{q.shape[0]}], "
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
    _check_args(q, k, v, mask)
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
