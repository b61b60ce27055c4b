"""Reference attention: the released code's math with a materialised mask."""

from __future__ import annotations

import math

import torch

from hitrs_fast.masks import AttentionMask, NoMask

# The released code fills blocked scores with -1e9 rather than -inf; identical here
# because every row keeps at least one allowed key.
MASK_FILL = -1e9


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                    scale: float | None = None) -> torch.Tensor:
    """Masked softmax attention computed the plain way.

    Args:
        q, k, v: ``[B, H, N, D]`` (any strides).
        mask: a mask from :mod:`hitrs_fast.masks`.
        scale: score scale, default ``1 / sqrt(D)``.

    Returns:
        ``[B, H, N, D]`` in q's dtype. Scores and softmax run in q's dtype, like the
        released code (use float64 inputs for the oracle).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)
    if not isinstance(mask, NoMask):
        allowed = mask.materialize(q.shape[-2], k.shape[-2], device=q.device)
        # -1e9 as released; clamped to the dtype's range so float16 does not overflow to -inf.
        scores = scores.masked_fill(~allowed, max(MASK_FILL, torch.finfo(scores.dtype).min))
    return torch.softmax(scores, dim=-1) @ v
