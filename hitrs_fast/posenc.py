"""Sinusoidal initial values of the learnable positional embeddings (released code)."""

from __future__ import annotations

import math

import torch


def sinusoid_1d(num_positions: int, dim: int) -> torch.Tensor:
    """``[P, d]``: channel 2i = sin(p / 10000^(2i/d)), channel 2i+1 = cos of the same."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    inv = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(num_positions, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv)[:, : dim // 2]
    return pe.float()


def sinusoid_2d(num_frames: int, num_joints: int, dim: int) -> torch.Tensor:
    """``[F, V, d]``: the first d/2 channels encode the joint, the last d/2 the frame."""
    half = dim // 2
    joint = sinusoid_1d(num_joints, half)[None, :, :].expand(num_frames, -1, -1)
    frame = sinusoid_1d(num_frames, half)[:, None, :].expand(-1, num_joints, -1)
    return torch.cat([joint, frame], dim=-1).contiguous()
