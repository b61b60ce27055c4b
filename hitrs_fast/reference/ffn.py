"""Reference pre-LN feed-forward sublayer of the released TRS layer: the oracle of the fused kernel."""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.reference.layer_norm import layer_norm


def naive_ffn_block(x: torch.Tensor, ln_weight: torch.Tensor, ln_bias: torch.Tensor, w1: torch.Tensor,
                    b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, *, eps: float = 1e-5, dropout: float = 0.0,
                    training: bool = False, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``x + dropout(W2 GELU(W1 LN(x) + b1) + b2)``, op by op.

    Args:
        x: ``[..., C]``. ln_weight, ln_bias: ``[C]``. w1 ``[F, C]``, b1 ``[F]``, w2 ``[C, F]``, b2 ``[C]``.
        eps: LayerNorm epsilon. dropout, training: ``nn.functional.dropout`` on the FFN output.
        keep: a bool ``[..., C]`` keep-mask to apply instead of drawing one (``z * keep / (1 - dropout)``): the
            oracle of a kernel that draws its own mask.

    Returns:
        ``[..., C]``, every op in the inputs' dtype (float64 inputs: the oracle).
    """
    xn = layer_norm(x, ln_weight, ln_bias, eps)
    z = nn.functional.linear(nn.functional.gelu(nn.functional.linear(xn, w1, b1)), w2, b2)
    if keep is not None:
        return x + z * keep.to(z.dtype) / (1.0 - dropout)
    return x + nn.functional.dropout(z, dropout, training)
