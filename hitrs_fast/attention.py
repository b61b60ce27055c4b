"""``hitrs_fast.attention``: frame-masked attention, a drop-in for skeleton Transformers.

Functional form :func:`frame_masked_attention` (SDPA-like ``[B, H, N, D]``) and the
module :class:`MultiHeadAttention` / :class:`FrameMaskedAttention` with q/k/v/out
projections. The ``backend`` argument selects the implementation:

- ``"torch"``: the reference (materialised mask, the released code's math);
- ``"triton"``: the Triton kernel (CUDA, or the CPU interpreter under TRITON_INTERPRET=1);
- ``"auto"``: Triton where it can run, else the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.masks import AttentionMask, FrameMask, NoMask
from hitrs_fast.reference.attention import naive_attention

BACKENDS = ("auto", "torch", "triton")


def frame_masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                           *, scale: float | None = None, backend: str = "auto") -> torch.Tensor:
    """Masked attention with a typed mask.

    Args:
        q, k, v: ``[B, H, N, D]``.
        mask: :class:`~hitrs_fast.masks.FrameMask`, ``NoMask`` or ``KeyPaddingMask``.
        scale: default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[B, H, N, D]`` in q's dtype.
    """
    if backend not in BACKENDS:
        raise ValueError(f"frame_masked_attention: backend must be one of {BACKENDS}, got {backend!r}")
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"frame_masked_attention: q, k, v must be [B, H, N, D] of one shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if isinstance(mask, FrameMask) and q.shape[2] != mask.num_tokens:
        raise ValueError(f"frame_masked_attention: {mask.describe()} covers {mask.num_tokens} tokens, "
                         f"q has N = {q.shape[2]}")
    if backend == "triton":
        raise NotImplementedError("frame_masked_attention: the Triton backend is not available yet")
    return naive_attention(q, k, v, mask, scale)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with bias-free q/k/v/out projections (the released layer).

    Args:
        dim: model width d.
        num_heads, head_dim: inner width ``num_heads * head_dim`` (512 in Hi-TRS).
        backend: see :func:`frame_masked_attention`.

    ``forward(x [B, N, d], mask) -> [B, N, d]``.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, backend: str = "auto") -> None:
        super().__init__()
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
