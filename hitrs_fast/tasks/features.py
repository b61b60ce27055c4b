"""Feature standardisation shared by the heads that read frozen-encoder features."""

from __future__ import annotations

import torch


def set_feature_norm(mean: torch.Tensor, std: torch.Tensor, features: torch.Tensor, who: str) -> None:
    """Copies the mean / std of ``features [N >= 2, D]`` into the ``[D]`` buffers ``mean`` and ``std``
    (a fixed affine map in front of a linear head: linear evaluation stays linear in the features)."""
    if features.dim() != 2 or features.shape[1] != mean.shape[0] or features.shape[0] < 2:
        raise ValueError(f"{who}.set_feature_norm: expected [N >= 2, {mean.shape[0]}] features, "
                         f"got {tuple(features.shape)}")
    mean.copy_(features.mean(0))
    std.copy_(features.std(0).clamp_min(1e-6))
