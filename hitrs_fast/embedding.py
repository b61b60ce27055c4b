"""Joint embedding of F-TRS: Linear(C -> d) -> GELU -> LayerNorm(d) -> + joint PE.

``JointEmbedding`` is the module; its ``state_dict`` is the same under every backend.
"""

from __future__ import annotations

import torch
from torch import nn

from hitrs_fast.posenc import sinusoid_1d


def joint_embedding(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, ln_weight: torch.Tensor,
                    ln_bias: torch.Tensor, pos: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Functional joint embedding (reference math).

    Args:
        x: coordinates ``[..., V, C]``.
        weight ``[d, C]``, bias ``[d]``: the Linear.
        ln_weight, ln_bias ``[d]``: the LayerNorm.
        pos: joint positional embedding ``[V, d]``.

    Returns:
        ``[..., V, d]``.
    """
    h = nn.functional.gelu(nn.functional.linear(x, weight, bias))
    h = nn.functional.layer_norm(h, (h.shape[-1],), ln_weight, ln_bias, eps)
    return h + pos


class JointEmbedding(nn.Module):
    """F-TRS input stage. ``forward(x [..., V, C]) -> [..., V, d]``."""

    def __init__(self, num_joints: int = 25, in_channels: int = 3, dim: int = 128, backend: str = "auto") -> None:
        super().__init__()
        self.backend = backend
        self.linear = nn.Linear(in_channels, dim)
        self.norm = nn.LayerNorm(dim)
        self.pos = nn.Parameter(sinusoid_1d(num_joints, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return joint_embedding(x, self.linear.weight, self.linear.bias, self.norm.weight, self.norm.bias,
                               self.pos, self.norm.eps)
