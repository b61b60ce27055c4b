"""Reference attention: the released code's math with a materialised mask."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

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


def naive_attention_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w_q: torch.Tensor,
                          w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, mask: AttentionMask, heads: int,
                          *, eps: float = 1e-5, dropout: float = 0.0, training: bool = False,
                          keep: torch.Tensor | None = None, scale: float | None = None,
                          attend: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """The pre-LN attention sublayer of the released TRS layer, ``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``.

    Args:
        x: ``[B, N, C]``. ln_weight, ln_bias: ``[C]``. w_q, w_k, w_v: ``[H * D, C]``; w_o: ``[C, H * D]`` (bias-free
            projections, as released). mask: a mask from :mod:`hitrs_fast.masks`. heads: H.
        eps: LayerNorm epsilon. dropout, training: ``nn.functional.dropout`` after W_o.
        keep: a bool ``[B, N, C]`` keep-mask to apply instead of drawing one (``z * keep / (1 - dropout)``): the
            oracle of a kernel that draws its own mask.
        scale: score scale, default ``1 / sqrt(D)``.
        attend: ``(q, k, v, mask, scale) -> o`` on ``[B, H, N, D]`` in place of :func:`naive_attention` (the same
            composition around another attention, e.g. SDPA).

    Returns:
        ``[B, N, C]``, every op in the inputs' dtype (float64 inputs: the oracle).
    """
    attend = naive_attention if attend is None else attend
    b, n, c = x.shape
    xn = nn.functional.layer_norm(x, (c,), ln_weight, ln_bias, eps)
    q, k, v = (nn.functional.linear(xn, w).view(b, n, heads, -1).transpose(1, 2) for w in (w_q, w_k, w_v))
    z = nn.functional.linear(attend(q, k, v, mask, scale).transpose(1, 2).reshape(b, n, -1), w_o)
    if keep is not None:
        return x + z * keep.to(z.dtype) / (1.0 - dropout)
    return x + nn.functional.dropout(z, dropout, training)
