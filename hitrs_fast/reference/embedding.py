"""Reference joint embedding of F-TRS: the oracle of the fused kernel.

``Linear(C -> d) -> exact (erf) GELU -> LayerNorm(d, eps) -> + PE[V, d]``, the released
code's ``s_input_map`` followed by the joint positional embedding, in plain PyTorch ops.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from hitrs_fast.reference.layer_norm import layer_norm


def naive_joint_embedding(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                          ln_bias: torch.Tensor, pos: torch.Tensor, eps: float = 1e-5,
                          out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Joint embedding, eager PyTorch (four kernels, every intermediate in HBM).

    Computes in float32 (float64 when any input is float64) with autocast off, whatever the
    input dtypes: bf16 parameters are upcast, and the Linear sees the raw coordinates, never
    coordinates rounded to bf16 (a bf16 model, e.g. DeepSpeed's bf16 mode, feeds fp32
    coordinates to bf16 parameters).

    Args:
        x: coordinates ``[..., V, C]`` (layout ``[B, W, F, V, C]`` or any leading dims).
        weight: Linear weight ``[d, C]``; bias: ``[d]``.
        ln_weight, ln_bias: LayerNorm affine ``[d]``.
        pos: joint positional embedding ``[V, d]``, broadcast over the leading dims.
        eps: LayerNorm epsilon (1e-5 everywhere in Hi-TRS).
        out_dtype: dtype of the result; default the parameters' (``weight.dtype``).

    Returns:
        ``[..., V, d]`` in ``out_dtype``; gradients flow back in each input's own dtype.

    Examples::

        y = naive_joint_embedding(torch.randn(2, 7, 25, 3), w, b, g, beta, pe)   # [2, 7, 25, 128]
    """
    tensors = (x, weight, bias, ln_weight, ln_bias, pos)
    compute = functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    x, weight, bias, ln_weight, ln_bias, pos = (t.to(compute) for t in tensors)
    with torch.autocast(x.device.type, enabled=False):
        h = nn.functional.gelu(nn.functional.linear(x, weight, bias))
        h = layer_norm(h, ln_weight, ln_bias, eps)
        return (h + pos).to(tensors[1].dtype if out_dtype is None else out_dtype)
