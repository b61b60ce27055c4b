"""Reference joint embedding of F-TRS: the oracle of the fused kernel.

``Linear(C -> d) -> exact (erf) GELU -> LayerNorm(d, eps) -> + PE[V, d]``, the released
code's ``s_input_map`` followed by the joint positional embedding, in plain PyTorch ops.
"""

from __future__ import annotations

import torch
from torch import nn


def naive_joint_embedding(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                          ln_bias: torch.Tensor, pos: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Joint embedding, eager PyTorch (four kernels, every intermediate in HBM).

    Args:
        x: coordinates ``[..., V, C]`` (layout ``[B, W, F, V, C]`` or any leading dims).
        weight: Linear weight ``[d, C]``; bias: ``[d]``.
        ln_weight, ln_bias: LayerNorm affine ``[d]``.
        pos: joint positional embedding ``[V, d]``, broadcast over the leading dims.
        eps: LayerNorm epsilon (1e-5 everywhere in Hi-TRS).

    Returns:
        ``[..., V, d]``. Under autocast the eager LayerNorm runs (and returns) fp32.

    Examples::

        y = naive_joint_embedding(torch.randn(2, 7, 25, 3), w, b, g, beta, pe)   # [2, 7, 25, 128]
    """
    h = nn.functional.gelu(nn.functional.linear(x, weight, bias))
    h = nn.functional.layer_norm(h, (h.shape[-1],), ln_weight, ln_bias, eps)
    return h + pos
