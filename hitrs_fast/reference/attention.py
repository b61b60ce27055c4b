"""Reference attention: softmax attention computed the plain way, with a materialised mask."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from hitrs_fast.masks import AttentionMask, DenseMask, NoMask
from hitrs_fast.reference.layer_norm import layer_norm


def allowed_and_additive(mask: AttentionMask, n: int, device: torch.device) -> tuple[torch.Tensor | None,
                                                                                   torch.Tensor | None]:
    """The mask as (bool allowed, float additive) tensors broadcastable to ``[B, H, N, N]``, each None when
    absent (a :class:`NoMask` gives neither, a float :class:`DenseMask` only the additive one)."""
    if isinstance(mask, NoMask):
        return None, None
    if isinstance(mask, DenseMask) and mask.additive:
        return None, mask.materialize(n, n, device=device)
    return mask.materialize(n, n, device=device), None


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask,
                    scale: float | None = None, *, bias: torch.Tensor | None = None, dropout_p: float = 0.0,
                    keep: torch.Tensor | None = None) -> torch.Tensor:
    """Masked softmax attention computed the plain way.

    ``S = scale * Q K^T + bias (+ a float mask)``, blocked scores -inf, ``P = softmax(S)``, ``O = dropout(P) V``.
    A row with no visible key (every score -inf) gets ``O = 0`` and zero gradients, as on every backend.

    Args:
        q, k, v: ``[B, H, N, D]`` (any strides).
        mask: a mask from :mod:`hitrs_fast.masks`.
        scale: score scale, default ``1 / sqrt(D)``.
        bias: float, broadcastable to ``[B, H, N, N]``, added to the scores (differentiable).
        dropout_p: attention dropout on P (``nn.functional.dropout``, drawn here), 0 for none.
        keep: bool ``[B, H, N, N]`` keep mask to apply instead of drawing one (``P * keep / (1 - p)``): the
            oracle of a kernel that draws its own.

    Returns:
        ``[B, H, N, D]`` in q's dtype. Scores and softmax run in q's dtype (float64 inputs: the oracle).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)
    allowed, additive = allowed_and_additive(mask, q.shape[-2], q.device)
    for extra in (bias, additive):
        if extra is not None:
            scores = scores + extra.to(scores.dtype)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    # Without a mask or an additive term no score is -inf, so the plain softmax is the same.
    plain = allowed is None and additive is None and bias is None
    probs = torch.softmax(scores, dim=-1) if plain else _softmax_empty_rows_zero(scores)
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    elif dropout_p > 0.0:
        probs = nn.functional.dropout(probs, dropout_p)
    return probs @ v


def _softmax_empty_rows_zero(scores: torch.Tensor) -> torch.Tensor:
    """``softmax(scores, -1)`` with rows that are all -inf (no visible key) set to 0, value and gradient (a plain
    softmax gives NaN there). Such rows are softmaxed as zeros first, so no NaN reaches the backward."""
    empty = (scores == float("-inf")).all(dim=-1, keepdim=True)
    probs = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1)
    return probs.masked_fill(empty, 0.0)


def naive_attention_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w_q: torch.Tensor,
                          w_k: torch.Tensor, w_v: torch.Tensor, w_o: torch.Tensor, mask: AttentionMask, heads: int,
                          *, eps: float = 1e-5, dropout: float = 0.0, training: bool = False,
                          keep: torch.Tensor | None = None, scale: float | None = None,
                          attend: Callable[..., torch.Tensor] | None = None,
                          b_q: torch.Tensor | None = None, b_k: torch.Tensor | None = None,
                          b_v: torch.Tensor | None = None, b_o: torch.Tensor | None = None,
                          attn_bias: torch.Tensor | None = None, attn_dropout: float = 0.0) -> torch.Tensor:
    """The pre-LN attention sublayer of the released TRS layer, ``x + dropout(W_o attention(LN(x) W_q, W_k, W_v))``.

    Args:
        x: ``[B, N, C]``. ln_weight, ln_bias: ``[C]``. w_q, w_k, w_v: ``[H * D, C]``; w_o: ``[C, H * D]`` (bias-free
            projections, as released). mask: a mask from :mod:`hitrs_fast.masks`. heads: H.
        eps: LayerNorm epsilon. dropout, training: ``nn.functional.dropout`` after W_o.
        keep: a bool ``[B, N, C]`` keep-mask to apply instead of drawing one (``z * keep / (1 - dropout)``): the
            oracle of a kernel that draws its own mask.
        scale: score scale, default ``1 / sqrt(D)``.
        attend: ``(q, k, v, mask, scale, bias=, dropout_p=) -> o`` on ``[B, H, N, D]`` in place of
            :func:`naive_attention` (the same composition around another attention, e.g. SDPA).
        b_q, b_k, b_v: optional ``[H * D]`` projection biases; b_o: optional ``[C]`` (peer layers).
        attn_bias: optional additive score bias, broadcastable to ``[B, H, N, N]``.
        attn_dropout: dropout on the attention probabilities (in training only).

    Returns:
        ``[B, N, C]``, every op in the inputs' dtype (float64 inputs: the oracle).
    """
    attend = naive_attention if attend is None else attend
    b, n, c = x.shape
    xn = layer_norm(x, ln_weight, ln_bias, eps)
    q, k, v = (nn.functional.linear(xn, w, bias).view(b, n, heads, -1).transpose(1, 2)
               for w, bias in ((w_q, b_q), (w_k, b_k), (w_v, b_v)))
    extras = {}
    if attn_bias is not None:
        extras["bias"] = attn_bias
    if training and attn_dropout > 0.0:
        extras["dropout_p"] = attn_dropout
    attended = attend(q, k, v, mask, scale, **extras).transpose(1, 2).reshape(b, n, -1)
    z = nn.functional.linear(attended, w_o, b_o)
    if keep is not None:
        return x + z * keep.to(z.dtype) / (1.0 - dropout)
    return x + nn.functional.dropout(z, dropout, training)
